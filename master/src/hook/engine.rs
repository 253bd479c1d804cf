//! What both front ends share: the plan (from `serve` or an own look),
//! locality, the claim (a Guile-compatible slot lock and an agent's lease,
//! or a machine's own daemon over SSH), and the build with failover.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::spec::StoreSpec;
use offload_store::store::Store;

use super::locality::{self, Probed};
use super::plan::{self, Ask, Choice, Plan};
use super::request::BuildRequest;
use super::slots::{Slot, Slots};
use super::{Args, EXIT_BUILD_FAILED, EXIT_TIMED_OUT, LOST_BACKOFF_MS, MAX_ATTEMPTS, Setup, Voice};
use crate::agent_link::AgentLink;
use crate::transfer::{self, Done, Job};

/// Where the plan comes from.
enum Planner {
    /// A running `serve`.
    Serve(PathBuf),
    /// Our own look, taken once per process and reused for a while.
    Own {
        pool: Option<(crate::pool::Pool, Instant)>,
    },
}

/// How long our own look at the pool is reused (declines and postpones
/// keep the process for the next request).
const OWN_LOOK_TTL: Duration = Duration::from_secs(5);

/// What both front ends share: the plan, the claim (slot lock and lease),
/// locality, the build with failover.
pub(crate) struct Hook {
    pub(super) voice: Voice,
    pub(super) args: Args,
    pub(super) setup: Setup,
    pub(super) runtime: tokio::runtime::Runtime,
    key: Arc<SecretKey>,
    acl: Arc<Acl>,
    planner: Planner,
    slots: Slots,
    /// The daemon's store, once opened.
    pub(super) store: Option<Store>,
}

