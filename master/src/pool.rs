//! The machine pool: static machines (machines.scm) and discovered agents,
//! merged into one list with live state. Pure: time comes in as `now_ms`
//! (milliseconds on any monotonic clock), nothing here does IO.
//!
//! **Identity.** Two entries are the same machine when both know a signing
//! key fingerprint and it is equal; otherwise when their host names match
//! (case-insensitive, trailing `.` and `.local` ignored, an unqualified name
//! matching the first label of a qualified one, or an address literal
//! matching a discovered address) and their SSH ports are equal.
//!
//! **Merging.** A discovered agent that matches a static entry becomes one
//! machine with `source` [`Source::Both`]: the static fields (user, keys,
//! systems, features, speed, parallel builds, threshold) stay as the
//! operator wrote them, the live fields (load, free slots, disk, draining)
//! come from the agent. An advertisement is untrusted: it merges into a
//! static entry only once its key is in the ACL **and** proven over an
//! authenticated link ([`Pool::set_link`]); until then it is a machine of
//! its own.
//!
//! **Live state** comes from the authenticated link (module `links`): the
//! protocol's status, not the TXT record, which only says where to
//! connect and which key to expect.
//!
//! **Hysteresis.** An agent that vanishes from mDNS keeps its entry for a
//! grace period, marked [`Health::Vanished`]; it is a candidate during that
//! time (the hook postpones rather than declines) and is removed after it.
//! An agent that reappears within the grace period is the same entry, with
//! its history.

use std::net::IpAddr;

use crate::machines::record::BuildMachine;

/// Default grace period for a vanished agent.
pub const DEFAULT_GRACE_MS: u64 = 30_000;

/// Where a machine comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Only machines.scm.
    Static,
    /// Only DNS-SD.
    Discovered,
    /// Both, merged.
    Both,
}

impl Source {
    /// `static`, `discovered` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Discovered => "discovered",
            Self::Both => "both",
        }
    }
}

/// What is known about a machine's health.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Health {
    /// Nothing measured yet (static machines before a probe).
    Unknown,
    /// Answering.
    Healthy,
    /// Not answering since `since_ms`.
    Unhealthy {
        /// When it stopped answering.
        since_ms: u64,
    },
    /// Gone from mDNS since `since_ms`; removed after the grace period.
    Vanished {
        /// When it vanished.
        since_ms: u64,
    },
}

/// What an agent advertises (its DNS-SD TXT record, resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct Advert {
    /// The DNS-SD instance name.
    pub instance: String,
    /// The host name it advertises.
    pub host: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// The QUIC port.
    pub port: u16,
    /// Systems it builds for.
    pub systems: Vec<String>,
    /// Features it supports.
    pub features: Vec<String>,
    /// Its measured or configured speed.
    pub speed: f64,
    /// Build slots.
    pub slots: u32,
    /// Free slots now.
    pub free: u32,
    /// Normalized load (0 = idle, 1 = every core busy).
    pub load: f64,
    /// Free bytes in its store.
    pub disk: u64,
    /// Fingerprint of its signing key (as advertised; proven over QUIC later).
    pub key: Option<String>,
    /// SSH fallback port, if advertised.
    pub ssh_port: Option<u16>,
    /// Finishing work before shutting down.
    pub draining: bool,
    /// Shutting down now (a goodbye follows).
    pub stopping: bool,
}

/// Live state of a machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    /// Normalized load, when known.
    pub load: Option<f64>,
    /// Free build slots, when known.
    pub free_slots: Option<u32>,
    /// Free store bytes, when known.
    pub disk: Option<u64>,
    /// Health.
    pub health: Health,
    /// Draining.
    pub draining: bool,
    /// Stopping: the goodbye that follows is a clean stop.
    pub stopping: bool,
    /// When the machine was last heard of.
    pub last_seen_ms: Option<u64>,
    /// The authenticated link to its agent.
    pub link: Link,
    /// Since when its agent has been unreachable, if it is.
    pub unreachable_since_ms: Option<u64>,
    /// How its link reaches the agent (`QUIC`, `SSH`), while linked.
    pub transport: Option<&'static str>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            load: None,
            free_slots: None,
            disk: None,
            health: Health::Unknown,
            draining: false,
            stopping: false,
            last_seen_ms: None,
            link: Link::Unknown,
            unreachable_since_ms: None,
            transport: None,
        }
    }
}

