//! The `offload-agent` binary: parse the command line, set up logging on
//! stderr, handle signals, and run the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use offload_agent::{advertise::Advertiser, probe};
use offload_core::dnssd::Txt;
use offload_files::{key_file, paths};

mod build_cmd;

/// offload-agent: makes this machine a build machine for offload masters on the LAN.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Advertise this machine over DNS-SD until SIGTERM or SIGINT (which
    /// send goodbye packets). SIGUSR1 starts draining: the agent advertises
    /// `draining=1` and masters stop choosing it.
    ///
    /// In this version the agent only advertises: the QUIC service that
    /// takes builds comes in a later version.
    Run(RunArgs),
    /// Build derivations with a store backend and print one
    /// `OUTPUT-NAME PATH` line per output of each (for operators checking
    /// an agent's store, and for tests). Build logs go to stderr.
    ///
    /// Exit status: 0 if everything was built (or valid already), 100 if a
    /// build failed, 101 if one timed out, 2 for any other error.
    Build(build_cmd::BuildArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Instance and host name to advertise [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Systems this machine builds for, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    systems: Vec<String>,
    /// Supported features, comma-separated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Relative speed [default: measured by a short benchmark].
    #[arg(long)]
    speed: Option<f64>,
    /// Concurrent builds.
    #[arg(long, default_value_t = 1)]
    parallel_builds: u32,
    /// The signing key whose fingerprint is advertised [default: $GUIX_CONFIGURATION_DIRECTORY/signing-key.sec].
    #[arg(long)]
    key: Option<PathBuf>,
    /// The logical store directory.
    #[arg(long, default_value = "/gnu/store")]
    store_dir: String,
    /// The UDP port masters connect to.
    #[arg(long, default_value_t = 7441)]
    port: u16,
    /// SSH fallback, advertised as USER@PORT.
    #[arg(long)]
    ssh: Option<String>,
    /// Only use these interfaces for mDNS (repeatable) [default: all].
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Seconds between measurements of load and free disk.
    #[arg(long, default_value_t = 2.0)]
    update_secs: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Build(args) => match build_cmd::run(args) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("offload-agent: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

/// The host name's first label (a DNS-SD instance name has no dots).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| h.trim().split('.').next().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "offload-agent".into())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    // SIGUSR1: start draining (advertised at once; masters stop sending work).
    let drain = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&drain))
        .context("installing signal handlers")?;
    let key_path = args.key.clone().unwrap_or_else(paths::default_secret_key);
    let key = key_file::load_secret(&key_path)?;
    let speed = args.speed.unwrap_or_else(probe::measure_speed);
    let ssh = match &args.ssh {
        None => None,
        Some(s) => {
            let (user, port) = s.rsplit_once('@').context("--ssh must be USER@PORT")?;
            Some((user.to_owned(), port.parse().context("--ssh port")?))
        }
    };
    let store = std::path::PathBuf::from(&args.store_dir);
    let txt = |load: f64, disk: u64, draining: bool| Txt {
        systems: args.systems.clone(),
        features: args.features.clone(),
        speed,
        slots: args.parallel_builds,
        free: args.parallel_builds,
        load,
        disk,
        key: key.public_key().fingerprint(),
        store: args.store_dir.clone(),
        ssh: ssh.clone(),
        draining,
        stopping: false,
    };
    let measure = || {
        txt(
            probe::normalized_load().unwrap_or(0.0),
            probe::free_disk(&store).unwrap_or(0),
            drain.load(Ordering::Relaxed),
        )
    };
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut advertiser = Advertiser::start(&name, args.port, measure(), &args.interfaces)?;
    tracing::info!(name = %name, speed, fullname = advertiser.fullname(), "advertising");
    let tick = Duration::from_millis(100);
    let mut since_update = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        since_update += tick;
        let drain_requested = drain.load(Ordering::Relaxed) && !advertiser.txt().draining;
        if drain_requested || since_update.as_secs_f64() >= args.update_secs {
            since_update = Duration::ZERO;
            if advertiser.update(measure())? {
                tracing::debug!("advertisement updated");
            }
        }
    }
    tracing::info!("stopping: saying goodbye");
    advertiser.shutdown()?;
    Ok(())
}
