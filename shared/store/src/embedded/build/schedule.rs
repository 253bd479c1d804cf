//! Scheduling: running the planned nodes, up to `max_jobs` at once, and
//! registering their outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use offload_core::store_path::StorePath;
use offload_files::atomic;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::env::{HOME_DIR, environment, log_path, make_build_dir};
use super::job::{Finished, Job, Line};
use super::plan::{Node, State, load};
use super::{BuildEvent, BuildOptions, BuildStatus, Error, io_at};
use crate::db::Registration;
use crate::embedded::EmbeddedStore;
use crate::embedded::drv_paths::Kind;
use crate::embedded::outputs;
use crate::embedded::runner;
use crate::embedded::sandbox::{Isolation, Namespace, Programs, Spec};
use crate::local::LocalStore;

/// Runs the planned nodes.
pub(super) struct Scheduler<'a> {
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
    pub(super) fn new(
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

    pub(super) async fn run(
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
