//! `offload-master serve`: keep the machine pool warm and answer local
//! clients over a Unix socket.
//!
//! Threads share the pool: authenticated links to the agents (module
//! [`crate::links`]: one QUIC connection per agent, whose status polls
//! give load, free slots, disk and draining, and whose failures say why
//! a machine is not healthy), mDNS events (agents resolved, updated, removed),
//! the socket (each client on its own short-lived thread, at most
//! [`MAX_CLIENTS`] at once, one request line `status json` or `status
//! table` with timeouts), and upkeep every 250 ms: re-read machines.scm and
//! the ACL when they change, expire machines gone longer than the grace
//! period, and verify discovered agents. A stopping agent advertises
//! `stopping` and then says goodbye: it is marked vanished. Any other
//! removal (an unanswered verification, an expired record) means it
//! crashed or lost the network: it is marked unhealthy. Both stay in the
//! pool for the grace period, so the hook postpones rather than declines;
//! agents re-announce themselves periodically, so one lost answer heals.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use offload_core::acl::Acl;
use offload_core::dnssd;
use offload_files::file_key::{FileKey, file_key};

use crate::discover;
use crate::machines::load::{Cache, EvaluatorChoice};
use crate::pool::{Health, Pool};

/// Longest request line a client may send.
const MAX_REQUEST: u64 = 4096;
/// Clients answered at once; more are turned away.
pub const MAX_CLIENTS: usize = 16;
/// Discovered agents kept at once (a LAN full of fake agents cannot grow
/// the pool without bound).
pub const MAX_AGENTS: usize = 1024;
/// Distinct subtypes browsed at once.
pub const MAX_SUBTYPES: usize = 64;
/// mDNS events waiting to be handled.
const EVENT_QUEUE: usize = 1024;

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The socket to listen on.
    pub socket: PathBuf,
    /// machines.scm.
    pub machines: PathBuf,
    /// The ACL.
    pub acl: PathBuf,
    /// Our signing key, proven to agents.
    pub key: PathBuf,
    /// mDNS interfaces (all when empty).
    pub interfaces: Vec<String>,
    /// Grace period for vanished or unhealthy agents.
    pub grace_ms: u64,
    /// How often discovered agents are verified.
    pub verify_ms: u64,
    /// How long a verification waits for an answer (mdns-sd asks again
    /// every second until then).
    pub verify_timeout_ms: u64,
}

struct Shared {
    pool: Pool,
    acl: Arc<Acl>,
    start: Instant,
}

/// The links' view of the pool.
struct Board(Arc<Mutex<Shared>>);

impl crate::links::Board for Board {
    fn targets(&self) -> (Vec<crate::pool::LinkTarget>, Arc<Acl>) {
        let s = lock(&self.0);
        (s.pool.link_targets(), Arc::clone(&s.acl))
    }