impl Hook {
    pub(crate) fn new(args: Args, setup: Setup, voice: Voice) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let key = Arc::new(offload_files::key_file::load_secret(&setup.key)?);
        let acl = match offload_files::acl_file::load(&setup.acl) {
            Ok(acl) => acl,
            Err(offload_files::acl_file::Error::Missing(_)) => Acl::default(),
            Err(e) => return Err(e.into()),
        };
        let planner = if setup.nix_machines.is_empty()
            && std::os::unix::net::UnixStream::connect(&setup.socket).is_ok()
        {
            Planner::Serve(setup.socket.clone())
        } else {
            Planner::Own { pool: None }
        };
        Ok(Self {
            voice,
            slots: Slots::new(&setup.state_dir),
            args,
            setup,
            runtime,
            key,
            acl: Arc::new(acl),
            planner,
            store: None,
        })
    }

    pub(crate) fn plan(&mut self, req: &BuildRequest) -> anyhow::Result<Plan> {
        let ask = Ask {
            system: &req.system,
            features: &req.features,
            local_slot_free: req.local_slot_free,
        };
        match &mut self.planner {
            Planner::Serve(socket) => match crate::serve::ask_plan(socket, &ask) {
                Ok(plan) => return Ok(plan),
                Err(e) => {
                    tracing::warn!("offload-master serve did not answer ({e}); looking by myself");
                    self.planner = Planner::Own { pool: None };
                }
            },
            Planner::Own { .. } => {}
        }
        let Planner::Own { pool } = &mut self.planner else {
            unreachable!("set above");
        };
        if pool
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > OWN_LOOK_TTL)
        {
            let sources = crate::snapshot::Sources {
                machines: &self.setup.machines,
                acl: &self.setup.acl,
                key: &self.setup.key,
                browse: self.setup.browse,
                interfaces: &[],
                nix: &self.setup.nix_machines,
            };
            let (p, _, warnings) = crate::snapshot::take(&sources, &self.runtime)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            *pool = Some((p, Instant::now()));
        }
        let (p, _) = pool.as_ref().expect("filled above");
        // Without `serve` there is no memory of earlier failures: a
        // machine that did not answer just now counts as lost.
        Ok(plan::plan(p, &ask, 0, 0, seed()))
    }

    /// The daemon's store, opened on first use.
    pub(crate) fn take_store(&mut self) -> anyhow::Result<Store> {
        match self.store.take() {
            Some(s) => Ok(s),
            None => self
                .runtime
                .block_on(Store::open(&self.setup.store, self.setup.store_dir.clone()))
                .map_err(|e| {
                    anyhow::anyhow!("opening the daemon's store ({}): {e}", self.setup.store)
                }),
        }
    }

    /// `choices` re-ranked by what each lacks of the build's inputs.
    pub(crate) fn by_locality(&mut self, req: &BuildRequest, choices: Vec<Choice>) -> Vec<Probed> {
        if choices.len() < 2 {
            return locality::unprobed(choices);
        }
        let mut store = match self.take_store() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}: choosing without locality");
                return locality::unprobed(choices);
            }
        };
        let (key, acl) = (Arc::clone(&self.key), Arc::clone(&self.acl));
        let ranked = self.runtime.block_on(async {
            match locality::needed(&mut store, &req.drv).await {
                Ok(needed) => locality::rerank(choices, &needed, &key, &acl).await,
                Err(e) => {
                    tracing::warn!(
                        "reading the inputs of {}: {e}: choosing without locality",
                        req.drv
                    );
                    locality::unprobed(choices)
                }
            }
        });
        self.store = Some(store);
        ranked
    }

    /// A slot lock and a lease on the first machine of `candidates` (not
    /// in `skip`) that grants both; a link made while asking is used.
    pub(crate) fn claim(&mut self, candidates: &mut [Probed], skip: &[String]) -> Option<Claim> {
        for (choice, probe) in candidates.iter_mut() {
            if skip.contains(&choice.name) {
                continue;
            }
            let slot = match self
                .slots
                .acquire(&choice.slot_name, choice.slot_port, choice.slots)
            {
                Ok(Some(slot)) => slot,
                Ok(None) => continue,
                Err(e) => {
                    self.voice.say(&format!(
                        "offload-master hook: cannot lock a build slot of '{}' under {}: {e}",
                        choice.name,
                        self.setup.state_dir.join("offload").display()
                    ));
                    continue;
                }
            };
            let (key, acl, target, probe) = (
                Arc::clone(&self.key),
                Arc::clone(&self.acl),
                choice.target.clone(),
                probe.take(),
            );
            let dialect = match self.voice {
                Voice::Nix => offload_store::daemon::Dialect::Nix,
                Voice::Guix => offload_store::daemon::Dialect::Guix,
            };
            let store_dir = self.setup.store_dir.clone();
            let linked = self.runtime.block_on(async move {
                let link = match probe {
                    Some(link) => link,
                    None => match crate::links::connect(&target, &key, acl).await {
                        Ok(link) => link,
                        // No agent there: a Nix machine's own daemon over
                        // SSH, as Nix's build-remote reaches it.
                        Err(crate::agent_link::LinkError::Unreachable(why))
                            if target.ssh.is_some() =>
                        {
                            let route = target.ssh.as_ref().expect("checked");
                            return remote_daemon(route, store_dir, dialect)
                                .await
                                .map(|store| Conn::Daemon(Box::new(store)))
                                .map_err(|e| {
                                    crate::agent_link::LinkError::Unreachable(format!(
                                        "{why}; its daemon over SSH: {e}"
                                    ))
                                });
                        }
                        Err(e) => return Err(e),
                    },
                };
                match link.lease().await {
                    Ok(lease) => Ok(Conn::Agent {
                        link: Box::new(link),
                        lease,
                    }),
                    Err(e) => {
                        link.close().await;
                        Err(e)
                    }
                }
            });
            match linked {
                Ok(conn) => {
                    return Some(Claim {
                        choice: choice.clone(),
                        slot,
                        conn,
                    });
                }
                Err(e) => {
                    tracing::info!(machine = %choice.name, "not used: {e}");
                    self.slots.release(slot);
                }
            }
        }
        None
    }

    /// Build the derivation of `req` (whose build needs `inputs` and whose
    /// missing outputs are `outputs`) on the machine of `first`, failing
    /// over to the next of `candidates`; the exit status.
    pub(crate) fn build(
        &mut self,
        req: &BuildRequest,
        inputs: &[StorePath],
        outputs: &[StorePath],
        first: Claim,
        mut candidates: Vec<Probed>,
    ) -> anyhow::Result<u8> {
        let drv = &req.drv;
        let job = Job {
            drv,
            inputs,
            outputs,
            max_silent_secs: self.args.max_silent_secs,
            timeout_secs: self.args.timeout_secs,
        };
        let mut store = self.take_store()?;
        let mut sink = HookSink::new(drv, self.args.trace, self.voice);
        let mut tried: Vec<String> = Vec::new();
        let mut claim = Some(first);
        while let Some(c) = claim.take() {
            tried.push(c.choice.name.clone());
            sink.machine = c.choice.name.clone();
            let Claim { choice, slot, conn } = c;
            let transport = match &conn {
                Conn::Agent { link, .. } => link.transport(),
                Conn::Daemon(_) => "SSH (the machine's daemon)",
            };
            if transport != "QUIC" {
                self.voice
                    .say(&format!("reaching '{}' over {transport}", choice.name));
            }
            let (key, acl) = (Arc::clone(&self.key), Arc::clone(&self.acl));
            let result = self.runtime.block_on(async {
                let mut home = transfer::Home {
                    store: &mut store,
                    key: &key,
                    acl: &acl,
                };
                match conn {
                    Conn::Agent { link, lease } => {
                        let remote = transfer::Remote {
                            link: &link,
                            lease,
                            name: &choice.name,
                        };
                        let r = transfer::offload(&remote, &job, &mut home, &mut sink).await;
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), link.release(lease.id))
                                .await;
                        (*link).close().await;
                        r
                    }
                    Conn::Daemon(mut remote) => {
                        transfer::offload_to_daemon(
                            &mut remote,
                            &choice.name,
                            &job,
                            &mut home,
                            &mut sink,
                        )
                        .await
                    }
                }
            });
            self.slots.release(slot);
            match result {
                Ok(Done::Built(stats)) => {
                    self.voice.say(&format!(
                        "offloaded '{}' to '{}': sent {} bytes, received {} bytes, build {:.3} s, transfer {:.3} s, over {transport}",
                        req.drv,
                        choice.name,
                        stats.bytes_sent,
                        stats.bytes_received,
                        stats.build_secs,
                        stats.transfer_secs
                    ));
                    self.voice
                        .say(&format!("done with offloaded '{}'", req.drv));
                    return Ok(0);
                }
                Ok(Done::Failed {
                    timed_out, message, ..
                }) => {
                    self.voice.say(&format!(
                        "derivation '{}' offloaded to '{}' failed: {message}",
                        req.drv, choice.name
                    ));
                    return Ok(if timed_out {
                        EXIT_TIMED_OUT
                    } else {
                        EXIT_BUILD_FAILED
                    });
                }
                Err(e) if e.can_fail_over() && tried.len() < MAX_ATTEMPTS => {
                    self.voice.say(&format!(
                        "lost '{}' while building '{}': {e}; trying another machine",
                        choice.name, req.drv
                    ));
                    self.lost(&choice.name);
                    claim = self.claim(&mut candidates, &tried);
                    if claim.is_none() {
                        // Ask again: the pool may know other machines by now.
                        if let Ok(Plan::Accept(more)) = self.plan(req) {
                            claim = self.claim(&mut locality::unprobed(more), &tried);
                        }
                    }
                    if claim.is_none() {
                        anyhow::bail!(
                            "no other machine could take '{}' after losing '{}'",
                            req.drv,
                            choice.name
                        );
                    }
                }
                Err(e) => {
                    if e.can_fail_over() {
                        self.lost(&choice.name);
                    }
                    anyhow::bail!("offloading '{}' to '{}': {e}", req.drv, choice.name);
                }
            }
        }
        anyhow::bail!("no machine to build '{}'", req.drv)
    }

    /// Tell `serve` that `name` lost a build (without `serve`, our own
    /// plan forgets the machine for the rest of this process).
    fn lost(&mut self, name: &str) {
        match &mut self.planner {
            Planner::Serve(socket) => {
                if let Err(e) = crate::serve::report_lost(socket, name) {
                    tracing::warn!("could not tell offload-master serve that {name} was lost: {e}");
                }
            }
            Planner::Own { pool } => {
                if let Some((p, _)) = pool {
                    p.lost_build(name, 0, LOST_BACKOFF_MS);
                }
            }
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id())
}

