//! `offload-master serve`: keep the machine pool warm and answer local
//! clients over a Unix socket.
//!
//! Three threads share the pool: mDNS events (agents resolved, updated,
//! removed), the socket (one request line per connection, `status json` or
//! `status table`, answered and closed), and upkeep every 250 ms: re-read
//! machines.scm and the ACL when they change, expire machines gone longer
//! than the grace period, and verify discovered agents. A stopping agent
//! advertises `draining` and then says goodbye: it is marked vanished and
//! no longer listed. Any other removal (an unanswered verification query,
//! an expired record) means it crashed or lost the network: it is marked
//! unhealthy. Both stay in the pool for the grace period, so the hook
//! postpones rather than declines.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use offload_core::acl::Acl;
use offload_core::dnssd;

use crate::discover;
use crate::machines::load::{Cache, EvaluatorChoice};
use crate::pool::{Health, Pool};

/// Longest request line a client may send.
const MAX_REQUEST: u64 = 1024;

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The socket to listen on.
    pub socket: PathBuf,
    /// machines.scm.
    pub machines: PathBuf,
    /// The ACL.
    pub acl: PathBuf,
    /// mDNS interfaces (all when empty).
    pub interfaces: Vec<String>,
    /// Grace period for vanished or unhealthy agents.
    pub grace_ms: u64,
    /// How often discovered agents are verified.
    pub verify_ms: u64,
    /// How long a verification query waits for an answer.
    pub verify_timeout_ms: u64,
}

struct Shared {
    pool: Pool,
    acl: Acl,
    start: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking thread must not take the pool down with it.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run until `stop` is set (SIGTERM/SIGINT in the binary).
pub fn run(config: &Config, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if config.socket.exists() {
        if UnixStream::connect(&config.socket).is_ok() {
            anyhow::bail!(
                "{} is in use: another `offload-master serve` is running",
                config.socket.display()
            );
        }
        std::fs::remove_file(&config.socket)
            .with_context(|| format!("removing stale {}", config.socket.display()))?;
    }
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = UnixListener::bind(&config.socket)
        .with_context(|| format!("listening on {}", config.socket.display()))?;
    listener.set_nonblocking(true)?;
    let shared = Arc::new(Mutex::new(Shared {
        pool: Pool::new(config.grace_ms),
        acl: load_acl(&config.acl),
        start: Instant::now(),
    }));
    let daemon = offload_net::mdns_daemon(&config.interfaces)?;
    // mdns-sd files an agent's records under the type it first saw them
    // with, which may be the agent's subtype; removals go to listeners of
    // that type. So every subtype an agent uses is browsed too, all feeding
    // one channel.
    let (tx, events) = std::sync::mpsc::channel::<ServiceEvent>();
    let forward = |ty: String| -> anyhow::Result<()> {
        let receiver = daemon.browse(&ty)?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(event) = receiver.recv() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(())
    };
    forward(dnssd::SERVICE_TYPE.to_owned())?;
    let mut browsed: std::collections::HashSet<String> = std::collections::HashSet::new();
    tracing::info!(socket = %config.socket.display(), "serving");
    let events_shared = Arc::clone(&shared);
    std::thread::scope(|s| {
        s.spawn(move || {
            let shared = events_shared;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(event) = events.recv_timeout(Duration::from_millis(200)) {
                    if let ServiceEvent::ServiceResolved(info) = &event
                        && let Some(system) = info
                            .get_property_val_str("systems")
                            .and_then(|s| s.split(',').next())
                    {
                        let ty = dnssd::subtype(system);
                        if system.len() <= 64 && browsed.insert(ty.clone()) && forward(ty).is_err()
                        {
                            tracing::warn!("cannot browse the subtype of {system}");
                        }
                    }
                    handle_event(&shared, event);
                }
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = answer(&shared, stream) {
                            tracing::debug!("client: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => tracing::warn!("accept: {e}"),
                }
            }
        });
        upkeep(config, &shared, &daemon, stop);
    });
    let _ = std::fs::remove_file(&config.socket);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_secs(1));
    }
    Ok(())
}

fn load_acl(path: &Path) -> Acl {
    offload_files::acl_file::load(path).unwrap_or_else(|e| {
        tracing::warn!("{e}: no discovered agent is authorized");
        Acl::default()
    })
}

