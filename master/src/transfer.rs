//! The transfer driver shared by the Guix and Nix front ends: given an
//! authenticated link to an agent and a lease on one of its slots, send
//! what it lacks of a derivation's closure (one export stream signed with
//! our key, in topological order), build, stream the log while the build
//! runs, fetch the outputs signed by the agent and import them into the
//! local store after checking every signature against our ACL.
//!
//! Streams are spooled to anonymous temporary files, in both directions:
//! memory stays flat whatever the closure's size, and nothing is imported
//! before the whole stream arrived. Each imported item is complete and
//! verified before it is registered; a crash leaves at most a temporary
//! copy that the next import sweeps.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom};
use std::time::{Duration, Instant};

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::proto::{BuildOutcome, BuildRequest, BuildStatus};
use offload_core::store_path::StorePath;
use offload_store::local::Signatures;
use offload_store::store::Store;

use crate::agent_link::{AgentLink, LinkError};

/// One derivation to build remotely.
pub struct Job<'a> {
    /// The `.drv`.
    pub drv: &'a StorePath,
    /// Everything the build needs (the `.drv` closure and the inputs).
    pub inputs: &'a [StorePath],
    /// The outputs to bring back.
    pub outputs: &'a [StorePath],
    /// Silence allowed, seconds (0: unlimited).
    pub max_silent_secs: u64,
    /// Build time allowed, seconds (0: unlimited).
    pub timeout_secs: u64,
}

/// Where the driver's news goes.
pub trait Sink: Send {
    /// A progress line for the user (no newline).
    fn message(&mut self, line: &str);
    /// Raw build log bytes.
    fn log(&mut self, bytes: &[u8]);
    /// The build starts on the agent now.
    fn building(&mut self) {}
}

/// What was moved and how long it took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Items sent.
    pub items_sent: usize,
    /// Bytes of export stream sent.
    pub bytes_sent: u64,
    /// Items received.
    pub items_received: usize,
    /// Bytes of export stream received.
    pub bytes_received: u64,
    /// Seconds spent building.
    pub build_secs: f64,
    /// Seconds spent sending and receiving.
    pub transfer_secs: f64,
}

/// How a job ended on the agent.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// Built (or valid there already); the outputs are registered here.
    Built(Stats),
    /// The build failed there; the log was delivered.
    Failed {
        /// Timed out rather than failed.
        timed_out: bool,
        /// The agent's message.
        message: String,
        /// What was moved.
        stats: Stats,
    },
}

/// Why a job could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent went away or broke the protocol: another machine may
    /// build it.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// Something on this host failed (the store, a spool file, a
    /// signature): another machine would not help.
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// Whether another machine could succeed where this one failed.
    pub fn can_fail_over(&self) -> bool {
        matches!(
            self,
            Self::Link(LinkError::Unreachable(_) | LinkError::Lost(_) | LinkError::Protocol(_))
        )
    }
}

fn local(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::Local(format!("{what}: {e}"))
}

/// `N store item(s)`, as Guix says it.
fn items(n: usize) -> String {
    format!("{n} store item{}", if n == 1 { "" } else { "s" })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

/// Back to the start of a spool file just written; its length.
fn rewind(file: &mut std::fs::File) -> Result<u64, Error> {
    file.seek(SeekFrom::End(0))
        .and_then(|n| file.seek(SeekFrom::Start(0)).map(|_| n))
        .map_err(|e| Error::Local(format!("rewinding the spool file: {e}")))
}

fn spool() -> Result<std::fs::File, Error> {
    tempfile::tempfile().map_err(|e| Error::Local(format!("creating a spool file: {e}")))
}

/// The agent a job goes to.
pub struct Remote<'a> {
    /// The authenticated link.
    pub link: &'a AgentLink,
    /// The lease on one of its slots.
    pub lease: crate::agent_link::Lease,
    /// Its name in messages.
    pub name: &'a str,
}

/// This host's side.
pub struct Home<'a> {
    /// The store inputs come from and outputs go to.
    pub store: &'a mut Store,
    /// Our signing key (inputs are signed with it).
    pub key: &'a SecretKey,
    /// Outputs must be signed by a key in it.
    pub acl: &'a Acl,
}

/// Run `job` on `remote`. The lease is renewed while the transfers run.
pub async fn offload(
    remote: &Remote<'_>,
    job: &Job<'_>,
    home: &mut Home<'_>,
    sink: &mut dyn Sink,
) -> Result<Done, Error> {
    let (link, lease) = (remote.link, remote.lease);
    let work = run(remote, job, home, sink);
    let renew = async {
        let every = (lease.ttl / 3).max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = link.renew(lease.id).await {
                return e;
            }
        }
    };
    tokio::select! {
        done = work => done,
        e = renew => Err(Error::Link(e)),
    }
}