/// What the master learned from past builds on a machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct History {
    /// Observed ÷ predicted build time (exponential moving average); 1.0 until measured.
    pub slowness: f64,
    /// Measured transfer throughput, bytes per second, if any.
    pub throughput: Option<f64>,
    /// Builds observed.
    pub builds: u32,
    /// A build there was lost: not used before this time.
    pub avoid_until_ms: Option<u64>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            slowness: 1.0,
            throughput: None,
            builds: 0,
            avoid_until_ms: None,
        }
    }
}

/// One machine of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Name (static name, or the advertised host).
    pub name: String,
    /// SSH port of a static machine, or the advertised SSH port.
    pub ssh_port: u16,
    /// Where it comes from.
    pub source: Source,
    /// Systems it builds for.
    pub systems: Vec<String>,
    /// Features it supports.
    pub features: Vec<String>,
    /// Features a build must require to go there (Nix mandatory features).
    pub mandatory_features: Vec<String>,
    /// Relative speed.
    pub speed: f64,
    /// Concurrent builds.
    pub parallel_builds: u32,
    /// Normalized load at which it counts as overloaded.
    pub overload_threshold: Option<f64>,
    /// Its signing key fingerprint, when known.
    pub key: Option<String>,
    /// Whether that key is in the ACL (static machines are authorized by the operator).
    pub authorized: bool,
    /// Whether the advertised key is in the ACL (what `authorized` becomes
    /// if the static entry goes away).
    pub advert_authorized: bool,
    /// The static entry, if any.
    pub static_entry: Option<BuildMachine>,
    /// The advertisement, if discovered.
    pub advert: Option<Advert>,
    /// Live state.
    pub live: Live,
    /// Learned history.
    pub history: History,
}

impl Machine {
    fn from_static(m: &BuildMachine) -> Self {
        Self {
            name: m.name.clone(),
            ssh_port: m.port,
            source: Source::Static,
            systems: m.systems.clone(),
            features: m.features.clone(),
            mandatory_features: Vec::new(),
            speed: m.speed,
            parallel_builds: m.parallel_builds,
            overload_threshold: m.overload_threshold,
            key: None,
            authorized: true,
            advert_authorized: false,
            static_entry: Some(m.clone()),
            advert: None,
            live: Live::default(),
            history: History::default(),
        }
    }

    fn apply_advert(&mut self, a: &Advert, authorized: bool, now_ms: u64) {
        if self.static_entry.is_none() {
            self.name = a.host.clone();
            self.ssh_port = a.ssh_port.unwrap_or(22);
            self.systems = a.systems.clone();
            self.features = a.features.clone();
            self.speed = a.speed;
            self.parallel_builds = a.slots;
            self.overload_threshold = Some(crate::machines::record::DEFAULT_OVERLOAD_THRESHOLD);
            self.authorized = authorized;
        }
        self.advert_authorized = authorized;
        if self.key != a.key {
            // Another key: nothing proven about it yet.
            self.live.link = Link::Unknown;
            self.key = a.key.clone();
        }
        // Presence only: load, slots, disk and draining come from the link.
        self.live.health = Health::Healthy;
        self.live.stopping = a.stopping;
        self.live.last_seen_ms = Some(now_ms);
        self.advert = Some(a.clone());
        self.source = if self.static_entry.is_some() {
            Source::Both
        } else {
            Source::Discovered
        };
    }
}

/// Normalise a host name for comparison.
fn normal_host(name: &str) -> String {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    lower
        .strip_suffix(".local")
        .map(str::to_owned)
        .unwrap_or(lower)
}

/// Whether a static name and an advertised host/addresses denote one host.
fn hosts_match(name: &str, host: &str, addresses: &[IpAddr]) -> bool {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return addresses.contains(&ip);
    }
    let (a, b) = (normal_host(name), normal_host(host));
    let first = |s: &str| s.split('.').next().unwrap_or_default().to_owned();
    a == b || (!a.contains('.') && a == first(&b)) || (!b.contains('.') && b == first(&a))
}

/// The merged pool.
#[derive(Clone, Debug)]
pub struct Pool {
    machines: Vec<Machine>,
    grace_ms: u64,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE_MS)
    }
}

impl Pool {
    /// An empty pool with the given grace period.
    pub fn new(grace_ms: u64) -> Self {
        Self {
            machines: Vec::new(),
            grace_ms,
        }
    }

