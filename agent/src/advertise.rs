//! Advertising the agent over DNS-SD with mdns-sd.
//!
//! One instance of `_guix-offload._udp` named after the machine, with one
//! subtype per system: mdns-sd registers the first system's (it takes one
//! per instance), [`crate::subtypes`] answers for the others. The TXT
//! follows the schema of `offload_core::dnssd`. Live values
//! (load, free slots, disk) are re-advertised when they change, at most
//! once per [`Advertiser::min_update_interval`], and the record is
//! re-announced every [`REFRESH`] (so a master that lost track of the agent
//! finds it again). Call [`Advertiser::shutdown`] to stop: it advertises
//! `stopping=1` and then sends goodbye packets, so masters forget the agent
//! at once and know it stopped cleanly (a removal without it is a crash).
//!
//! mdns-sd joins multicast groups on every interface that is up before it
//! applies restrictions: pass `interfaces` on any machine with interfaces
//! you do not want to speak mDNS on (tests run only inside network
//! namespaces).

use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceInfo};
use offload_core::dnssd::{self, Txt};

/// Load changes smaller than this wait for the periodic refresh.
pub const LOAD_STEP: f64 = 0.1;
/// Free disk is compared in steps of this many bytes.
pub const DISK_STEP: u64 = 256 << 20;
/// The record is re-announced this often even when nothing changed, and
/// small drifts in load and disk wait for it.
pub const REFRESH: Duration = Duration::from_secs(20);

/// How long after a registration or change its announcements are done.
const ANNOUNCE_SETTLE: Duration = Duration::from_millis(2500);

/// Why advertising failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// mdns-sd refused.
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// A bad name.
    #[error("invalid agent name {0:?}: use letters, digits and `-` (at most 63)")]
    Name(String),
    /// An advertisement masters would reject.
    #[error("cannot advertise this configuration: {0}")]
    Txt(offload_core::dnssd::TxtError),
    /// The subtype responder could not start.
    #[error("cannot answer for the subtypes of the other systems: {0}")]
    Subtypes(std::io::Error),
    /// An interface that does not exist.
    #[error("no network interface named {0:?}")]
    Interface(String),
}

/// A running advertisement.
pub struct Advertiser {
    daemon: ServiceDaemon,
    name: String,
    port: u16,
    txt: Txt,
    fullname: String,
    last_update: Instant,
    min_update_interval: Duration,
    started: Instant,
    subtypes: Option<crate::subtypes::Responder>,
}

/// Whether `name` is a usable DNS label for the instance and host.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
}

impl Advertiser {
    /// Start advertising `txt` for agent `name` on `port`, on the given
    /// interfaces (all when empty), IPv4 only.
    pub fn start(name: &str, port: u16, txt: Txt, interfaces: &[String]) -> Result<Self, Error> {
        if !valid_name(name) {
            return Err(Error::Name(name.to_owned()));
        }
        // What masters would reject is refused here, with the reason.
        let encoded = txt.encode();
        Txt::decode(encoded.iter().map(|(k, v)| (*k, v.as_str()))).map_err(Error::Txt)?;
        if let Some(missing) = interfaces
            .iter()
            .find(|i| !std::path::Path::new("/sys/class/net").join(i).exists())
        {
            return Err(Error::Interface(missing.clone()));
        }
        let daemon = offload_net::mdns_daemon(interfaces)?;
        // Name conflicts are resolved by mdns-sd as RFC 6762 §9 requires
        // (`name (2)`); say so, since masters will list the new name.
        let monitor = daemon.monitor()?;
        std::thread::spawn(move || {
            while let Ok(event) = monitor.recv() {
                if let mdns_sd::DaemonEvent::NameChange(change) = event {
                    tracing::warn!(original = %change.original, new = %change.new_name, "name conflict on the network: advertising under a new name");
                }
            }
        });
        let mut me = Self {
            daemon,
            name: name.to_owned(),
            port,
            txt,
            fullname: String::new(),
            last_update: Instant::now(),
            min_update_interval: Duration::from_secs(1),
            started: Instant::now(),
            subtypes: None,
        };
        me.register(true)?;
        // The other systems' subtypes, which mdns-sd cannot register.
        me.subtypes = crate::subtypes::Responder::start(&me.fullname, &me.txt.systems, interfaces)
            .map_err(Error::Subtypes)?;
        Ok(me)
    }

    /// The instance's full DNS-SD name.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// The TXT currently advertised.
    pub fn txt(&self) -> &Txt {
        &self.txt
    }

    /// The shortest time between two TXT updates.
    pub fn min_update_interval(&self) -> Duration {
        self.min_update_interval
    }

    fn register(&mut self, probe: bool) -> Result<(), Error> {
        let ty = self
            .txt
            .systems
            .first()
            .map_or_else(|| dnssd::SERVICE_TYPE.to_owned(), |s| dnssd::subtype(s));
        let props: Vec<(&str, String)> = self.txt.encode();
        let host = format!("{}.local.", self.name);
        let mut info =
            ServiceInfo::new(&ty, &self.name, &host, "", self.port, &props[..])?.enable_addr_auto();
        // Probing (RFC 6762 §8) costs ~1 s; the first registration probes so
        // name conflicts are resolved, TXT updates of our own name need not.
        info.set_requires_probe(probe);
        self.fullname = info.get_fullname().to_owned();
        self.daemon.register(info)?;
        self.last_update = Instant::now();
        Ok(())
    }

    /// Advertise new live values when they changed enough and the rate
    /// limit allows; returns whether an update was sent. A change counts
    /// when slots, draining or anything static changed, the load moved by
    /// at least [`LOAD_STEP`], or free disk crossed a [`DISK_STEP`]
    /// boundary; smaller drifts are sent at most every [`REFRESH`].
    pub fn update(&mut self, txt: Txt) -> Result<bool, Error> {
        if self.last_update.elapsed() < self.min_update_interval {
            return Ok(false);
        }
        let old = &self.txt;
        let significant = Txt {
            load: old.load,
            disk: old.disk,
            ..txt.clone()
        } != *old
            || (txt.load - old.load).abs() >= LOAD_STEP
            || txt.disk / DISK_STEP != old.disk / DISK_STEP;
        let refresh_due = self.last_update.elapsed() >= REFRESH;
        if !(significant || refresh_due) {
            return Ok(false);
        }
        self.txt = txt;
        self.register(false)?;
        Ok(true)
    }

    /// Say goodbye and stop the daemon. The agent first advertises
    /// `draining=1`, so masters can tell this clean stop from a crash (a
    /// removal without it), then sends goodbye packets.
    pub fn shutdown(mut self) -> Result<(), Error> {
        // A registration is announced several times over its first seconds,
        // and a record is multicast at most once a second with each change
        // announced twice a second apart (RFC 6762 §6, §8.4): wait until the
        // last change is out, or the `stopping` update would trail the goodbye.
        std::thread::sleep(ANNOUNCE_SETTLE.saturating_sub(self.started.elapsed()));
        std::thread::sleep(ANNOUNCE_SETTLE.saturating_sub(self.last_update.elapsed()));
        self.txt.draining = true;
        self.txt.stopping = true;
        // Best effort: the goodbye below is sent whatever happens here.
        if let Err(e) = self.register(false) {
            tracing::warn!("could not announce the stop: {e}");
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some(responder) = self.subtypes.take() {
            responder.stop();
        }
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(Duration::from_secs(2));
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(Duration::from_secs(2));
        }
        Ok(())
    }
}
