//! Planning: reading the requested derivations and their missing
//! dependencies into nodes, refusing what cannot be built faithfully.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;

use offload_core::derivation::{self, Derivation};
use offload_core::store_path::StorePath;

use super::env::tokens;
use super::{BuildResult, BuildStatus, Error, io_at};
use crate::embedded::drv_paths::{self, DrvHashes, HashAlgo, Kind};
use crate::embedded::outputs::RefCheck;
use crate::local::LocalStore;

/// One derivation of the plan.
pub(super) struct Node {
    pub(super) drv: StorePath,
    pub(super) parsed: Derivation,
    /// What kind of derivation it is (or why it cannot be built, which
    /// matters only if it must be).
    pub(super) kind: Result<Kind, String>,
    pub(super) outputs: BTreeMap<String, StorePath>,
    /// The outputs dependents or the request need (`None`: all).
    pub(super) wanted: Option<BTreeSet<String>>,
    /// Its reference checks, resolved to paths (set by the planner).
    pub(super) ref_checks: Vec<(RefCheck, BTreeSet<StorePath>)>,
    pub(super) deps: Vec<usize>,
    pub(super) state: State,
}

pub(super) enum State {
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
    pub(super) fn result(&self) -> BuildResult {
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
    pub(super) fn goal_name(&self) -> String {
        let outputs = match &self.wanted {
            None => "*".to_owned(),
            Some(w) => w.iter().cloned().collect::<Vec<_>>().join(","),
        };
        format!("building of '{}!{outputs}' from .drv file", self.drv)
    }

    pub(super) fn done(&self) -> Option<BuildStatus> {
        match &self.state {
            State::Done { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads, checks and orders the derivations to build.
pub(super) struct Planner<'a> {
    store: &'a LocalStore,
    hashes: DrvHashes,
    nodes: Vec<Node>,
    index: HashMap<StorePath, usize>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(store: &'a LocalStore) -> Self {
        Self {
            store,
            hashes: DrvHashes::default(),
            nodes: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The node of `drv`, created if needed (from `parsed` when given);
    /// `wanted` outputs (`None`: all).
    pub(super) fn want(
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
    pub(super) fn expand(mut self) -> Result<Vec<Node>, Error> {
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
pub(super) fn load(store: &LocalStore, drv: &StorePath) -> Result<Derivation, Error> {
    if !store.db().is_valid(drv)? {
        return Err(Error::NotValid(drv.to_string()));
    }
    let file = store.real_path(drv);
    let text = offload_files::bounded::read_file_at_most(&file, derivation::MAX_DRV_LEN as u64)
        .map_err(io_at(&file))?;
    Derivation::parse(&text).map_err(|source| Error::Parse {
        path: drv.clone(),
        source,
    })
}