    /// The machines.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The grace period.
    pub fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// Replace the static machines (machines.scm was read again). Discovered
    /// state of machines that stay is kept; a `both` machine whose static
    /// entry disappeared becomes `discovered`.
    pub fn set_static(&mut self, statics: &[BuildMachine]) {
        let mut next: Vec<Machine> = Vec::new();
        for s in statics {
            // The same machine listed twice is one machine (slots are per machine).
            if next.iter().any(|m| {
                m.static_entry
                    .as_ref()
                    .is_some_and(|e| e.name == s.name && e.port == s.port)
            }) {
                continue;
            }
            let mut m = Machine::from_static(s);
            // The same static entry, the same host under a new spelling, or
            // an agent that turns out to be this machine.
            let existing =
                self.machines
                    .iter()
                    .position(|old| {
                        old.static_entry
                            .as_ref()
                            .is_some_and(|e| e.name == s.name && e.port == s.port)
                    })
                    .or_else(|| {
                        self.machines.iter().position(|old| {
                            old.static_entry.as_ref().is_some_and(|e| {
                                hosts_match(&e.name, &s.name, &[]) && e.port == s.port
                            }) || (old.advert_authorized
                                && old.live.link == Link::Ok
                                && old
                                    .advert
                                    .as_ref()
                                    .is_some_and(|a| Self::advert_matches(&m, a)))
                        })
                    });
            if let Some(i) = existing {
                let old = self.machines.remove(i);
                m.history = old.history;
                m.key = old.key.clone();
                m.live = old.live.clone();
                m.advert_authorized = old.advert_authorized;
                if let Some(advert) = &old.advert {
                    m.advert = Some(advert.clone());
                    m.source = Source::Both;
                }
            }
            next.push(m);
        }
        // Whatever is left was only discovered (or lost its static entry):
        // it keeps its live state and is authorized only if its key is.
        for mut old in self.machines.drain(..) {
            if let Some(a) = old.advert.clone() {
                old.static_entry = None;
                let (live, authorized) = (old.live.clone(), old.advert_authorized);
                old.apply_advert(&a, authorized, old.live.last_seen_ms.unwrap_or(0));
                old.live = live;
                next.push(old);
            }
        }
        self.machines = next;
    }

    fn advert_matches(m: &Machine, a: &Advert) -> bool {
        match (&m.key, &a.key) {
            (Some(k1), Some(k2)) => k1 == k2,
            _ => {
                hosts_match(&m.name, &a.host, &a.addresses)
                    && m.ssh_port == a.ssh_port.unwrap_or(22)
            }
        }
    }

    /// An agent was resolved (new, updated or back). `authorized` says
    /// whether its key is in the ACL.
    pub fn discovered(&mut self, advert: Advert, authorized: bool, now_ms: u64) {
        let same_instance = self.machines.iter().position(|m| {
            m.advert
                .as_ref()
                .is_some_and(|a| a.instance == advert.instance)
        });
        // Another instance may take over an entry only if that entry is a
        // discovered one without a live advertisement, and the key is in
        // the ACL: the advertised key is untrusted and must not let one
        // host take over another's entry. Static entries are joined only
        // once the key is proven ([`Pool::set_link`]).
        let index = same_instance.or_else(|| {
            self.machines.iter().position(|m| {
                let live = m.advert.is_some()
                    && matches!(m.live.health, Health::Healthy | Health::Unknown);
                authorized && m.static_entry.is_none() && !live && Self::advert_matches(m, &advert)
            })
        });
        match index {
            Some(i) => self.machines[i].apply_advert(&advert, authorized, now_ms),
            None => {
                let mut m = Machine {
                    name: advert.host.clone(),
                    ssh_port: 22,
                    source: Source::Discovered,
                    systems: Vec::new(),
                    features: Vec::new(),
                    mandatory_features: Vec::new(),
                    speed: 1.0,
                    parallel_builds: 1,
                    overload_threshold: None,
                    key: None,
                    authorized,
                    advert_authorized: authorized,
                    static_entry: None,
                    advert: None,
                    live: Live::default(),
                    history: History::default(),
                };
                m.apply_advert(&advert, authorized, now_ms);
                self.machines.push(m);
            }
        }
    }

