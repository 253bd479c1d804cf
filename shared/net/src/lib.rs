//! Networking that agent and master share: an mDNS daemon restricted to
//! chosen interfaces ([`mdns_daemon`]), QUIC endpoints whose TLS
//! identities are Guix keys ([`identity`], [`quic`]), and the protocol's
//! frames over async byte streams ([`framed`]). Nothing here knows about
//! pools, schedulers, stores or the hook.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod framed;
pub mod identity;
pub mod quic;

use mdns_sd::{IfKind, ServiceDaemon};

/// An mDNS daemon on `interfaces` (every interface that is up when empty),
/// IPv4 only.
///
/// mdns-sd joins multicast groups on every interface that is up before it
/// applies the restriction (two IGMP reports, no mDNS packet); tests must
/// therefore run inside network namespaces they create.
pub fn mdns_daemon(interfaces: &[String]) -> Result<ServiceDaemon, mdns_sd::Error> {
    let daemon = ServiceDaemon::new()?;
    if !interfaces.is_empty() {
        daemon.disable_interface(IfKind::All)?;
        for iface in interfaces {
            daemon.enable_interface(IfKind::Name(iface.clone()))?;
        }
    }
    daemon.disable_interface(IfKind::IPv6)?;
    Ok(daemon)
}