/// How a claimed machine is reached.
enum Conn {
    /// Its agent, with a lease on one of its slots.
    Agent {
        link: Box<AgentLink>,
        lease: crate::agent_link::Lease,
    },
    /// Its daemon's worker protocol (a Nix machine without an agent).
    Daemon(Box<Store>),
}

/// The machine's daemon over SSH, the host key pinned, as a store: `ssh
/// HOST nix-daemon --stdio` (`OFFLOAD_REMOTE_NIX_DAEMON`), or for Guix a
/// proxy to its daemon's socket, `socat - UNIX-CONNECT:/var/guix/daemon-socket/socket`
/// (`OFFLOAD_REMOTE_GUIX_DAEMON`; the far side needs socat).
async fn remote_daemon(
    route: &crate::agent_link::ssh::SshRoute,
    store_dir: StoreDir,
    dialect: offload_store::daemon::Dialect,
) -> anyhow::Result<Store> {
    let (variable, default) = match dialect {
        offload_store::daemon::Dialect::Nix => ("OFFLOAD_REMOTE_NIX_DAEMON", "nix-daemon --stdio"),
        offload_store::daemon::Dialect::Guix => (
            "OFFLOAD_REMOTE_GUIX_DAEMON",
            "socat - UNIX-CONNECT:/var/guix/daemon-socket/socket",
        ),
    };
    let remote = std::env::var(variable)
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default.into());
    let (known, args) = crate::agent_link::ssh::command_line(route, &remote)?;
    let conn = offload_store::daemon::spawn_stdio(std::path::Path::new("ssh"), &args, &[])?;
    let at = std::path::PathBuf::from(format!("ssh://{}@{}", route.user, route.host));
    let label = match dialect {
        offload_store::daemon::Dialect::Nix => StoreSpec::NixDaemon(at),
        offload_store::daemon::Dialect::Guix => StoreSpec::GuixDaemon(at),
    };
    let store = tokio::time::timeout(
        Duration::from_secs(30),
        Store::over(conn, dialect, store_dir, label),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from the daemon within 30 s"))??;
    drop(known);
    Ok(store)
}

