//! `offload-agent run`: the QUIC service, the hand-over socket for
//! `stdio`, the advertisement, and draining on signals.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use offload_agent::advertise::Advertiser;
use offload_agent::probe;
use offload_agent::service::{self, Measured, Service};
use offload_core::dnssd::Txt;
use offload_files::file_key::file_key;
use offload_store::spec::StoreSpec;

use crate::options::{self, Common};

/// Arguments of `offload-agent run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// The UDP address to serve QUIC on [default: [::]:7441].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// SSH fallback, advertised as USER@PORT.
    #[arg(long)]
    ssh: Option<String>,
    /// Only use these interfaces for mDNS (repeatable) [default: all].
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Do not advertise over DNS-SD (masters list this machine statically).
    #[arg(long)]
    no_advertise: bool,
    /// Seconds between measurements of load and free disk [default: 2].
    #[arg(long)]
    update_secs: Option<f64>,
    /// On SIGTERM, wait at most this many seconds for running builds [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    drain_seconds: Option<u64>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    options::prepare_process();
    // SIGTERM/SIGINT: the first drains and stops, the second stops now,
    // the third exits at once. SIGUSR1 drains.
    let signals = Arc::new(AtomicUsize::new(0));
    let drain_signal = Arc::new(AtomicBool::new(false));
    {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        let mut incoming = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1])
            .context("installing signal handlers")?;
        let (signals, drain_signal) = (Arc::clone(&signals), Arc::clone(&drain_signal));
        std::thread::spawn(move || {
            for signal in incoming.forever() {
                if signal == SIGUSR1 {
                    drain_signal.store(true, Ordering::Relaxed);
                } else if signals.fetch_add(1, Ordering::Relaxed) >= 2 {
                    std::process::exit(1);
                }
            }
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // This process serves from the state directory, alone; then the store.
    let _lock = options::lock_state_dir(&args.common.state_dir()?)?;
    let opened = runtime.block_on(args.common.open(true))?;
    let file = &opened.file;
    let service = Arc::clone(&opened.service);
    anyhow::ensure!(
        !service.config().systems.is_empty(),
        "no systems: pass --systems (e.g. --systems x86_64-linux) or set `systems` in the configuration"
    );
    let listen = match args.listen {
        Some(a) => a,
        None => match &file.listen {
            Some(text) => text
                .parse()
                .with_context(|| format!("listen = {text:?}: expected ADDRESS:PORT"))?,
            None => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 7441)),
        },
    };
    let endpoint = runtime.block_on(async { service::quic::endpoint(&service, listen) })?;
    let port = endpoint.local_addr().context("the QUIC socket")?.port();
    let socket = options::local_socket(&opened.state_dir);
    let local = bind_local(&socket)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(service::quic::serve(
        Arc::clone(&service),
        endpoint.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let timer = runtime.spawn(Arc::clone(&service).run_lease_timer());
    let handover = runtime.spawn(serve_local(Arc::clone(&service), local));
    tracing::info!(%listen, port, store = %opened.store_spec, "serving builds");

    let ssh = match args.ssh.as_ref().or(file.ssh.as_ref()) {
        None => None,
        Some(s) => {
            let (user, port) = s.rsplit_once('@').context("ssh must be USER@PORT")?;
            Some((user.to_owned(), port.parse().context("ssh port")?))
        }
    };
    let store_root = store_root(&opened.store_spec, service.status().store_dir.as_str());
    let measure = || Measured {
        load: probe::normalized_load().unwrap_or(0.0),
        disk: probe::free_disk(&store_root).unwrap_or(0),
    };
    service.set_measured(measure());
    let txt = |s: &offload_core::proto::Status| Txt {
        systems: s.systems.clone(),
        features: s.features.clone(),
        speed: f64::from(s.speed_milli) / 1000.0,
        slots: s.slots,
        free: s.free,
        load: f64::from(s.load_milli) / 1000.0,
        disk: s.disk,
        key: service.key().public_key().fingerprint(),
        store: s.store_dir.clone(),
        ssh: ssh.clone(),
        draining: s.draining,
        stopping: false,
    };
    let interfaces = if args.interfaces.is_empty() {
        file.interfaces.clone().unwrap_or_default()
    } else {
        args.interfaces.clone()
    };
    let advertise = !args.no_advertise && file.advertise.unwrap_or(true);
    let mut advertiser = if advertise {
        let a = Advertiser::start(
            &service.config().name,
            port,
            txt(&service.status()),
            &interfaces,
        )?;
        tracing::info!(name = %service.config().name, fullname = a.fullname(), "advertising");
        Some(a)
    } else {
        None
    };
    let update = Duration::from_secs_f64(
        args.update_secs
            .or(file.update_seconds)
            .unwrap_or(2.0)
            .max(0.1),
    );
    let drain_limit =
        Duration::from_secs(args.drain_seconds.or(file.drain_seconds).unwrap_or(3600));
    let mut changes = service.changes();
    let mut acl_seen = file_key(&opened.acl_path);
    let mut last_update = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let received = signals.load(Ordering::Relaxed);
        if received > 0 && stopping_since.is_none() {
            tracing::info!(
                "stopping: draining (no new builds), {} running",
                service.running()
            );
            service.start_draining();
            stopping_since = Some(Instant::now());
        }
        if drain_signal.swap(false, Ordering::Relaxed) {
            tracing::info!("draining: no new builds");
            service.start_draining();
        }
        if let Some(since) = stopping_since {
            let running = service.running();
            if running == 0 || received > 1 || since.elapsed() >= drain_limit {
                if running > 0 {
                    tracing::warn!("stopping with {running} builds running: they are cancelled");
                }
                break;
            }
        }
        let measured = last_update.elapsed() >= update;
        if measured {
            last_update = Instant::now();
            service.set_measured(measure());
            let key = file_key(&opened.acl_path);
            if key != acl_seen {
                acl_seen = key;
                match options::load_acl(&opened.acl_path) {
                    Ok(acl) => {
                        tracing::info!(acl = %opened.acl_path.display(), "ACL read again");
                        service.set_acl(acl);
                    }
                    Err(e) => tracing::warn!("{e:#}; keeping the ACL read before"),
                }
            }
        }
        // New measurements, or slots or draining changed: re-advertise
        // (the advertiser decides whether the change is worth a packet).
        let changed = changes.has_changed().unwrap_or(false);
        if let Some(a) = advertiser.as_mut()
            && (changed || measured)
        {
            changes.borrow_and_update();
            if a.update(txt(&service.status()))? {
                tracing::debug!("advertisement updated");
            }
        }
    }
    let _ = stop_tx.send(());
    endpoint.close(service::quic::CLOSE_STOPPING.into(), b"agent stopping");
    if let Some(a) = advertiser {
        tracing::info!("saying goodbye");
        a.shutdown()?;
    }
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    });
    server.abort();
    timer.abort();
    handover.abort();
    let _ = std::fs::remove_file(&socket);
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Where the store's items are, for measuring free space.
fn store_root(spec: &StoreSpec, store_dir: &str) -> PathBuf {
    match spec {
        StoreSpec::Embedded(root) => root.join("store"),
        _ => PathBuf::from(store_dir),
    }
}

/// The hand-over socket, readable by this user only: whoever can connect
/// still has to prove a master's key. We hold the state directory's lock,
/// so a socket already there is a dead agent's.
fn bind_local(socket: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| socket.display().to_string())?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn serve_local(service: Arc<Service>, listener: std::os::unix::net::UnixListener) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("hand-over socket: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    let (r, w) = stream.into_split();
                    if let Err(e) = service::stdio::serve(service, r, w).await {
                        tracing::info!("stdio session: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("hand-over socket: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
