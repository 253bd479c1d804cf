//! `offload-agent build --store SPEC DRV...`

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::embedded::build::{BuildEvent, BuildOptions, BuildStatus};
use offload_store::spec::StoreSpec;
use offload_store::store::Store;

/// Exit status when a build failed.
const EXIT_FAILED: u8 = 100;
/// Exit status when a build timed out (and none failed otherwise).
const EXIT_TIMED_OUT: u8 = 101;

/// Arguments of `offload-agent build`.
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The store to build in: embedded:DIR, nix-daemon, guix-daemon (or
    /// nix-daemon:SOCKET, guix-daemon:SOCKET).
    #[arg(long, value_name = "SPEC")]
    store: StoreSpec,
    /// The logical store directory (for embedded stores; daemons imply theirs).
    #[arg(long, default_value = "/gnu/store")]
    store_dir: String,
    /// Kill a build silent for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_silent_time: Option<u64>,
    /// Kill a build running for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Builds at once.
    #[arg(long, default_value_t = 1)]
    max_jobs: usize,
    /// Cores per build (`NIX_BUILD_CORES`; 0: all).
    #[arg(long, default_value_t = 0)]
    cores: u32,
    /// Keep the build directory of failed builds.
    #[arg(long)]
    keep_failed: bool,
    /// The derivations (`.drv` store paths, valid in the store).
    #[arg(required = true, value_name = "DRV")]
    drvs: Vec<String>,
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<u8> {
    crate::options::prepare_process();
    let store_dir = StoreDir::new(&args.store_dir)?;
    let drvs = args
        .drvs
        .iter()
        .map(|d| {
            StorePath::parse_in(&store_dir, d)
                .with_context(|| format!("{d}: not a derivation in {store_dir}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = BuildOptions {
        max_silent_time: args.max_silent_time.map(Duration::from_secs),
        timeout: args.timeout.map(Duration::from_secs),
        max_jobs: args.max_jobs.max(1),
        cores: args.cores,
        keep_failed: args.keep_failed,
        ..BuildOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        let mut store = Store::open(&args.store, store_dir)
            .await
            .with_context(|| format!("opening {}", args.store))?;
        let mut report = |e: BuildEvent| {
            let mut err = std::io::stderr().lock();
            let _ = match e {
                BuildEvent::Started { drv } => writeln!(err, "building '{drv}'..."),
                BuildEvent::Log { line, .. } => {
                    err.write_all(&line).and_then(|()| err.write_all(b"\n"))
                }
                BuildEvent::Built { .. } => Ok(()),
                BuildEvent::Failed { message, .. } => writeln!(err, "error: {message}"),
            };
        };
        store
            .build(&drvs, &opts, &mut report)
            .await
            .map_err(anyhow::Error::from)
    })?;
    let mut out = std::io::stdout().lock();
    let mut code = 0;
    for r in &results {
        match r.status {
            s if s.is_success() => {
                for (name, path) in &r.outputs {
                    writeln!(out, "{name} {path}")?;
                }
            }
            BuildStatus::TimedOut if code == 0 => code = EXIT_TIMED_OUT,
            _ => code = EXIT_FAILED,
        }
    }
    out.flush()?;
    Ok(code)
}