/// A machine claimed for one build: its slot lock, link and lease.
pub(crate) struct Claim {
    pub(crate) choice: Choice,
    slot: Slot,
    conn: Conn,
}

/// Progress to stderr, the build log to fd 4.
struct HookSink {
    voice: Voice,
    drv: String,
    machine: String,
    trace: bool,
    log: Box<dyn Write + Send>,
}

impl HookSink {
    fn new(drv: &StorePath, trace: bool, voice: Voice) -> Self {
        // fd 4 is the daemon's log pipe; opening it anew through /proc
        // gives another descriptor of the same pipe (fd 4 itself stays
        // open until we exit). Without it (run by hand), the log goes to
        // stderr.
        let log: Box<dyn Write + Send> = match std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/fd/4")
        {
            Ok(f) => Box::new(f),
            Err(_) => Box::new(std::io::stderr()),
        };
        Self {
            voice,
            drv: drv.to_string(),
            machine: String::new(),
            trace,
            log,
        }
    }
}

impl transfer::Sink for HookSink {
    fn message(&mut self, line: &str) {
        self.voice.say(line);
    }

    fn log(&mut self, bytes: &[u8]) {
        let _ = self.log.write_all(bytes).and_then(|()| self.log.flush());
    }

    fn building(&mut self) {
        if self.trace {
            self.voice
                .say(&format!("@ build-remote {} {}", self.drv, self.machine));
        }
    }
}