fn handle_event(shared: &Mutex<Shared>, event: ServiceEvent) {
    let mut s = lock(shared);
    let now = s.now_ms();
    match event {
        ServiceEvent::ServiceResolved(info) => match discover::advert(&info) {
            Ok(advert) => {
                let authorized = advert
                    .key
                    .as_deref()
                    .is_some_and(|k| s.acl.contains_fingerprint(k));
                s.pool.discovered(advert, authorized, now);
            }
            Err(e) => tracing::warn!("ignoring agent {}: {e}", info.get_fullname()),
        },
        ServiceEvent::ServiceRemoved(_, fullname) => {
            // A stopping agent advertises `draining` before its goodbye; a
            // removal without it is a failed verification or an expired record.
            let clean = s.pool.machines().iter().any(|m| {
                m.live.draining && m.advert.as_ref().is_some_and(|a| a.instance == fullname)
            });
            if clean {
                tracing::info!(agent = %fullname, "stopped (goodbye)");
                s.pool.vanished(&fullname, now);
            } else {
                tracing::info!(agent = %fullname, "not answering: unhealthy");
                s.pool.unhealthy_instance(&fullname, now);
            }
        }
        _ => {}
    }
}

fn answer(shared: &Mutex<Shared>, stream: UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = {
        let s = lock(shared);
        match line.trim() {
            "status json" => crate::status::json(&s.pool),
            "status table" => crate::status::table(&s.pool),
            other => format!(
                "error: unknown request {other:?} (expected `status json` or `status table`)\n"
            ),
        }
    };
    (&stream).write_all(reply.as_bytes())
}

fn upkeep(config: &Config, shared: &Mutex<Shared>, daemon: &ServiceDaemon, stop: &AtomicBool) {
    let mut cache = Cache::default();
    let mut acl_stamp = None;
    let mut last_verify = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match cache.load(&config.machines, EvaluatorChoice::Auto) {
            Ok(loaded) => {
                let mut s = lock(shared);
                if s.pool
                    .machines()
                    .iter()
                    .filter_map(|m| m.static_entry.as_ref())
                    .ne(loaded.machines.iter())
                {
                    tracing::info!(machines = loaded.machines.len(), file = %config.machines.display(), "static machines (re)loaded");
                    s.pool.set_static(&loaded.machines);
                }
            }
            Err(e) => tracing::warn!("{e}; keeping the machines read before"),
        }
        let stamp = std::fs::metadata(&config.acl)
            .and_then(|m| m.modified())
            .ok();
        if stamp != acl_stamp {
            acl_stamp = stamp;
            let mut s = lock(shared);
            s.acl = load_acl(&config.acl);
            let acl = s.acl.clone();
            s.pool.reauthorize(|key| acl.contains_fingerprint(key));
        }
        {
            let mut s = lock(shared);
            let now = s.now_ms();
            s.pool.expire(now);
            // A verification re-armed before it times out never fires: keep
            // the interval well above the timeout.
            let interval = config.verify_ms.max(2 * config.verify_timeout_ms + 500);
            if last_verify.elapsed() >= Duration::from_millis(interval) {
                last_verify = Instant::now();
                let healthy: Vec<String> = s
                    .pool
                    .machines()
                    .iter()
                    .filter(|m| m.live.health == Health::Healthy)
                    .filter_map(|m| m.advert.as_ref().map(|a| a.instance.clone()))
                    .collect();
                for instance in healthy {
                    let _ =
                        daemon.verify(instance, Duration::from_millis(config.verify_timeout_ms));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Ask a running `serve` for its status. `Ok(None)` when no `serve`
/// listens at `socket` (the caller may look by itself); an error when one
/// listens but does not answer properly.
pub fn ask(socket: &Path, json: bool) -> anyhow::Result<Option<String>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("connecting to offload-master serve at {}", socket.display())
            });
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(if json {
        b"status json\n"
    } else {
        b"status table\n"
    })?;
    let mut reply = String::new();
    stream
        .take(16 << 20)
        .read_to_string(&mut reply)
        .with_context(|| {
            format!(
                "offload-master serve at {} did not answer",
                socket.display()
            )
        })?;
    if reply.starts_with("error: ") || reply.is_empty() {
        anyhow::bail!(
            "offload-master serve at {}: {}",
            socket.display(),
            reply.trim()
        );
    }
    Ok(Some(reply))
}