async fn run(
    remote: &Remote<'_>,
    job: &Job<'_>,
    home: &mut Home<'_>,
    sink: &mut dyn Sink,
) -> Result<Done, Error> {
    let (link, machine) = (remote.link, remote.name);
    let mut stats = Stats::default();
    let started = Instant::now();
    send_missing(remote, job, home, sink, &mut stats).await?;
    sink.message(&format!("offloading '{}' to '{machine}'...", job.drv));
    sink.building();
    let build_start = Instant::now();
    let outcome: BuildOutcome = {
        let mut log = |bytes: &[u8]| sink.log(bytes);
        link.build(
            BuildRequest {
                lease: remote.lease.id,
                drv: job.drv.to_string(),
                max_silent_secs: job.max_silent_secs,
                timeout_secs: job.timeout_secs,
            },
            &mut log,
        )
        .await?
    };
    stats.build_secs = build_start.elapsed().as_secs_f64();
    match outcome.status {
        BuildStatus::Built | BuildStatus::AlreadyValid => {}
        status => {
            stats.transfer_secs = started.elapsed().as_secs_f64() - stats.build_secs;
            return Ok(Done::Failed {
                timed_out: status == BuildStatus::TimedOut,
                message: outcome.message,
                stats,
            });
        }
    }
    let built: BTreeSet<&str> = outcome.outputs.iter().map(|(_, p)| p.as_str()).collect();
    if let Some(absent) = job
        .outputs
        .iter()
        .find(|o| !built.contains(o.to_string().as_str()))
    {
        return Err(Error::Link(LinkError::Protocol(format!(
            "{machine} built {} but did not report output {absent}",
            job.drv
        ))));
    }
    fetch_outputs(remote, job, home, sink, &mut stats).await?;
    stats.transfer_secs = started.elapsed().as_secs_f64() - stats.build_secs;
    Ok(Done::Built(stats))
}

async fn send_missing(
    remote: &Remote<'_>,
    job: &Job<'_>,
    home: &mut Home<'_>,
    sink: &mut dyn Sink,
    stats: &mut Stats,
) -> Result<(), Error> {
    let (link, machine, store, key) = (remote.link, remote.name, &mut *home.store, home.key);
    let mut want: BTreeSet<String> = job.inputs.iter().map(ToString::to_string).collect();
    want.insert(job.drv.to_string());
    let want: Vec<String> = want.into_iter().collect();
    let missing = link.query_missing(&want).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let missing: Vec<StorePath> = missing
        .iter()
        .map(|p| {
            StorePath::parse_in(store.store_dir(), p).map_err(|e| {
                Error::Link(LinkError::Protocol(format!(
                    "{machine} reported {p:?} missing: {e}"
                )))
            })
        })
        .collect::<Result<_, _>>()?;
    if let Some(stray) = missing.iter().find(|p| !want.contains(&p.to_string())) {
        return Err(Error::Link(LinkError::Protocol(format!(
            "{machine} reported {stray} missing, which was not asked about"
        ))));
    }
    let ordered = store
        .sort(&missing)
        .await
        .map_err(|e| local("ordering the inputs")(e.to_string()))?;
    let mut nar_bytes = 0u64;
    for p in &ordered {
        if let Some(info) = store
            .path_info(p)
            .await
            .map_err(|e| local("reading the store")(e.to_string()))?
        {
            nar_bytes += info.nar_size;
        }
    }
    sink.message(&format!(
        "sending {} ({} MiB) to '{machine}'...",
        items(ordered.len()),
        mib(nar_bytes)
    ));
    let mut file = spool()?;
    store
        .export(&ordered, key, &mut file)
        .await
        .map_err(|e| local("exporting the inputs")(e.to_string()))?;
    let len = rewind(&mut file)?;
    let mut source = tokio::fs::File::from_std(file);
    let imported = link.import(&mut source).await?;
    if imported.len() != ordered.len() {
        return Err(Error::Link(LinkError::Protocol(format!(
            "{machine} imported {} of the {} items sent",
            imported.len(),
            ordered.len()
        ))));
    }
    stats.items_sent = ordered.len();
    stats.bytes_sent = len;
    Ok(())
}

async fn fetch_outputs(
    remote: &Remote<'_>,
    job: &Job<'_>,
    home: &mut Home<'_>,
    sink: &mut dyn Sink,
    stats: &mut Stats,
) -> Result<(), Error> {
    let (link, machine, store, acl) = (remote.link, remote.name, &mut *home.store, home.acl);
    if job.outputs.is_empty() {
        return Ok(());
    }
    sink.message(&format!(
        "retrieving {} from '{machine}'...",
        items(job.outputs.len()),
    ));
    let paths: Vec<String> = job.outputs.iter().map(ToString::to_string).collect();
    let file = spool()?;
    let mut sink_file = tokio::fs::File::from_std(file);
    let bytes = link.export(&paths, &mut sink_file).await?;
    let mut file = sink_file.into_std().await;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| local("rewinding the spool file")(e.to_string()))?;
    let imported = store
        .import(
            std::io::BufReader::new(file),
            Signatures::Check(acl),
            &mut |_| {},
        )
        .await
        .map_err(|e| Error::Local(format!("outputs from '{machine}' refused: {e}")))?;
    for out in job.outputs {
        let valid = store
            .path_info(out)
            .await
            .map_err(|e| local("reading the store")(e.to_string()))?
            .is_some();
        if !valid {
            return Err(Error::Link(LinkError::Protocol(format!(
                "{machine} did not send output {out}"
            ))));
        }
    }
    stats.items_received = imported.len();
    stats.bytes_received = bytes;
    Ok(())
}

