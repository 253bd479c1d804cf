//! The embedded store's derivation builder: Nix 2.8's local builds without
//! sandbox (`builder.md`), with the store shown at its logical path when
//! it lives elsewhere.
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
//!    `tmp/nix-build-<drv name>-<N>` (0700) with Nix's environment (below),
//!    streaming its log as events and into `var/log/drvs/XX/REST`, under
//!    the silence, time and log-size limits (modules `runner`, `sandbox`);
//! 3. **checks** the outputs (module `outputs`): present, canonical,
//!    hashed, references scanned among the input closure and the outputs,
//!    fixed-output hash verified;
//! 4. **registers** all outputs of a derivation in one transaction,
//!    referenced outputs first, deriver = the `.drv`. On any failure the
//!    outputs are deleted and nothing is registered.
//!
//! The environment (Nix 2.8 `initEnv`): `PATH=/path-not-set`,
//! `HOME=/homeless-shelter`, `NIX_STORE`, `NIX_BUILD_CORES`, then the
//! derivation's variables (those listed in `passAsFile` are written to
//! `.attr-<nixbase32(sha256(name))>` in the build directory and passed as
//! `<name>Path`), then `NIX_BUILD_TOP` `TMPDIR` `TEMPDIR` `TMP` `TEMP` `PWD`
//! = the build directory, for fixed outputs `NIX_OUTPUT_CHECKED=1` and the
//! `impureEnvVars` taken from this process, and `NIX_LOG_FD=2`,
//! `TERM=xterm-256color`.
//!
//! Builds go on after a failure (Nix's `--keep-going`); dependents of a
//! failed build fail with `DependencyFailed`. Two derivations with an
//! output in common never run at once.
//!
//! Not covered: output locks against *other processes* building into the
//! same store (the `&mut` store excludes other builds in this process
//! only), `requiredSystemFeatures`, `maxSize`/`maxClosureSize` (structured
//! attributes only), `@nix` JSON log lines (passed on as plain lines).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use offload_core::derivation::{self, Derivation};
use offload_core::nixbase32;
use offload_core::store_path::StorePath;
use offload_files::atomic;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::EmbeddedStore;
use super::drv_paths::{self, DrvHashes, HashAlgo, Kind};
use super::outputs::{self, RefCheck};
use super::runner::{self, Ended};
use super::sandbox::{Isolation, Namespace, Programs, Spec};
use crate::db::{self, Registration};
use crate::info::PathInfo;
use crate::local::LocalStore;

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
    /// The store's real directory differs from its logical one, and the
    /// programs to show it at its logical path are missing.
    #[error("cannot show the store at its logical path: {0}")]
    Sandbox(String),
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
    store: &mut EmbeddedStore,
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

/// One derivation of the plan.
struct Node {
    drv: StorePath,
    parsed: Derivation,
    /// What kind of derivation it is (or why it cannot be built, which
    /// matters only if it must be).
    kind: Result<Kind, String>,
    outputs: BTreeMap<String, StorePath>,
    /// The outputs dependents or the request need (`None`: all).
    wanted: Option<BTreeSet<String>>,
    /// Its reference checks, resolved to paths (set by the planner).
    ref_checks: Vec<(RefCheck, BTreeSet<StorePath>)>,
    deps: Vec<usize>,
    state: State,
}

enum State {
    /// To expand (dependencies not looked at yet).
    New,
    Waiting,
    Running,
    Done {
        status: BuildStatus,
        message: Option<String>,
        kept_build_dir: Option<PathBuf>,
    },
}

impl Node {
    fn result(&self) -> BuildResult {
        let (status, message, kept) = match &self.state {
            State::Done {
                status,
                message,
                kept_build_dir,
            } => (*status, message.clone(), kept_build_dir.clone()),
            // The scheduler finishes every node.
            _ => (
                BuildStatus::MiscFailure,
                Some("internal error: build not finished".into()),
                None,
            ),
        };
        BuildResult {
            drv: self.drv.clone(),
            status,
            outputs: self.outputs.clone(),
            message,
            kept_build_dir: kept,
        }
    }

