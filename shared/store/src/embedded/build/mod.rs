//! The embedded store's derivation builder: Nix 2.8's (or guix-daemon's)
//! local builds (`builder.md`) in a sandbox modelled on theirs (module
//! `sandbox`), with the store shown at its logical path wherever it lives.
//!
//! [`build`] takes `.drv` paths that are valid in the store and:
//!
//! 1. **plans**: reads and parses each derivation (the parser's limits
//!    apply), refuses what it cannot build faithfully (another system,
//!    `builtin:` or relative builders, structured attributes,
//!    `exportReferencesGraph`, content-addressed or impure outputs,
//!    fixed-output hashes other than SHA-256, outputs partly valid), and
//!    checks that the output paths are the ones Nix would compute
//!    (`hashDerivationModulo`, module `drv_paths`). A derivation whose
//!    outputs are all valid is `AlreadyValid`; otherwise every input
//!    derivation whose needed outputs are not valid is planned first, and
//!    every input source must be valid;
//! 2. **runs** ready derivations, up to `max_jobs` at once, each in a fresh
//!    build directory `tmp/nix-build-<drv name>-<N>` (Guix:
//!    `guix-build-…`; 0700, the build user's) with the profile's
//!    environment (below), streaming its log as events and into
//!    `var/log/drvs/XX/REST`, under the silence, time and log-size limits
//!    (modules `runner`, `sandbox`). In the sandbox the builder sees only
//!    its input closure, read-only, in a scratch store where it creates
//!    its outputs. A sandbox is required when we are root: without one,
//!    nothing is built ([`Error::NoSandbox`]);
//! 3. **checks** the outputs (module `outputs`) once the builder and its
//!    whole PID namespace are gone, while they are still in the scratch
//!    store: present, the build user's, copied to fresh inodes if fixed
//!    (module `fresh`), canonical (then ours), hashed, references scanned
//!    among the input closure and the outputs, fixed-output hash
//!    verified; only then are they moved into the real store;
//! 4. **registers** all outputs of a derivation in one transaction,
//!    referenced outputs first, deriver = the `.drv`. On any failure the
//!    outputs are deleted and nothing is registered.
//!
//! The environment, [`Profile::Nix`] (Nix 2.8 `initEnv`):
//! `PATH=/path-not-set`, `HOME=/homeless-shelter`, `NIX_STORE`,
//! `NIX_BUILD_CORES`, then the derivation's variables (those listed in
//! `passAsFile` are written to `.attr-<nixbase32(sha256(name))>` in the
//! build directory and passed as `<name>Path`), then `NIX_BUILD_TOP`
//! `TMPDIR` `TEMPDIR` `TMP` `TEMP` `PWD` = the build directory as the
//! builder sees it (`/build` in the sandbox), for fixed outputs
//! `NIX_OUTPUT_CHECKED=1` and the `impureEnvVars` (from this process, or
//! only from [`BuildOptions::impure_env`]),
//! and `NIX_LOG_FD=2`, `TERM=xterm-256color`. [`Profile::Guix`]
//! (guix-daemon's `startBuilder`): the same without `passAsFile` (every
//! variable is copied verbatim), `NIX_OUTPUT_CHECKED`, `NIX_LOG_FD` and
//! `TERM`; the build directory is `/tmp/guix-build-<drv name>-0` in the
//! sandbox.
//!
//! Builds go on after a failure (Nix's `--keep-going`); dependents of a
//! failed build fail with `DependencyFailed`. Two derivations with an
//! output in common never run at once.
//!
//! Not covered: output locks against *other processes* building into the
//! same store (the `&mut` store excludes other builds in this process
//! only), `requiredSystemFeatures`, `maxSize`/`maxClosureSize` (structured
//! attributes only), `@nix` JSON log lines (passed on as plain lines),
//! seccomp filters, and Nix's pool of build users (one user serves every
//! build, module `sandbox`).

mod env;
mod job;
mod plan;
mod prepare;
mod schedule;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offload_core::derivation;
use offload_core::store_path::{StoreDir, StorePath};

use self::plan::Planner;
use self::schedule::Scheduler;
use super::EmbeddedStore;
use crate::db;

/// How builds run.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Kill a builder silent for this long (Nix `max-silent-time`).
    pub max_silent_time: Option<Duration>,
    /// Kill a builder running for this long (Nix `timeout`).
    pub timeout: Option<Duration>,
    /// Kill a builder that writes more log than this (Nix `max-build-log-size`).
    pub max_log_size: Option<u64>,
    /// `NIX_BUILD_CORES` (0: the builder may use every core).
    pub cores: u32,
    /// Most builders running at once (at least 1).
    pub max_jobs: usize,
    /// Keep the build directory of failed builds.
    pub keep_failed: bool,
    /// Whose builders to imitate (`None`: [`Profile::for_store_dir`] of
    /// the store).
    pub profile: Option<Profile>,
    /// The values of a fixed-output derivation's `impureEnvVars`: `None`
    /// takes them from this process's environment, as Nix does (for an
    /// operator's own command line); `Some` takes them only from this
    /// allow-list, names it lacks being empty (for builds that come from
    /// the network, which must not read the agent's environment).
    pub impure_env: Option<BTreeMap<String, String>>,
}

