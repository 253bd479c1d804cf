//! Browsing for agents with mdns-sd for a bounded time (`status` without
//! `serve`). TXT records are untrusted: an agent whose record does not
//! follow the schema is skipped with a warning naming it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::ServiceEvent;
use offload_core::dnssd::{self, Txt};

use crate::pool::Advert;

/// Why browsing failed.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct Error(#[from] mdns_sd::Error);

/// An agent's advertisement from a resolved service, its TXT checked.
pub fn advert(info: &mdns_sd::ResolvedService) -> Result<Advert, offload_core::dnssd::TxtError> {
    let entries: Vec<(String, String)> = info
        .get_properties()
        .iter()
        .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
        .collect();
    let txt = Txt::decode(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(Advert {
        instance: info.get_fullname().to_owned(),
        host: info.get_hostname().trim_end_matches('.').to_owned(),
        addresses: info
            .get_addresses_v4()
            .into_iter()
            .map(IpAddr::V4)
            .collect(),
        port: info.get_port(),
        systems: txt.systems,
        features: txt.features,
        speed: txt.speed,
        slots: txt.slots,
        free: txt.free,
        load: txt.load,
        disk: txt.disk,
        key: Some(txt.key),
        ssh_port: txt.ssh.map(|(_, port)| port),
        draining: txt.draining,
        stopping: txt.stopping,
    })
}

/// The agents that answered within `duration` on `interfaces` (all when
/// empty), and warnings about records that were rejected.
pub fn browse(
    duration: Duration,
    interfaces: &[String],
) -> Result<(Vec<Advert>, Vec<String>), Error> {
    let daemon = offload_net::mdns_daemon(interfaces)?;
    let events = daemon.browse(dnssd::SERVICE_TYPE)?;
    let deadline = Instant::now() + duration;
    let mut adverts: Vec<Advert> = Vec::new();
    let mut warnings = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(info)) => match advert(&info) {
                Ok(advert) => {
                    adverts.retain(|a| a.instance != advert.instance);
                    adverts.push(advert);
                }
                Err(e) => warnings.push(format!("ignoring agent {}: {e}", info.get_fullname())),
            },
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                adverts.retain(|a| a.instance != fullname)
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = daemon.stop_browse(dnssd::SERVICE_TYPE);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_secs(1));
    }
    adverts.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok((adverts, warnings))
}