    /// Nix's goal name: `building of 'DRV!OUTPUTS' from .drv file`.
    fn goal_name(&self) -> String {
        let outputs = match &self.wanted {
            None => "*".to_owned(),
            Some(w) => w.iter().cloned().collect::<Vec<_>>().join(","),
        };
        format!("building of '{}!{outputs}' from .drv file", self.drv)
    }

    fn done(&self) -> Option<BuildStatus> {
        match &self.state {
            State::Done { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads, checks and orders the derivations to build.
struct Planner<'a> {
    store: &'a LocalStore,
    hashes: DrvHashes,
    nodes: Vec<Node>,
    index: HashMap<StorePath, usize>,
}

impl<'a> Planner<'a> {
    fn new(store: &'a LocalStore) -> Self {
        Self {
            store,
            hashes: DrvHashes::default(),
            nodes: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The node of `drv`, created if needed (from `parsed` when given);
    /// `wanted` outputs (`None`: all).
    fn want(
        &mut self,
        drv: &StorePath,
        wanted: Option<&BTreeSet<String>>,
        parsed: Option<(Derivation, BTreeMap<String, StorePath>)>,
    ) -> Result<usize, Error> {
        if let Some(&i) = self.index.get(drv) {
            let node = &mut self.nodes[i];
            match (&mut node.wanted, wanted) {
                (Some(have), Some(more)) => have.extend(more.iter().cloned()),
                (w, None) => *w = None,
                (None, Some(_)) => {}
            }
            return Ok(i);
        }
        let (parsed, outputs) = match parsed {
            Some(p) => p,
            None => self.read(drv)?,
        };
        let kind = drv_paths::kind(&parsed);
        self.nodes.push(Node {
            drv: drv.clone(),
            parsed,
            kind,
            outputs,
            wanted: wanted.cloned(),
            ref_checks: Vec::new(),
            deps: Vec::new(),
            state: State::New,
        });
        let i = self.nodes.len() - 1;
        self.index.insert(drv.clone(), i);
        Ok(i)
    }

    /// Read a derivation of this store and its output paths.
    fn read(&self, drv: &StorePath) -> Result<(Derivation, BTreeMap<String, StorePath>), Error> {
        if drv.dir() != self.store.store_dir() {
            return Err(Error::Invalid(format!(
                "'{drv}' is not in the store directory {}",
                self.store.store_dir()
            )));
        }
        let parsed = load(self.store, drv)?;
        let outputs = parsed
            .outputs
            .iter()
            .map(|(name, o)| {
                StorePath::parse_in(self.store.store_dir(), &o.path)
                    .map(|p| (name.clone(), p))
                    .map_err(|e| Error::Invalid(format!("output '{name}' of '{drv}': {e}")))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok((parsed, outputs))
    }

    /// Expand every new node: already valid, or checked and depending on
    /// the input derivations whose needed outputs are missing.
    fn expand(mut self) -> Result<Vec<Node>, Error> {
        let mut queue: VecDeque<usize> = (0..self.nodes.len()).collect();
        while let Some(i) = queue.pop_front() {
            if !matches!(self.nodes[i].state, State::New) {
                continue;
            }
            let db = self.store.db();
            let mut valid = BTreeMap::new();
            for (name, path) in &self.nodes[i].outputs {
                valid.insert(name.clone(), db.is_valid(path)?);
            }
            let node = &self.nodes[i];
            if valid.values().all(|v| *v) {
                self.nodes[i].state = State::Done {
                    status: BuildStatus::AlreadyValid,
                    message: None,
                    kept_build_dir: None,
                };
                continue;
            }
            if let Some((name, _)) = valid.iter().find(|(_, v)| **v) {
                return Err(unsupported(
                    &node.drv,
                    format!(
                        "output '{name}' is valid but others are not (partial rebuilds are not supported)"
                    ),
                ));
            }
            self.check(i)?;
            let node = &self.nodes[i];
            for src in &node.parsed.input_srcs {
                let valid = match StorePath::parse_in(self.store.store_dir(), src) {
                    Ok(p) => db.is_valid(&p)?,
                    Err(_) => false,
                };
                if !valid {
                    return Err(Error::MissingInput {
                        drv: node.drv.clone(),
                        input: src.clone(),
                    });
                }
            }
            let inputs: Vec<(StorePath, BTreeSet<String>)> = node
                .parsed
                .input_drvs
                .iter()
                .map(|(p, o)| {
                    StorePath::parse_in(self.store.store_dir(), p)
                        .map(|p| (p, o.clone()))
                        .map_err(|e| Error::Invalid(format!("input of '{}': {e}", node.drv)))
                })
                .collect::<Result<_, _>>()?;
            let mut deps = Vec::new();
            for (input, wanted) in inputs {
                let (read, outputs) = match self.index.get(&input) {
                    Some(&j) => (None, self.nodes[j].outputs.clone()),
                    None => {
                        let (parsed, outputs) = self.read(&input)?;
                        (Some(parsed), outputs)
                    }
                };
                let mut missing = false;
                for o in &wanted {
                    let path = outputs.get(o).ok_or_else(|| {
                        Error::Invalid(format!(
                            "derivation '{input}' has no output '{o}', needed by '{}'",
                            self.nodes[i].drv
                        ))
                    })?;
                    missing |= !self.store.db().is_valid(path)?;
                }
                if missing {
                    let j = self.want(&input, Some(&wanted), read.map(|p| (p, outputs)))?;
                    deps.push(j);
                    queue.push_back(j);
                }
            }
            let node = &mut self.nodes[i];
            node.deps = deps;
            node.state = State::Waiting;
        }
        Ok(self.nodes)
    }

    /// Refuse what cannot be built faithfully; check the output paths.
    fn check(&mut self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let drv = &node.drv;
        let this = this_system();
        if node.parsed.system != this
            && !(this == "x86_64-linux" && node.parsed.system == "i686-linux")
        {
            return Err(unsupported(
                drv,
                format!(
                    "a '{}' is required to build it, but I am a '{this}'",
                    node.parsed.system
                ),
            ));
        }
        let builder = &node.parsed.builder;
        if builder.starts_with("builtin:") {
            return Err(unsupported(drv, format!("builtin builder '{builder}'")));
        }
        if !builder.starts_with('/') {
            return Err(unsupported(
                drv,
                format!("builder '{builder}' is not an absolute path"),
            ));
        }
        for (attr, what) in [
            ("__json", "structured attributes (__structuredAttrs) are"),
            ("exportReferencesGraph", "exportReferencesGraph is"),
        ] {
            if node.parsed.env.contains_key(attr) {
                return Err(unsupported(drv, format!("{what} not supported")));
            }
        }
        let kind = node
            .kind
            .as_ref()
            .map_err(|why| unsupported(drv, why.clone()))?;
        if let Kind::Fixed(f) = kind
            && f.algo != HashAlgo::Sha256
        {
            return Err(unsupported(
                drv,
                format!(
                    "fixed-output hash algorithm '{}' is not supported (only sha256)",
                    f.algo.name()
                ),
            ));
        }
        let store = self.store;
        let mut read = |p: &str| {
            let path = StorePath::parse_in(store.store_dir(), p).map_err(|e| e.to_string())?;
            load(store, &path).map_err(|e| e.to_string())
        };
        self.hashes
            .check_outputs(drv, &node.parsed, &mut read)
            .map_err(Error::Invalid)?;
        let mut ref_checks = Vec::new();
        for check in RefCheck::ALL {
            let Some(value) = node.parsed.env.get(check.attribute()) else {
                continue;
            };
            let mut spec = BTreeSet::new();
            for token in tokens(Some(value)) {
                let path = match StorePath::parse_in(self.store.store_dir(), token) {
                    Ok(p) => p,
                    Err(_) => node.outputs.get(token).cloned().ok_or_else(|| {
                        Error::Invalid(format!(
                            "derivation '{drv}' contains an illegal reference specifier '{token}'"
                        ))
                    })?,
                };
                spec.insert(path);
            }
            ref_checks.push((check, spec));
        }
        self.nodes[i].ref_checks = ref_checks;
        Ok(())
    }
}

fn unsupported(drv: &StorePath, why: String) -> Error {
    Error::Unsupported {
        drv: drv.clone(),
        why,
    }
}

/// The system type of this machine, as Nix names it.
fn this_system() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Read and parse a valid `.drv`.
fn load(store: &LocalStore, drv: &StorePath) -> Result<Derivation, Error> {
    if !store.db().is_valid(drv)? {
        return Err(Error::NotValid(drv.to_string()));
    }
    let file = store.real_path(drv);
    let mut text = Vec::new();
    fs::File::open(&file)
        .and_then(|f| {
            f.take(derivation::MAX_DRV_LEN as u64 + 1)
                .read_to_end(&mut text)
        })
        .map_err(io_at(&file))?;
    Derivation::parse(&text).map_err(|source| Error::Parse {
        path: drv.clone(),
        source,
    })
}

/// What a finished build task reports.
struct Finished {
    status: BuildStatus,
    message: Option<String>,
    infos: Vec<PathInfo>,
    kept_build_dir: Option<PathBuf>,
}

/// A log line of a running build.
type Line = (usize, Vec<u8>);

/// Runs the planned nodes.
struct Scheduler<'a> {
    store: &'a mut EmbeddedStore,
    nodes: Vec<Node>,
    opts: &'a BuildOptions,
    uid: u32,
    programs: Option<Programs>,
    running: JoinSet<(usize, Finished)>,
    tasks: HashMap<tokio::task::Id, usize>,
    busy_outputs: BTreeSet<StorePath>,
}

impl<'a> Scheduler<'a> {
    fn new(
        store: &'a mut EmbeddedStore,
        nodes: Vec<Node>,
        opts: &'a BuildOptions,
    ) -> Result<Self, Error> {
        let uid = rustix::process::geteuid().as_raw();
        let namespaced = store.local().real_dir() != Path::new(store.local().store_dir().as_str());
        let programs = if namespaced && nodes.iter().any(|n| matches!(n.state, State::Waiting)) {
            Some(Programs::find().map_err(Error::Sandbox)?)
        } else {
            None
        };
        Ok(Self {
            store,
            nodes,
            opts,
            uid,
            programs,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            busy_outputs: BTreeSet::new(),
        })
    }

    async fn run(
        mut self,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<Vec<Node>, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        loop {
            self.start_ready(&tx, events)?;
            if self.running.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some((i, line)) = rx.recv() => self.log(i, line, events),
                Some(joined) = self.running.join_next_with_id() => {
                    // The task sent its lines before it ended.
                    while let Ok((i, line)) = rx.try_recv() {
                        self.log(i, line, events);
                    }
                    let (i, finished) = self.ended(joined)?;
                    self.finish(i, finished, events);
                }
            }
        }
        // Whatever is left waits on a cycle (impossible for real stores).
        for node in &mut self.nodes {
            if node.done().is_none() {
                node.state = State::Done {
                    status: BuildStatus::DependencyFailed,
                    message: Some(format!("derivation '{}' depends on itself", node.drv)),
                    kept_build_dir: None,
                };
            }
        }
        Ok(self.nodes)
    }

    fn log(&self, i: usize, line: Vec<u8>, events: &mut (dyn FnMut(BuildEvent) + Send)) {
        events(BuildEvent::Log {
            drv: self.nodes[i].drv.clone(),
            line,
        });
    }

    /// Which node a task was for, and how it ended (a panic is a failure).
    fn ended(
        &mut self,
        joined: Result<(tokio::task::Id, (usize, Finished)), tokio::task::JoinError>,
    ) -> Result<(usize, Finished), Error> {
        match joined {
            Ok((id, done)) => {
                self.tasks.remove(&id);
                Ok(done)
            }
            Err(e) => {
                let message = format!("internal error: build task failed: {e}");
                let i = self
                    .tasks
                    .remove(&e.id())
                    .ok_or_else(|| Error::Invalid(message.clone()))?;
                let finished = Finished {
                    status: BuildStatus::MiscFailure,
                    message: Some(message),
                    infos: Vec::new(),
                    kept_build_dir: None,
                };
                Ok((i, finished))
            }
        }
    }

    /// Start what can start; settle what need not run.
    fn start_ready(
        &mut self,
        tx: &mpsc::UnboundedSender<Line>,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<(), Error> {
        let max_jobs = self.opts.max_jobs.max(1);
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                if self.running.len() >= max_jobs {
                    return Ok(());
                }
                if !matches!(self.nodes[i].state, State::Waiting) {
                    continue;
                }
                let deps: Vec<Option<BuildStatus>> = self.nodes[i]
                    .deps
                    .iter()
                    .map(|&d| self.nodes[d].done())
                    .collect();
                if deps.iter().any(Option::is_none) {
                    continue;
                }
                let failed = deps.iter().flatten().filter(|s| !s.is_success()).count();
                if failed > 0 {
                    let message = format!(
                        "{failed} dependencies of derivation '{}' failed to build",
                        self.nodes[i].drv
                    );
                    self.settle(i, BuildStatus::DependencyFailed, message, events);
                    progressed = true;
                    continue;
                }
                if self.nodes[i]
                    .outputs
                    .values()
                    .any(|o| self.busy_outputs.contains(o))
                {
                    continue;
                }
                let db = self.store.local().db();
                let mut all_valid = true;
                for o in self.nodes[i].outputs.values() {
                    all_valid &= db.is_valid(o)?;
                }
                if all_valid {
                    self.nodes[i].state = State::Done {
                        status: BuildStatus::AlreadyValid,
                        message: None,
                        kept_build_dir: None,
                    };
                    progressed = true;
                    continue;
                }
                match self.prepare(i) {
                    Ok(job) => {
                        events(BuildEvent::Started {
                            drv: self.nodes[i].drv.clone(),
                        });
                        self.busy_outputs
                            .extend(self.nodes[i].outputs.values().cloned());
                        self.nodes[i].state = State::Running;
                        let tx = tx.clone();
                        let handle = self.running.spawn(async move { (i, job.run(i, tx).await) });
                        self.tasks.insert(handle.id(), i);
                    }
                    Err(e) => {
                        self.settle(i, BuildStatus::MiscFailure, e.to_string(), events);
                    }
                }
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn settle(
        &mut self,
        i: usize,
        status: BuildStatus,
        message: String,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) {
        events(BuildEvent::Failed {
            drv: self.nodes[i].drv.clone(),
            message: message.clone(),
        });
        self.nodes[i].state = State::Done {
            status,
            message: Some(message),
            kept_build_dir: None,
        };
    }

    /// Register a finished build's outputs, or record its failure.
    fn finish(&mut self, i: usize, mut f: Finished, events: &mut (dyn FnMut(BuildEvent) + Send)) {
        for o in self.nodes[i].outputs.values() {
            self.busy_outputs.remove(o);
        }
        if f.status == BuildStatus::Built {
            let regs: Vec<Registration> = f
                .infos
                .drain(..)
                .map(|info| Registration {
                    info,
                    drv_outputs: Vec::new(),
                })
                .collect();
            let written = self.store.local_mut().db_mut().write(|tx| {
                for reg in &regs {
                    tx.register(reg)?;
                }
                Ok(())
            });
            if let Err(e) = written {
                remove_outputs(self.store.local(), &self.nodes[i].outputs);
                f.status = BuildStatus::MiscFailure;
                f.message = Some(format!(
                    "registering the outputs of '{}': {e}",
                    self.nodes[i].drv
                ));
            }
        }
        let node = &mut self.nodes[i];
        match (&f.status, &f.message) {
            (BuildStatus::Built, _) => events(BuildEvent::Built {
                drv: node.drv.clone(),
                outputs: node.outputs.clone(),
            }),
            (_, message) => events(BuildEvent::Failed {
                drv: node.drv.clone(),
                message: message.clone().unwrap_or_default(),
            }),
        }
        node.state = State::Done {
            status: f.status,
            message: f.message,
            kept_build_dir: f.kept_build_dir,
        };
    }

    /// Everything a build task needs, prepared with the store at hand.
    fn prepare(&mut self, i: usize) -> Result<Job, Error> {
        let local = self.store.local();
        let node = &self.nodes[i];
        let drv = &node.drv;
        // Leftovers of an interrupted build are not valid: delete them.
        remove_outputs(local, &node.outputs);

        // The paths the outputs may refer to.
        let mut roots: Vec<StorePath> = Vec::new();
        for src in &node.parsed.input_srcs {
            roots.push(
                StorePath::parse_in(local.store_dir(), src)
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            );
        }
        for (input, wanted) in &node.parsed.input_drvs {
            let dep = StorePath::parse_in(local.store_dir(), input)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let dep_drv = load(local, &dep)?;
            for o in wanted {
                let path = dep_drv
                    .outputs
                    .get(o)
                    .and_then(|o| StorePath::parse_in(local.store_dir(), &o.path).ok())
                    .ok_or_else(|| Error::Invalid(format!("'{dep}' has no output '{o}'")))?;
                roots.push(path);
            }
        }
        let input_graph = closure(local, roots)?;
        let mut candidates: BTreeMap<String, StorePath> = input_graph
            .keys()
            .cloned()
            .chain(node.outputs.values().cloned())
            .map(|p| (p.hash_part().to_owned(), p))
            .collect();
        candidates.retain(|_, p| p.dir() == local.store_dir());

        let build_dir = make_build_dir(&self.store.root().join("tmp"), drv)?;
        let result = self.job(i, &build_dir, candidates, input_graph);
        if result.is_err() {
            let _ = atomic::remove_tree(&build_dir);
        }
        result
    }

    fn job(
        &self,
        i: usize,
        build_dir: &Path,
        candidates: BTreeMap<String, StorePath>,
        input_graph: BTreeMap<StorePath, Vec<StorePath>>,
    ) -> Result<Job, Error> {
        let local = self.store.local();
        let node = &self.nodes[i];
        let drv = &node.drv;
        let logical = Path::new(local.store_dir().as_str());
        let isolation = match &self.programs {
            Some(programs) => {
                let mount_point = self.store.root().join("var/sandbox");
                fs::create_dir_all(&mount_point).map_err(io_at(&mount_point))?;
                Isolation::Namespace(Namespace {
                    mount_point,
                    real_store: local.real_dir().to_owned(),
                    logical_store: logical.to_owned(),
                    map_root_user: self.uid != 0,
                    programs: programs.clone(),
                })
            }
            None => {
                let home = Path::new(HOME_DIR);
                if home.exists() {
                    return Err(Error::Invalid(format!(
                        "home directory '{HOME_DIR}' exists; please remove it to assure purity of builds without sandboxing"
                    )));
                }
                Isolation::Direct
            }
        };
        let fixed = match &node.kind {
            Ok(Kind::Fixed(f)) => Some(f.clone()),
            _ => None,
        };
        let env = environment(
            local,
            &node.parsed,
            fixed.is_some(),
            build_dir,
            self.opts.cores,
        )?;
        let log_path = log_path(&self.store.root().join("var/log"), drv);
        if let Some(parent) = log_path.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let log = fs::File::create(&log_path).map_err(io_at(&log_path))?;
        Ok(Job {
            goal: node.goal_name(),
            spec: Spec {
                builder: node.parsed.builder.clone(),
                args: node.parsed.args.clone(),
                env,
                build_dir: build_dir.to_owned(),
                isolation,
            },
            limits: runner::Limits {
                max_silent_time: self.opts.max_silent_time,
                timeout: self.opts.timeout,
                max_log_size: self.opts.max_log_size,
            },
            log,
            check: outputs::Check {
                drv: drv.clone(),
                outputs: node
                    .outputs
                    .iter()
                    .map(|(name, path)| outputs::Output {
                        name: name.clone(),
                        path: path.clone(),
                        real: local.real_path(path),
                    })
                    .collect(),
                fixed,
                candidates,
                input_graph,
                ref_checks: node.ref_checks.clone(),
                uid: self.uid,
            },
            keep_failed: self.opts.keep_failed,
        })
    }
}

/// Nix's home directory for builders, which must not exist.
const HOME_DIR: &str = "/homeless-shelter";

/// One build, ready to run on its own.
struct Job {
    goal: String,
    spec: Spec,
    limits: runner::Limits,
    log: fs::File,
    check: outputs::Check,
    keep_failed: bool,
}

impl Job {
    async fn run(self, index: usize, lines: mpsc::UnboundedSender<Line>) -> Finished {
        let Self {
            goal,
            spec,
            limits,
            log,
            check,
            keep_failed,
        } = self;
        let mut send = |line: Vec<u8>| {
            let _ = lines.send((index, line));
        };
        let ended = runner::run(&spec, limits, log, &mut send).await;
        let drv = check.drv.clone();
        let seconds = |d: Option<Duration>| d.map_or(0, |d| d.as_secs());
        let (status, message, infos) = match ended {
            Ended::Exited(status) if status.success() => {
                let checked = tokio::task::spawn_blocking(move || {
                    let result = outputs::check(&check);
                    if result.is_err() {
                        remove_real_outputs(&check);
                    }
                    result
                })
                .await;
                match checked {
                    Ok(Ok(infos)) => (BuildStatus::Built, None, infos),
                    Ok(Err(why)) => (BuildStatus::OutputRejected, Some(why), Vec::new()),
                    Err(e) => (
                        BuildStatus::MiscFailure,
                        Some(format!("checking the outputs of '{drv}': {e}")),
                        Vec::new(),
                    ),
                }
            }
            ended => {
                let (status, message) = match ended {
                    Ended::Exited(status) => {
                        let (exit, text) = describe_exit(status);
                        (
                            BuildStatus::Failed(exit),
                            format!("builder for '{drv}' {text}"),
                        )
                    }
                    Ended::Silent => (
                        BuildStatus::TimedOut,
                        format!(
                            "{goal} timed out after {} seconds of silence",
                            seconds(limits.max_silent_time)
                        ),
                    ),
                    Ended::TooLong => (
                        BuildStatus::TimedOut,
                        format!("{goal} timed out after {} seconds", seconds(limits.timeout)),
                    ),
                    Ended::LogTooLong => (
                        BuildStatus::LogLimitExceeded,
                        format!(
                            "{goal} killed after writing more than {} bytes of log output",
                            limits.max_log_size.unwrap_or(0)
                        ),
                    ),
                    Ended::NotStarted(why) => (BuildStatus::MiscFailure, why),
                };
                let _ = tokio::task::spawn_blocking(move || remove_real_outputs(&check)).await;
                (status, Some(message), Vec::new())
            }
        };
        let kept_build_dir = if status != BuildStatus::Built && keep_failed {
            let _ = fs::set_permissions(&spec.build_dir, fs::Permissions::from_mode(0o755));
            Some(spec.build_dir.clone())
        } else {
            let dir = spec.build_dir.clone();
            let _ = tokio::task::spawn_blocking(move || atomic::remove_tree(&dir)).await;
            None
        };
        Finished {
            status,
            message,
            infos,
            kept_build_dir,
        }
    }
}

/// Nix's `statusToString`; the exit as an [`Exit`].
fn describe_exit(status: std::process::ExitStatus) -> (Exit, String) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return (Exit::Code(code), format!("failed with exit code {code}"));
    }
    match status.signal() {
        Some(sig) => (
            Exit::Signal(sig),
            format!("failed due to signal {sig} ({})", signal_name(sig)),
        ),
        None => (Exit::Code(-1), "died abnormally".to_owned()),
    }
}

/// `strsignal` for the usual signals.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        4 => "Illegal instruction",
        5 => "Trace/breakpoint trap",
        6 => "Aborted",
        7 => "Bus error",
        8 => "Floating point exception",
        9 => "Killed",
        10 => "User defined signal 1",
        11 => "Segmentation fault",
        12 => "User defined signal 2",
        13 => "Broken pipe",
        14 => "Alarm clock",
        15 => "Terminated",
        _ => "Unknown signal",
    }
}

/// The builder's environment (see the module documentation); writes the
/// `passAsFile` files into `build_dir`.
fn environment(
    store: &LocalStore,
    drv: &Derivation,
    fixed: bool,
    build_dir: &Path,
    cores: u32,
) -> Result<BTreeMap<String, String>, Error> {
    let top = build_dir.to_str().ok_or_else(|| {
        Error::Invalid(format!(
            "build directory {} is not UTF-8",
            build_dir.display()
        ))
    })?;
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/path-not-set".to_owned());
    env.insert("HOME".to_owned(), HOME_DIR.to_owned());
    env.insert("NIX_STORE".to_owned(), store.store_dir().to_string());
    env.insert("NIX_BUILD_CORES".to_owned(), cores.to_string());
    let pass_as_file: BTreeSet<&str> = tokens(drv.env.get("passAsFile"));
    for (k, v) in &drv.env {
        if pass_as_file.contains(k.as_str()) {
            let name = format!(
                ".attr-{}",
                nixbase32::encode(&drv_paths::sha256(k.as_bytes()))
            );
            let file = build_dir.join(&name);
            fs::write(&file, v).map_err(io_at(&file))?;
            env.insert(format!("{k}Path"), format!("{top}/{name}"));
        } else {
            env.insert(k.clone(), v.clone());
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        env.insert(k.to_owned(), top.to_owned());
    }
    if fixed {
        env.insert("NIX_OUTPUT_CHECKED".to_owned(), "1".to_owned());
        for k in tokens(drv.env.get("impureEnvVars")) {
            env.insert(k.to_owned(), std::env::var(k).unwrap_or_default());
        }
    }
    env.insert("NIX_LOG_FD".to_owned(), "2".to_owned());
    env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    Ok(env)
}

/// Nix's `tokenizeString`: words separated by spaces, tabs, CRs and LFs.
fn tokens(value: Option<&String>) -> BTreeSet<&str> {
    value
        .map(|v| {
            v.split([' ', '\t', '\n', '\r'])
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `tmp/nix-build-<drv name>-<N>`, mode 0700, the first N free from 0.
fn make_build_dir(tmp: &Path, drv: &StorePath) -> Result<PathBuf, Error> {
    fs::create_dir_all(tmp).map_err(io_at(tmp))?;
    for n in 0u32.. {
        let dir = tmp.join(format!("nix-build-{}-{n}", drv.name()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Err(Error::Invalid(format!(
        "no free build directory in {}",
        tmp.display()
    )))
}

/// `log/drvs/XX/REST` for drv basename `XXREST`, as Nix (uncompressed).
fn log_path(log_dir: &Path, drv: &StorePath) -> PathBuf {
    let base = drv.base();
    let (head, rest) = base.split_at(2);
    log_dir.join("drvs").join(head).join(rest)
}

/// The closure of `roots` by the registered references, with each path's
/// references.
fn closure(
    store: &LocalStore,
    roots: Vec<StorePath>,
) -> Result<BTreeMap<StorePath, Vec<StorePath>>, Error> {
    let mut seen = BTreeMap::new();
    let mut todo = roots;
    while let Some(p) = todo.pop() {
        if seen.contains_key(&p) {
            continue;
        }
        let info = store
            .db()
            .path_info(&p)?
            .ok_or_else(|| Error::NotValid(p.to_string()))?;
        todo.extend(
            info.references
                .iter()
                .filter(|r| !seen.contains_key(*r))
                .cloned(),
        );
        seen.insert(p, info.references);
    }
    Ok(seen)
}

/// Delete whatever is at the outputs' paths unless they are valid.
fn remove_outputs(store: &LocalStore, outputs: &BTreeMap<String, StorePath>) {
    for path in outputs.values() {
        if store.db().is_valid(path).unwrap_or(true) {
            continue;
        }
        let real = store.real_path(path);
        if let Err(e) = atomic::remove_tree(&real) {
            tracing::warn!("cannot remove {}: {e}", real.display());
        }
    }
}

/// Delete the outputs a failed build left (none of them is valid: the
/// planner refuses partly valid derivations).
fn remove_real_outputs(check: &outputs::Check) {
    for o in &check.outputs {
        if let Err(e) = atomic::remove_tree(&o.real) {
            tracing::warn!("cannot remove {}: {e}", o.real.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions() {
        use std::os::unix::process::ExitStatusExt;
        let (exit, text) = describe_exit(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (exit, text.as_str()),
            (Exit::Code(3), "failed with exit code 3")
        );
        let (exit, text) = describe_exit(std::process::ExitStatus::from_raw(9));
        assert_eq!(
            (exit, text.as_str()),
            (Exit::Signal(9), "failed due to signal 9 (Killed)")
        );
    }

    #[test]
    fn log_path_splits_after_two_characters() {
        let drv = StorePath::parse("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a.drv").unwrap();
        assert_eq!(
            log_path(Path::new("/r/var/log"), &drv),
            Path::new("/r/var/log/drvs/01/23456789abcdfghijklmnpqrsvwxyz-a.drv")
        );
    }

    #[test]
    fn tokens_split_like_nix() {
        let v = "a  b\tc\n\rd ".to_owned();
        assert_eq!(
            tokens(Some(&v)).into_iter().collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert!(tokens(None).is_empty());
    }
}