    fn report(&self, target: &crate::pool::LinkTarget, outcome: crate::links::Outcome) {
        let mut s = lock(&self.0);
        let now = s.now_ms();
        s.pool.report_link(target, outcome, now);
    }
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

/// Sets `stop` when dropped, so a panicking upkeep ends the other threads.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
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
        acl: Arc::new(Acl::default()),
        start: Instant::now(),
    }));
    let key = match offload_files::key_file::load_secret(&config.key) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            tracing::warn!(
                "{e}: without our key no agent can be linked, and discovered agents stay unused"
            );
            None
        }
    };
    let daemon = offload_net::mdns_daemon(&config.interfaces)?;
    // mdns-sd files an agent's records under the type it first saw them
    // with, which may be one of its subtypes; removals go to listeners of
    // that type. So the subtypes agents use are browsed too, all feeding
    // one bounded queue.
    let (tx, events) = std::sync::mpsc::sync_channel::<ServiceEvent>(EVENT_QUEUE);
    let forward = |ty: &str| -> anyhow::Result<()> {
        let receiver = daemon.browse(ty)?;
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
    forward(dnssd::SERVICE_TYPE)?;
    tracing::info!(socket = %config.socket.display(), "serving");
    let clients = AtomicUsize::new(0);
    let (shared_ref, forward_ref) = (&shared, &forward);
    std::thread::scope(|s| {
        s.spawn(move || {
            let (shared, forward) = (shared_ref, forward_ref);
            let mut browsed: HashSet<String> = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(event) = events.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                for system in handle_event(shared, event) {
                    let ty = dnssd::subtype(&system);
                    if browsed.len() < MAX_SUBTYPES && !browsed.contains(&ty) {
                        match forward(&ty) {
                            Ok(()) => {
                                browsed.insert(ty);
                            }
                            Err(e) => tracing::warn!("cannot browse {ty}: {e}"),
                        }
                    }
                }
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // Wait for a client without spinning, waking now and then
                // to notice `stop`.
                let mut fds = [rustix::event::PollFd::new(
                    &listener,
                    rustix::event::PollFlags::IN,
                )];
                let tick = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                match rustix::event::poll(&mut fds, Some(&tick)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("poll: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                }
                match listener.accept() {
                    Ok((stream, _)) => {
                        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                            clients.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                        let (shared, clients) = (&shared, &clients);
                        s.spawn(move || {
                            if let Err(e) = answer(shared, stream) {
                                tracing::debug!("client: {e}");
                            }
                            clients.fetch_sub(1, Ordering::AcqRel);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        if let Some(key) = key {
            let board: Arc<dyn crate::links::Board> = Arc::new(Board(Arc::clone(&shared)));
            s.spawn(move || run_links(board, key, stop));
        }
        let _stop_on_exit = StopOnDrop(stop);
        upkeep(config, &shared, &daemon, stop);
    });
    let _ = std::fs::remove_file(&config.socket);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_secs(1));
    }
    Ok(())
}

/// Keep the links up until `stop` is set.
fn run_links(
    board: Arc<dyn crate::links::Board>,
    key: Arc<offload_core::keys::SecretKey>,
    stop: &AtomicBool,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the links' runtime: {e}");
            return;
        }
    };
    runtime.block_on(async {
        let maintain = crate::links::maintain(board, key);
        tokio::pin!(maintain);
        loop {
            tokio::select! {
                () = &mut maintain => break,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Apply one mDNS event; returns the systems of a valid advertisement
/// (whose subtypes should be browsed).
fn handle_event(shared: &Mutex<Shared>, event: ServiceEvent) -> Vec<String> {
    let mut s = lock(shared);
    let now = s.now_ms();
    match event {
        ServiceEvent::ServiceResolved(info) => match discover::advert(&info) {
            Ok(advert) => {
                let known = s.pool.machines().iter().any(|m| {
                    m.advert
                        .as_ref()
                        .is_some_and(|a| a.instance == advert.instance)
                });
                let discovered = s
                    .pool
                    .machines()
                    .iter()
                    .filter(|m| m.static_entry.is_none())
                    .count();
                if !known && discovered >= MAX_AGENTS {
                    tracing::warn!(
                        "ignoring agent {}: already {MAX_AGENTS} agents",
                        advert.instance
                    );
                    return Vec::new();
                }
                let authorized = advert
                    .key
                    .as_deref()
                    .is_some_and(|k| s.acl.contains_fingerprint(k));
                let systems = advert.systems.clone();
                s.pool.discovered(advert, authorized, now);
                systems
            }
            Err(e) => {
                tracing::warn!("ignoring agent {}: {e}", info.get_fullname());
                Vec::new()
            }
        },
        ServiceEvent::ServiceRemoved(_, fullname) => {
            // A stopping agent advertises `stopping` before its goodbye; a
            // removal without it is a failed verification or an expired record.
            let clean = s.pool.machines().iter().any(|m| {
                m.live.stopping && m.advert.as_ref().is_some_and(|a| a.instance == fullname)
            });
            if clean {
                tracing::info!(agent = %fullname, "stopped (goodbye)");
                s.pool.vanished(&fullname, now);
            } else {
                tracing::info!(agent = %fullname, "not answering: unhealthy");
                s.pool.unhealthy_instance(&fullname, now);
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn answer(shared: &Mutex<Shared>, stream: UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = {
        let mut s = lock(shared);
        let now = s.now_ms();
        let line = line.trim_end_matches('\n');
        let mut words = line.splitn(2, ' ');
        match (words.next().unwrap_or_default(), words.next()) {
            ("status", Some("json")) => crate::status::json(&s.pool),
            ("status", Some("table")) => crate::status::table(&s.pool),
            ("plan", Some(rest)) => plan_reply(&s.pool, rest, now),
            ("lost", Some(name)) => {
                tracing::info!(machine = %name, "a hook lost a build there: backing off");
                s.pool.lost_build(name, now, crate::hook::LOST_BACKOFF_MS);
                "ok\n".to_owned()
            }
            _ => format!(
                "error: unknown request {line:?} (expected `status json`, `status table`, `plan L SYSTEM FEATURES` or `lost MACHINE`)\n"
            ),
        }
    };
    (&stream).write_all(reply.as_bytes())
}

/// The plan for `L SYSTEM FEATURES` (as the daemon's request line has
/// them), as one JSON line.
fn plan_reply(pool: &Pool, rest: &str, now_ms: u64) -> String {
    let mut fields = rest.splitn(3, ' ');
    let (local, system, features) = (fields.next(), fields.next(), fields.next().unwrap_or(""));
    let (Some(local @ ("0" | "1")), Some(system)) = (local, system) else {
        return format!("error: bad plan request {rest:?}\n");
    };
    let features: Vec<String> = features
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let ask = crate::hook::plan::Ask {
        system,
        features: &features,
        local_slot_free: local == "1",
    };
    let seed = now_ms ^ u64::from(std::process::id());
    let plan = crate::hook::plan::plan(pool, &ask, pool.grace_ms(), now_ms, seed);
    match serde_json::to_string(&plan) {
        Ok(json) => json + "\n",
        Err(e) => format!("error: {e}\n"),
    }
}

fn upkeep(config: &Config, shared: &Mutex<Shared>, daemon: &ServiceDaemon, stop: &AtomicBool) {
    let mut cache = Cache::default();
    // `Some(None)`: tried, the file was absent.
    let mut machines_seen: Option<Option<FileKey>> = None;
    let mut acl_seen: Option<Option<FileKey>> = None;
    let mut last_verify = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let key = file_key(&config.machines);
        if machines_seen != Some(key) {
            machines_seen = Some(key);
            match cache.load(&config.machines, EvaluatorChoice::Auto) {
                Ok(loaded) => {
                    tracing::info!(machines = loaded.machines.len(), file = %config.machines.display(), "static machines loaded");
                    lock(shared).pool.set_static(&loaded.machines);
                }
                Err(e) => tracing::warn!("{e}; keeping the machines read before"),
            }
        }
        let key = file_key(&config.acl);
        if acl_seen != Some(key) {
            acl_seen = Some(key);
            let acl = match offload_files::acl_file::load(&config.acl) {
                Ok(acl) => Some(acl),
                Err(offload_files::acl_file::Error::Missing(_)) => {
                    tracing::warn!(
                        "no ACL at {}: no discovered agent is authorized",
                        config.acl.display()
                    );
                    Some(Acl::default())
                }
                Err(e) => {
                    tracing::warn!("{e}; keeping the ACL read before");
                    None
                }
            };
            if let Some(acl) = acl {
                let mut s = lock(shared);
                s.pool.reauthorize(|k| acl.contains_fingerprint(k));
                s.acl = Arc::new(acl);
            }
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
                drop(s);
                for instance in healthy {
                    let _ =
                        daemon.verify(instance, Duration::from_millis(config.verify_timeout_ms));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn request(socket: &Path, line: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to offload-master serve at {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    stream.take(1 << 20).read_to_string(&mut reply)?;
    if reply.starts_with("error: ") || reply.is_empty() {
        anyhow::bail!(
            "offload-master serve at {}: {}",
            socket.display(),
            reply.trim()
        );
    }
    Ok(reply)
}

/// Ask a running `serve` where to build.
pub fn ask_plan(
    socket: &Path,
    ask: &crate::hook::plan::Ask<'_>,
) -> anyhow::Result<crate::hook::plan::Plan> {
    let line = format!(
        "plan {} {} {}\n",
        if ask.local_slot_free { 1 } else { 0 },
        ask.system,
        ask.features.join(",")
    );
    let reply = request(socket, &line, Duration::from_secs(5))?;
    serde_json::from_str(reply.trim_end()).with_context(|| {
        format!(
            "offload-master serve at {} answered {:?}",
            socket.display(),
            reply
        )
    })
}

/// Tell a running `serve` that a build on `machine` was lost.
pub fn report_lost(socket: &Path, machine: &str) -> anyhow::Result<()> {
    request(socket, &format!("lost {machine}\n"), Duration::from_secs(2)).map(drop)
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
