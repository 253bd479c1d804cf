//! Answering for the DNS-SD subtypes mdns-sd cannot register.
//!
//! mdns-sd registers one subtype per instance, so the agent's first system
//! gets `_SYSTEM._sub._guix-offload._udp` from it and this responder
//! answers PTR queries for the others (pointing at the same instance; SRV,
//! TXT and addresses still come from mdns-sd). It announces the records at
//! start (twice, a second apart, RFC 6762 §8.3) and sends a goodbye (TTL 0)
//! when stopped. It listens on the same interfaces as the advertisement,
//! sharing port 5353 (SO_REUSEADDR and SO_REUSEPORT).
//!
//! Two rules of RFC 6762 keep it from being a reflector ([`Plan`]):
//! queries whose source is not on one of our links are ignored (§11: only
//! on-link hosts may ask, and a unicast answer goes only to them), and no
//! record is multicast again within a second of its last multicast (§6).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use offload_core::dnssd;
use offload_core::mdns_wire::{self, TYPE_ANY, TYPE_PTR};
use socket2::{Domain, Protocol, Socket, Type};

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
/// TTL of the PTR records (RFC 6762 §10: 75 minutes for non-host records).
const TTL: u32 = 4500;

/// The running responder; stop it with [`Responder::stop`].
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The IPv4 addresses (with their netmasks) of `interfaces` (all
/// non-loopback ones when empty).
fn addresses(interfaces: &[String]) -> std::io::Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| {
            if interfaces.is_empty() {
                !i.is_loopback()
            } else {
                interfaces.contains(&i.name)
            }
        })
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => Some((v4.ip, v4.netmask)),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect())
}

/// What to answer a query with, under the rules of RFC 6762 (module
/// documentation): pure, with the clock passed in.
#[derive(Debug, Default)]
pub struct Plan {
    /// When each record was last multicast.
    last_multicast: std::collections::HashMap<String, Instant>,
}

/// The answer to one query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Records to send back to the querier directly.
    pub unicast: Vec<(String, String)>,
    /// Records to multicast on every interface.
    pub multicast: Vec<(String, String)>,
}

impl Plan {
    /// Whether `from` is on one of `links` (address, netmask).
    pub fn on_link(from: Ipv4Addr, links: &[(Ipv4Addr, Ipv4Addr)]) -> bool {
        links.iter().any(|(ip, mask)| {
            let m = u32::from(*mask);
            u32::from(*ip) & m == u32::from(from) & m
        })
    }

    /// The answer to `wanted` records asked from `from` (`unicast`: the
    /// query asked for a unicast reply), at `now`.
    pub fn answer(
        &mut self,
        wanted: Vec<(String, String)>,
        from: Ipv4Addr,
        unicast: bool,
        links: &[(Ipv4Addr, Ipv4Addr)],
        now: Instant,
    ) -> Answer {
        if wanted.is_empty() || !Self::on_link(from, links) {
            return Answer::default();
        }
        let multicast = wanted
            .iter()
            .filter(|(name, _)| {
                self.last_multicast
                    .get(name)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
            })
            .cloned()
            .collect::<Vec<_>>();
        self.multicasting(&multicast, now);
        Answer {
            unicast: if unicast { wanted } else { Vec::new() },
            multicast,
        }
    }

    /// Records multicast at `now` (announcements included).
    pub fn multicasting(&mut self, records: &[(String, String)], now: Instant) {
        for (name, _) in records {
            self.last_multicast.insert(name.clone(), now);
        }
    }
}

impl Responder {
    /// Answer for the subtypes of `systems` other than the first, pointing at
    /// `instance_fullname`; `None` when there is nothing to answer for.
    pub fn start(
        instance_fullname: &str,
        systems: &[String],
        interfaces: &[String],
    ) -> std::io::Result<Option<Self>> {
        let records: Vec<(String, String)> = systems
            .iter()
            .skip(1)
            .map(|s| {
                (
                    dnssd::subtype(s).to_lowercase(),
                    instance_fullname.to_owned(),
                )
            })
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        let addrs = addresses(interfaces)?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT).into())?;
        for (a, _) in &addrs {
            socket.join_multicast_v4(&MDNS_GROUP, a)?;
        }
        socket.set_multicast_ttl_v4(255)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let socket: UdpSocket = socket.into();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&socket, &addrs, &records, &flag));
        Ok(Some(Self {
            stop,
            thread: Some(thread),
        }))
    }

    /// Send goodbyes and stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send(
    socket: &UdpSocket,
    addrs: &[(Ipv4Addr, Ipv4Addr)],
    records: &[(String, String)],
    ttl: u32,
) {
    if records.is_empty() {
        return;
    }
    let Ok(packet) = mdns_wire::ptr_response(records, ttl) else {
        return;
    };
    let sock = socket2::SockRef::from(socket);
    for (a, _) in addrs {
        if sock.set_multicast_if_v4(a).is_ok() {
            let _ = socket.send_to(&packet, SocketAddrV4::new(MDNS_GROUP, MDNS_PORT));
        }
    }
}