    /// An agent left mDNS (goodbye or expiry). It stays for the grace period.
    pub fn vanished(&mut self, instance: &str, now_ms: u64) {
        for m in &mut self.machines {
            if m.advert.as_ref().is_some_and(|a| a.instance == instance)
                && !matches!(m.live.health, Health::Vanished { .. })
            {
                m.live.health = Health::Vanished { since_ms: now_ms };
            }
        }
    }

    /// The agent advertised as `instance` stopped answering (a verification
    /// query went unanswered; later: its QUIC connection failed).
    pub fn unhealthy_instance(&mut self, instance: &str, now_ms: u64) {
        for m in &mut self.machines {
            if m.advert.as_ref().is_some_and(|a| a.instance == instance)
                && !matches!(m.live.health, Health::Unhealthy { .. })
            {
                m.live.health = Health::Unhealthy { since_ms: now_ms };
            }
        }
    }

    /// Re-decide which discovered agents are authorized (the ACL changed).
    pub fn reauthorize(&mut self, authorized: impl Fn(&str) -> bool) {
        for m in &mut self.machines {
            m.advert_authorized = m.key.as_deref().is_some_and(&authorized);
            if m.static_entry.is_none() {
                m.authorized = m.advert_authorized;
            }
        }
    }

    /// An agent stopped answering (its QUIC connection failed).
    pub fn unhealthy(&mut self, name: &str, now_ms: u64) {
        for m in &mut self.machines {
            if m.name == name
                && !matches!(
                    m.live.health,
                    Health::Unhealthy { .. } | Health::Vanished { .. }
                )
            {
                m.live.health = Health::Unhealthy { since_ms: now_ms };
            }
        }
    }

    /// Forget discovered agents that have been gone longer than the grace
    /// period; a `both` machine falls back to its static entry.
    pub fn expire(&mut self, now_ms: u64) {
        let grace = self.grace_ms;
        let gone = |m: &Machine| match m.live.health {
            Health::Vanished { since_ms } | Health::Unhealthy { since_ms } => {
                now_ms.saturating_sub(since_ms) >= grace
            }
            _ => false,
        };
        let mut kept = Vec::with_capacity(self.machines.len());
        for m in self.machines.drain(..) {
            if !gone(&m) {
                kept.push(m);
            } else if let Some(entry) = &m.static_entry {
                let mut back = Machine::from_static(entry);
                back.history = m.history;
                kept.push(back);
            }
        }
        self.machines = kept;
    }

    /// Replace the machines wholesale (tests that need states discovery cannot produce).
    #[cfg(test)]
    pub(crate) fn replace_for_tests(&mut self, machines: Vec<Machine>) {
        self.machines = machines;
    }

    /// Builds must require `features` to go to the static machine
    /// `name:port` (Nix's mandatory features).
    pub fn set_mandatory(&mut self, name: &str, port: u16, features: &[String]) {
        for m in &mut self.machines {
            if m.static_entry
                .as_ref()
                .is_some_and(|s| s.name == name && s.port == port)
            {
                m.mandatory_features = features.to_vec();
            }
        }
    }

    /// A build on `name` was lost (its agent went away before the outputs
    /// were home): avoid it for `backoff_ms`.
    pub fn lost_build(&mut self, name: &str, now_ms: u64, backoff_ms: u64) {
        for m in self.machines.iter_mut().filter(|m| m.name == name) {
            m.history.avoid_until_ms = Some(now_ms.saturating_add(backoff_ms));
        }
    }

    /// Record a finished build on `name`: `observed / predicted` seconds
    /// updates its slowness, `bytes / transfer_secs` its throughput.
    pub fn learn(&mut self, name: &str, slowness: f64, throughput: Option<f64>) {
        if !(slowness.is_finite() && slowness > 0.0)
            || throughput.is_some_and(|t| !(t.is_finite() && t > 0.0))
        {
            return;
        }
        for m in self.machines.iter_mut().filter(|m| m.name == name) {
            let h = &mut m.history;
            h.slowness = if h.builds == 0 {
                slowness
            } else {
                0.7 * h.slowness + 0.3 * slowness
            };
            h.throughput = throughput.or(h.throughput);
            h.builds += 1;
        }
    }
}

mod links;
#[cfg(test)]
pub(crate) mod tests;

pub use links::{AGENT_PORT, Link, LinkFailure, LinkTarget, LiveStatus, TargetId};