/// Whose builds the builder imitates: the environment, the build
/// directory's name and where the sandboxed builder sees it (see the
/// module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// guix-daemon.
    Guix,
    /// Nix 2.8's nix-daemon.
    Nix,
}

impl Profile {
    /// `Guix` for the store directory `/gnu/store`, else `Nix`.
    pub fn for_store_dir(dir: &StoreDir) -> Self {
        if dir.as_str() == "/gnu/store" {
            Self::Guix
        } else {
            Self::Nix
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            max_silent_time: None,
            timeout: None,
            max_log_size: None,
            cores: 0,
            max_jobs: 1,
            keep_failed: false,
            profile: None,
            impure_env: None,
        }
    }
}

/// What happens during [`build`], in order for each derivation:
/// `Started`, its `Log` lines, then `Built` or `Failed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildEvent {
    /// A builder was started.
    Started {
        /// The derivation.
        drv: StorePath,
    },
    /// A line of its output, without the newline.
    Log {
        /// The derivation.
        drv: StorePath,
        /// The line.
        line: Vec<u8>,
    },
    /// Its outputs are registered.
    Built {
        /// The derivation.
        drv: StorePath,
        /// Its outputs by name.
        outputs: BTreeMap<String, StorePath>,
    },
    /// It failed (also for a dependency's failure, without `Started`).
    Failed {
        /// The derivation.
        drv: StorePath,
        /// Why, as Nix says it.
        message: String,
    },
}

/// How a builder process ended, when it ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It failed; the daemon that ran it did not say how.
    Unknown,
}

/// The outcome for one derivation (Nix's `BuildResult::Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    /// Built and registered now.
    Built,
    /// Every output was valid already; nothing ran.
    AlreadyValid,
    /// The builder failed.
    Failed(Exit),
    /// Killed for silence or for running too long.
    TimedOut,
    /// Killed for writing too much log.
    LogLimitExceeded,
    /// The builder succeeded but its outputs were refused (missing,
    /// unsupported file types, hash mismatch, …).
    OutputRejected,
    /// A dependency failed, so it was not attempted.
    DependencyFailed,
    /// It could not be started or its outputs not registered.
    MiscFailure,
}

impl BuildStatus {
    /// `Built` or `AlreadyValid`.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Built | Self::AlreadyValid)
    }
}

/// The outcome of [`build`] for one requested derivation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    /// The derivation.
    pub drv: StorePath,
    /// What happened.
    pub status: BuildStatus,
    /// Its outputs by name (valid when `status` is a success).
    pub outputs: BTreeMap<String, StorePath>,
    /// Why it failed, as Nix says it.
    pub message: Option<String>,
    /// The build directory, kept because of `keep_failed`.
    pub kept_build_dir: Option<PathBuf>,
}

/// Why nothing was built: a request that cannot be planned, or a store
/// that cannot be read. Failures of individual builds are in their
/// [`BuildResult`] instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A derivation to build or read is not valid in the store.
    #[error("derivation '{0}' is not valid in the store")]
    NotValid(String),
    /// An input source is not valid.
    #[error("input '{input}' of '{drv}' is not valid in the store")]
    MissingInput {
        /// The derivation.
        drv: StorePath,
        /// The input.
        input: String,
    },
    /// A `.drv` file does not parse.
    #[error("'{path}' is not a derivation: {source}")]
    Parse {
        /// The file's store path.
        path: StorePath,
        /// The cause.
        source: derivation::Error,
    },
    /// A derivation is inconsistent (wrong output paths, …).
    #[error("{0}")]
    Invalid(String),
    /// A derivation needs something this builder does not do.
    #[error("cannot build '{drv}': {why}")]
    Unsupported {
        /// The derivation.
        drv: StorePath,
        /// What is not supported.
        why: String,
    },
    /// The store's files could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// The store's real directory differs from its logical one, and no
    /// sandbox can show it at its logical path (programs or namespaces
    /// missing).
    #[error("cannot show the store at its logical path: {0}")]
    Sandbox(String),
    /// Every build user is busy (internal: the build waits).
    #[error("every build user is busy")]
    NoBuildUser,
    /// We are root and no sandbox can be made (programs missing, or
    /// namespaces not allowed): builders are never run as root.
    #[error(
        "cannot isolate builds: {0}; refusing to run builders as root without a sandbox (install util-linux's unshare, mount, setpriv and setsid, and bash, and allow mount, PID, IPC, UTS and network namespaces)"
    )]
    NoSandbox(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Build the derivations `drvs` (all their outputs), their missing
/// dependencies first; `events` hears of every step. One result per
/// requested derivation, in order.
pub async fn build(
    store: &EmbeddedStore,
    drvs: &[StorePath],
    opts: &BuildOptions,
    events: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<Vec<BuildResult>, Error> {
    let mut plan = Planner::new(store.local());
    let mut requested = Vec::with_capacity(drvs.len());
    for drv in drvs {
        requested.push(plan.want(drv, None, None)?);
    }
    let nodes = plan.expand()?;
    let nodes = Scheduler::new(store, nodes, opts)?.run(events).await?;
    Ok(requested.into_iter().map(|i| nodes[i].result()).collect())
}