/// Run `job` on a machine without an agent, through its daemon's worker
/// protocol over SSH (`nix-daemon --stdio`, or a proxy to guix-daemon's
/// socket), named `machine` in messages.
/// Its outputs carry no signature we could check: they are trusted as
/// Nix's own `build-remote` trusts them, because the daemon was reached
/// through the machine's pinned SSH host key.
pub async fn offload_to_daemon(
    remote: &mut Store,
    machine: &str,
    job: &Job<'_>,
    home: &mut Home<'_>,
    sink: &mut dyn Sink,
) -> Result<Done, Error> {
    let lost = |what: &str, e: offload_store::store::Error| {
        Error::Link(LinkError::Lost(format!("{machine}: {what}: {e}")))
    };
    let mut stats = Stats::default();
    let started = Instant::now();
    // What it lacks, in the order it must receive it.
    let mut want: Vec<StorePath> = job.inputs.to_vec();
    want.push(job.drv.clone());
    want.sort();
    want.dedup();
    let mut missing = Vec::new();
    for p in &want {
        if remote
            .path_info(p)
            .await
            .map_err(|e| lost("querying", e))?
            .is_none()
        {
            missing.push(p.clone());
        }
    }
    if !missing.is_empty() {
        let ordered = home
            .store
            .sort(&missing)
            .await
            .map_err(|e| local("ordering the inputs")(e.to_string()))?;
        sink.message(&format!(
            "sending {} to '{machine}' (its daemon, over SSH)...",
            items(ordered.len()),
        ));
        let mut file = spool()?;
        home.store
            .export(&ordered, home.key, &mut file)
            .await
            .map_err(|e| local("exporting the inputs")(e.to_string()))?;
        stats.bytes_sent = rewind(&mut file)?;
        // A Guix daemon checks our signatures against its own ACL (our key
        // must be authorized there, as for Guix's offload); a Nix daemon
        // takes a trusted user's paths as they are.
        let signatures = match remote.dialect() {
            Some(offload_store::daemon::Dialect::Guix) => Signatures::Check(home.acl),
            _ => Signatures::Ignore,
        };
        remote
            .import(std::io::BufReader::new(file), signatures, &mut |_| {})
            .await
            .map_err(|e| lost("importing the inputs", e))?;
        stats.items_sent = ordered.len();
    }
    sink.message(&format!("offloading '{}' to '{machine}'...", job.drv));
    sink.building();
    let build_start = Instant::now();
    let opts = offload_store::embedded::build::BuildOptions {
        max_silent_time: (job.max_silent_secs > 0)
            .then(|| Duration::from_secs(job.max_silent_secs)),
        timeout: (job.timeout_secs > 0).then(|| Duration::from_secs(job.timeout_secs)),
        ..Default::default()
    };
    let results = {
        let mut events = |e: offload_store::embedded::build::BuildEvent| {
            if let offload_store::embedded::build::BuildEvent::Log { mut line, .. } = e {
                line.push(b'\n');
                sink.log(&line);
            }
        };
        remote
            .build(std::slice::from_ref(job.drv), &opts, &mut events)
            .await
            .map_err(|e| lost("building", e))?
    };
    stats.build_secs = build_start.elapsed().as_secs_f64();
    use offload_store::embedded::build::BuildStatus as S;
    let result = results
        .into_iter()
        .next()
        .ok_or_else(|| Error::Link(LinkError::Protocol(format!("{machine}: no build result"))))?;
    match result.status {
        S::Built | S::AlreadyValid => {}
        status => {
            stats.transfer_secs = started.elapsed().as_secs_f64() - stats.build_secs;
            return Ok(Done::Failed {
                timed_out: status == S::TimedOut,
                message: result.message.unwrap_or_else(|| format!("{status:?}")),
                stats,
            });
        }
    }
    if !job.outputs.is_empty() {
        sink.message(&format!(
            "retrieving {} from '{machine}'...",
            items(job.outputs.len()),
        ));
        let mut file = spool()?;
        remote
            .export(job.outputs, home.key, &mut file)
            .await
            .map_err(|e| lost("exporting the outputs", e))?;
        stats.bytes_received = rewind(&mut file)?;
        let imported = home
            .store
            .import(
                std::io::BufReader::new(file),
                Signatures::Ignore,
                &mut |_| {},
            )
            .await
            .map_err(|e| Error::Local(format!("outputs from '{machine}' refused: {e}")))?;
        stats.items_received = imported.len();
    }
    stats.transfer_secs = started.elapsed().as_secs_f64() - stats.build_secs;
    Ok(Done::Built(stats))
}
