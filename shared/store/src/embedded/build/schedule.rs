//! Scheduling: running the planned nodes, up to `max_jobs` at once, and
//! registering their outputs.
//!
//! A node's outputs are claimed in the store (module `claims`) before it
//! starts; the claim travels with its build task and is given back once
//! the outputs are registered, or with the task when the run is dropped
//! (after its builder is gone), so that two runs of this process — builds
//! for two masters — never build the same output at once: the second
//! waits for the first and then finds the outputs valid.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::job::{Finished, Line};
use super::plan::{Node, State};
use super::prepare::{Mode, prepare, remove_outputs};
use super::{BuildEvent, BuildOptions, BuildStatus, Error};
use crate::db::Registration;
use crate::embedded::EmbeddedStore;
use crate::embedded::sandbox::User;

/// Log lines buffered between the builders and the reader of the events.
const LOG_LINES_IN_FLIGHT: usize = 1024;

/// Runs the planned nodes.
pub(super) struct Scheduler<'a> {
    store: &'a EmbeddedStore,
    nodes: Vec<Node>,
    opts: &'a BuildOptions,
    mode: Mode,
    running: JoinSet<(usize, Finished)>,
    tasks: HashMap<tokio::task::Id, usize>,
    /// Whether a ready node waits for outputs another run is building (or
    /// for a build user).
    blocked: bool,
}

impl<'a> Scheduler<'a> {
    pub(super) fn new(
        store: &'a EmbeddedStore,
        nodes: Vec<Node>,
        opts: &'a BuildOptions,
    ) -> Result<Self, Error> {
        let needed = nodes.iter().any(|n| matches!(n.state, State::Waiting));
        let mode = Mode::choose(store, needed)?;
        Ok(Self {
            store,
            nodes,
            opts,
            mode,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            blocked: false,
        })
    }

    pub(super) async fn run(
        mut self,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<Vec<Node>, Error> {
        // Bounded: builders wait while the log's reader catches up.
        let (tx, mut rx) = mpsc::channel::<Line>(LOG_LINES_IN_FLIGHT);
        let mut releases = self.store.releases();
        loop {
            // Seen before looking, so a release after the look wakes us.
            releases.borrow_and_update();
            self.start_ready(&tx, events)?;
            if self.running.is_empty() {
                if !self.blocked {
                    break;
                }
                // Only builds of other runs hold us up.
                if releases.changed().await.is_err() {
                    break;
                }
                continue;
            }
            let blocked = self.blocked;
            tokio::select! {
                biased;
                Some((i, line)) = rx.recv() => self.log(i, line, events),
                Ok(()) = releases.changed(), if blocked => {}
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
                    claim: None,
                };
                Ok((i, finished))
            }
        }
    }

    /// Start what can start; settle what need not run.
    fn start_ready(
        &mut self,
        tx: &mpsc::Sender<Line>,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<(), Error> {
        let max_jobs = self.opts.max_jobs.max(1);
        self.blocked = false;
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
                // As root, no claim without a build user to build with
                // (claiming and giving back would wake us up at once).
                if matches!(
                    self.mode,
                    Mode::Sandbox {
                        user: User::Build { .. },
                        ..
                    }
                ) && !self.store.users().any_free()
                {
                    self.blocked = true;
                    continue;
                }
                let Some(claim) = self.store.claims().claim(self.nodes[i].outputs.values()) else {
                    self.blocked = true;
                    continue;
                };
                let db = self.store.local().db();
                let valid: Result<Vec<bool>, _> = self.nodes[i]
                    .outputs
                    .values()
                    .map(|o| db.is_valid(o))
                    .collect();
                if valid?.iter().all(|v| *v) {
                    drop(claim);
                    self.nodes[i].state = State::Done {
                        status: BuildStatus::AlreadyValid,
                        message: None,
                        kept_build_dir: None,
                    };
                    progressed = true;
                    continue;
                }
                match prepare(self.store, &self.nodes[i], self.opts, &self.mode, claim) {
                    Ok(job) => {
                        events(BuildEvent::Started {
                            drv: self.nodes[i].drv.clone(),
                        });
                        self.nodes[i].state = State::Running;
                        let tx = tx.clone();
                        let handle = self.running.spawn(async move { (i, job.run(i, tx).await) });
                        self.tasks.insert(handle.id(), i);
                    }
                    Err(Error::NoBuildUser) => {
                        // Every build user was taken since we looked.
                        self.blocked = true;
                        continue;
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
        if f.status == BuildStatus::Built {
            let regs: Vec<Registration> = f
                .infos
                .drain(..)
                .map(|info| Registration {
                    info,
                    drv_outputs: Vec::new(),
                })
                .collect();
            let written = self.store.local().db().write(|tx| {
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
        // Registered (or given up): the outputs may be claimed again.
        drop(f.claim.take());
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
}