fn serve(
    socket: &UdpSocket,
    addrs: &[(Ipv4Addr, Ipv4Addr)],
    records: &[(String, String)],
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut plan = Plan::default();
    send(socket, addrs, records, TTL);
    plan.multicasting(records, started);
    let mut announced_again = false;
    let mut buf = [0u8; 9000];
    while !stop.load(Ordering::Relaxed) {
        if !announced_again && started.elapsed() >= Duration::from_secs(1) {
            send(socket, addrs, records, TTL);
            plan.multicasting(records, Instant::now());
            announced_again = true;
        }
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let std::net::SocketAddr::V4(from) = from else {
            continue;
        };
        let Ok(questions) = mdns_wire::questions(&buf[..len]) else {
            continue;
        };
        let wanted: Vec<(String, String)> = records
            .iter()
            .filter(|(name, _)| {
                questions
                    .iter()
                    .any(|q| &q.name == name && (q.qtype == TYPE_PTR || q.qtype == TYPE_ANY))
            })
            .cloned()
            .collect();
        let unicast = questions.iter().any(|q| q.unicast);
        let answer = plan.answer(wanted, *from.ip(), unicast, addrs, Instant::now());
        if !answer.unicast.is_empty()
            && let Ok(packet) = mdns_wire::ptr_response(&answer.unicast, TTL)
        {
            let _ = socket.send_to(&packet, from);
        }
        send(socket, addrs, &answer.multicast, TTL);
    }
    send(socket, addrs, records, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> (String, String) {
        (
            name.to_owned(),
            "agent._guix-offload._udp.local.".to_owned(),
        )
    }

    #[test]
    fn off_link_queriers_get_nothing() {
        let links = [(Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(255, 255, 255, 0))];
        let mut plan = Plan::default();
        let now = Instant::now();
        let off = plan.answer(
            vec![rec("a")],
            Ipv4Addr::new(192, 0, 2, 9),
            true,
            &links,
            now,
        );
        assert_eq!(off, Answer::default(), "neither unicast nor multicast");
        let on = plan.answer(
            vec![rec("a")],
            Ipv4Addr::new(10, 77, 0, 9),
            true,
            &links,
            now,
        );
        assert_eq!(on.unicast, vec![rec("a")]);
        assert_eq!(on.multicast, vec![rec("a")]);
    }

    #[test]
    fn a_record_is_multicast_at_most_once_a_second() {
        let links = [(Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(255, 255, 255, 0))];
        let from = Ipv4Addr::new(10, 77, 0, 2);
        let mut plan = Plan::default();
        let t0 = Instant::now();
        plan.multicasting(&[rec("a")], t0);
        let soon = plan.answer(
            vec![rec("a"), rec("b")],
            from,
            false,
            &links,
            t0 + Duration::from_millis(300),
        );
        assert_eq!(soon.multicast, vec![rec("b")], "a went out 300 ms ago");
        let again = plan.answer(
            vec![rec("a"), rec("b")],
            from,
            false,
            &links,
            t0 + Duration::from_millis(900),
        );
        assert!(again.multicast.is_empty(), "{again:?}");
        let later = plan.answer(
            vec![rec("a"), rec("b")],
            from,
            false,
            &links,
            t0 + Duration::from_millis(1400),
        );
        assert_eq!(later.multicast, vec![rec("a"), rec("b")]);
        // A unicast answer is not multicast, so it is not limited.
        let direct = plan.answer(
            vec![rec("a")],
            from,
            true,
            &links,
            t0 + Duration::from_millis(1500),
        );
        assert_eq!((direct.unicast.len(), direct.multicast.len()), (1, 0));
    }
}
