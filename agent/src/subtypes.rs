//! Answering for the DNS-SD subtypes mdns-sd cannot register.
//!
//! mdns-sd registers one subtype per instance, so the agent's first system
//! gets `_SYSTEM._sub._guix-offload._udp` from it and this responder
//! answers PTR queries for the others (pointing at the same instance; SRV,
//! TXT and addresses still come from mdns-sd). It announces the records at
//! start (twice, a second apart, RFC 6762 §8.3) and sends a goodbye (TTL 0)
//! when stopped. It listens on the same interfaces as the advertisement,
//! sharing port 5353 (SO_REUSEADDR and SO_REUSEPORT).

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

/// The IPv4 addresses of `interfaces` (all non-loopback ones when empty).
fn addresses(interfaces: &[String]) -> std::io::Result<Vec<Ipv4Addr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| {
            if interfaces.is_empty() {
                !i.is_loopback()
            } else {
                interfaces.contains(&i.name)
            }
        })
        .filter_map(|i| match i.ip() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .collect())
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
        for a in &addrs {
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

fn send(socket: &UdpSocket, addrs: &[Ipv4Addr], records: &[(String, String)], ttl: u32) {
    let Ok(packet) = mdns_wire::ptr_response(records, ttl) else {
        return;
    };
    let sock = socket2::SockRef::from(socket);
    for a in addrs {
        if sock.set_multicast_if_v4(a).is_ok() {
            let _ = socket.send_to(&packet, SocketAddrV4::new(MDNS_GROUP, MDNS_PORT));
        }
    }
}

fn serve(socket: &UdpSocket, addrs: &[Ipv4Addr], records: &[(String, String)], stop: &AtomicBool) {
    let started = Instant::now();
    send(socket, addrs, records, TTL);
    let mut announced_again = false;
    let mut buf = [0u8; 9000];
    while !stop.load(Ordering::Relaxed) {
        if !announced_again && started.elapsed() >= Duration::from_secs(1) {
            send(socket, addrs, records, TTL);
            announced_again = true;
        }
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
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
        if wanted.is_empty() {
            continue;
        }
        if questions.iter().any(|q| q.unicast)
            && let Ok(packet) = mdns_wire::ptr_response(&wanted, TTL)
        {
            let _ = socket.send_to(&packet, from);
        }
        send(socket, addrs, &wanted, TTL);
    }
    send(socket, addrs, records, 0);
}
