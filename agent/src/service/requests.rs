//! The work of each request, against the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use offload_core::proto::admission::{BuildRefusal, Refusal};
use offload_core::proto::stream::{AgentEvent, AgentStream, ProtocolError};
use offload_core::proto::{
    self, BuildOutcome, BuildRequest, Failure, FailureKind, MAX_CHUNK, Reply, ToMaster,
};
use offload_core::store_path::StorePath;
use offload_net::framed;
use offload_store::embedded::build::{BuildEvent, BuildOptions, BuildResult, BuildStatus};
use offload_store::local::Signatures;
use offload_store::store::Store;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::Service;
use super::bridge::{ChannelReader, ChannelWriter, Piece};
use super::session::{Session, StreamError, fail, next_event, refuse};

/// Log bytes held for a master that reads slower than the builder
/// writes; lines past it are dropped (and counted in the log).
const LOG_BACKLOG: usize = 8 << 20;

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn ttl_ms(service: &Service) -> u64 {
    u64::try_from(service.config.lease_ttl.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn lease(session: &Session) -> Result<Reply, Failure> {
    let granted = session
        .service
        .admission()
        .handle_lease(session.id, Instant::now());
    match granted {
        Ok(lease) => {
            session.service.changed();
            tracing::info!(session = session.id, lease, "lease granted");
            Ok(Reply::Leased {
                lease,
                ttl_ms: ttl_ms(&session.service),
            })
        }
        Err(e @ Refusal::Busy) => Err(failure(FailureKind::Busy, e.to_string())),
        Err(e @ Refusal::Draining) => Err(failure(FailureKind::Draining, e.to_string())),
    }
}

pub(super) fn renew(session: &Session, lease: u64) -> Result<Reply, Failure> {
    let renewed = session
        .service
        .admission()
        .handle_renew(session.id, lease, Instant::now());
    session.service.changed();
    renewed
        .map(|()| Reply::Renewed {
            ttl_ms: ttl_ms(&session.service),
        })
        .map_err(|e| failure(FailureKind::UnknownLease, e.to_string()))
}

pub(super) fn release(session: &Session, lease: u64) -> Reply {
    session
        .service
        .admission()
        .handle_release(session.id, lease);
    session.service.changed();
    Reply::Released
}

fn parse_paths(service: &Service, paths: &[String]) -> Result<Vec<StorePath>, Failure> {
    paths
        .iter()
        .map(|p| {
            StorePath::parse_in(&service.store_dir, p).map_err(|e| {
                failure(
                    FailureKind::Refused,
                    format!(
                        "{p}: not an item of this agent's store {}: {e}",
                        service.store_dir
                    ),
                )
            })
        })
        .collect()
}

async fn open_store(service: &Service) -> Result<Store, Failure> {
    service
        .store()
        .await
        .map_err(|e| failure(FailureKind::Store, format!("opening the store: {e}")))
}

pub(super) async fn query_missing(session: &Session, paths: &[String]) -> Result<Reply, Failure> {
    let parsed = parse_paths(&session.service, paths)?;
    let mut store = open_store(&session.service).await?;
    let mut missing = Vec::new();
    for (path, text) in parsed.iter().zip(paths) {
        let info = store
            .path_info(path)
            .await
            .map_err(|e| failure(FailureKind::Store, format!("{path}: {e}")))?;
        if info.is_none() {
            missing.push(text.clone());
        }
    }
    Ok(Reply::Missing { paths: missing })
}

/// Import the export stream that follows in `Data` frames. Signatures are
/// checked against the agent's ACL item by item; an item that fails is
/// not kept (those before it are: each is whole and verified).
pub(super) async fn import(
    session: &Session,
    machine: &mut AgentStream,
    r: &mut (impl AsyncRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
    byte_stream: bool,
) -> Result<(), StreamError> {
    let mut store = match open_store(&session.service).await {
        Ok(s) => s,
        Err(f) => {
            if byte_stream {
                drain_import(machine, r).await?;
            }
            return fail(w, f.kind, f.message).await;
        }
    };
    let acl = session.service.acl();
    let (tx, reader) = ChannelReader::new();
    let handle = tokio::runtime::Handle::current();
    let session_id = session.id;
    let importer = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            store
                .import(reader, Signatures::Check(&acl), &mut |item| {
                    tracing::debug!(session = session_id, path = %item.path, added = item.added, "imported");
                })
                .await
        })
    });
    let mut complete = false;
    let pumped: Result<(), StreamError> = loop {
        match next_event(machine, r).await {
            Ok(Some(AgentEvent::Data(d))) => {
                if !tx.send(Piece::Bytes(d)).await {
                    break Ok(()); // the importer stopped: it says why
                }
            }
            Ok(Some(AgentEvent::End)) => {
                complete = true;
                let _ = tx.send(Piece::End).await;
                break Ok(());
            }
            Ok(Some(_)) => {
                break Err(ProtocolError("expected Data or End".into()).into());
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let result = importer.await;
    if let Err(e) = pumped {
        refuse(w, &e).await;
        return Err(e);
    }
    if !complete && byte_stream {
        drain_import(machine, r).await?;
    }
    match result {
        Ok(Ok(paths)) => {
            tracing::info!(session = session.id, items = paths.len(), "import complete");
            let paths = paths.iter().map(ToString::to_string).collect();
            framed::write_frame(w, &ToMaster::Reply(Reply::Imported { paths })).await?;
            Ok(())
        }
        Ok(Err(e)) => fail(w, FailureKind::Refused, format!("import: {e}")).await,
        Err(e) => fail(w, FailureKind::Internal, format!("import: {e}")).await,
    }
}

/// Skip the rest of an import's data (a byte stream carries the next
/// request after it).
async fn drain_import(
    machine: &mut AgentStream,
    r: &mut (impl AsyncRead + Unpin),
) -> Result<(), StreamError> {
    while !machine.is_done() {
        if next_event(machine, r).await?.is_none() {
            break;
        }
    }
    Ok(())
}

/// Ends the build under a lease however the build ends.
struct BuildSlot {
    service: Arc<Service>,
    lease: u64,
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        self.service
            .admission()
            .end_build(self.lease, Instant::now());
        self.service.changed();
    }
}

/// Build a derivation under a lease, streaming its log. The build is
/// cancelled (its processes killed) when the master sends `Cancel`, when
/// its stream fails or, on a byte stream, ends, and when `gone` completes
/// (its connection closed). Whatever happens, the request is over when
/// this returns `Ok` (the stream takes the next request), except after the
/// end of a byte stream, which leaves `machine` waiting.
pub(super) async fn build(
    session: &Session,
    req: &BuildRequest,
    machine: &mut AgentStream,
    r: &mut (impl AsyncRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
    byte_stream: bool,
    gone: impl Future<Output = ()>,
) -> Result<(), StreamError> {
    let service = &session.service;
    let (slot, mut store, drv) = match start_build(session, req).await {
        Ok(started) => started,
        Err(f) => {
            // Refused before anything ran: the request is over.
            machine.end_request();
            return fail(w, f.kind, f.message).await;
        }
    };
    framed::write_frame(w, &ToMaster::Reply(Reply::BuildStarted)).await?;
    tracing::info!(session = session.id, lease = req.lease, %drv, "build started");
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let opts = BuildOptions {
        max_silent_time: secs(req.max_silent_secs),
        timeout: secs(req.timeout_secs),
        max_log_size: service.config.max_log_size,
        cores: service.config.cores,
        max_jobs: 1,
        impure_env: Some(service.config.impure_env.clone()),
        ..BuildOptions::default()
    };
    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let backlog = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut events = {
        let (backlog, dropped) = (Arc::clone(&backlog), Arc::clone(&dropped));
        move |e: BuildEvent| {
            if let BuildEvent::Log { mut line, .. } = e {
                line.push(b'\n');
                if backlog.fetch_add(line.len(), Ordering::AcqRel) + line.len() > LOG_BACKLOG {
                    backlog.fetch_sub(line.len(), Ordering::AcqRel);
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = log_tx.send(line);
                }
            }
        }
    };
    let drvs = [drv.clone()];
    let ended = {
        // Three things at once, none holding up the others: the build,
        // its log going out (a slow master makes lines wait, or drop past
        // the backlog, never the builder), and the master's side: a
        // cancel, the stream's end or failure, or the connection's.
        let building = store.build(&drvs, &opts, &mut events);
        let pump = async {
            while let Some(line) = log_rx.recv().await {
                send_log(w, line, &mut log_rx, &backlog).await?;
            }
            Ok::<(), StreamError>(())
        };
        // Created once (a frame half read is never dropped).
        let listen = next_event(machine, r);
        tokio::pin!(building, pump, listen, gone);
        let mut listening = true;
        let mut pumping = true;
        loop {
            tokio::select! {
                result = &mut building => break BuildEnd::Done(result),
                sent = &mut pump, if pumping => match sent {
                    Ok(()) => pumping = false,
                    Err(e) => break BuildEnd::Gone(Some(e)),
                },
                () = &mut gone => break BuildEnd::Gone(None),
                event = &mut listen, if listening => match event {
                    Ok(Some(AgentEvent::Cancel)) => break BuildEnd::Cancelled,
                    // QUIC: the master has nothing more to send.
                    Ok(None) if !byte_stream => listening = false,
                    Ok(None) => break BuildEnd::StreamClosed,
                    Err(StreamError::Protocol(p)) => break BuildEnd::Protocol(p),
                    Ok(Some(_)) => break BuildEnd::Protocol(ProtocolError("expected Cancel".into())),
                    Err(e) => break BuildEnd::Gone(Some(e)),
                },
            }
        }
        // Leaving this block drops the build: a build not done is killed.
    };
    drop(events);
    drop(slot);
    let outcome = match ended {
        BuildEnd::Done(result) => {
            // The rest of the log, then the result.
            while let Ok(line) = log_rx.try_recv() {
                send_log(w, line, &mut log_rx, &backlog).await?;
            }
            let n = dropped.load(Ordering::Relaxed);
            if n > 0 {
                let note =
                    format!("offload-agent: {n} log lines dropped (the master read too slowly)\n");
                framed::write_frame(w, &ToMaster::Log(note.into_bytes())).await?;
            }
            machine.end_request();
            match result {
                Ok(mut results) => outcome_of(results.pop()),
                Err(e) => BuildOutcome {
                    status: proto::BuildStatus::MiscFailure,
                    message: format!("cannot build {drv}: {e}"),
                    outputs: Vec::new(),
                },
            }
        }
        BuildEnd::Cancelled => {
            tracing::info!(session = session.id, %drv, "build cancelled by the master");
            BuildOutcome {
                status: proto::BuildStatus::Cancelled,
                message: format!("the build of {drv} was cancelled"),
                outputs: Vec::new(),
            }
        }
        BuildEnd::StreamClosed => {
            tracing::info!(session = session.id, %drv, "master gone: build cancelled");
            return Ok(());
        }
        BuildEnd::Gone(e) => {
            tracing::info!(session = session.id, %drv, "master gone: build cancelled");
            return match e {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        BuildEnd::Protocol(p) => {
            tracing::info!(session = session.id, %drv, "build cancelled: {p}");
            return Err(p.into());
        }
    };
    tracing::info!(session = session.id, %drv, status = ?outcome.status, "build over");
    framed::write_frame(w, &ToMaster::Reply(Reply::BuildFinished(outcome))).await?;
    Ok(())
}

/// How a build's request ended.
enum BuildEnd<E> {
    /// The build finished (or could not be planned).
    Done(E),
    /// The master cancelled it.
    Cancelled,
    /// The byte stream ended: the master is gone.
    StreamClosed,
    /// The stream or the connection failed.
    Gone(Option<StreamError>),
    /// The master broke the protocol.
    Protocol(ProtocolError),
}

/// Check a build request and take its slot: the slot (held until the
/// build is over), a store handle and the derivation.
async fn start_build(
    session: &Session,
    req: &BuildRequest,
) -> Result<(BuildSlot, Store, StorePath), Failure> {
    let service = &session.service;
    let drv = parse_paths(service, std::slice::from_ref(&req.drv))?.remove(0);
    if !drv.name().ends_with(".drv") {
        return Err(failure(
            FailureKind::Refused,
            format!("{drv} is not a derivation"),
        ));
    }
    let begun = service.admission().begin_build(session.id, req.lease);
    if let Err(e) = begun {
        let kind = match e {
            BuildRefusal::Unknown(_) => FailureKind::UnknownLease,
            BuildRefusal::InUse(_) => FailureKind::Busy,
        };
        return Err(failure(kind, e.to_string()));
    }
    let slot = BuildSlot {
        service: Arc::clone(service),
        lease: req.lease,
    };
    service.changed();
    let store = open_store(service).await?;
    Ok((slot, store, drv))
}

/// Send `first` and whatever else is queued, in chunks of at most
/// [`MAX_CHUNK`] bytes.
async fn send_log(
    w: &mut (impl AsyncWrite + Unpin),
    first: Vec<u8>,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    backlog: &AtomicUsize,
) -> Result<(), StreamError> {
    let mut chunk = first;
    let mut taken = chunk.len();
    while chunk.len() < MAX_CHUNK {
        match rx.try_recv() {
            Ok(line) => {
                taken += line.len();
                chunk.extend_from_slice(&line);
            }
            Err(_) => break,
        }
    }
    backlog.fetch_sub(taken, Ordering::AcqRel);
    for piece in chunk.chunks(MAX_CHUNK) {
        framed::write_frame(w, &ToMaster::Log(piece.to_vec())).await?;
    }
    Ok(())
}

fn outcome_of(result: Option<BuildResult>) -> BuildOutcome {
    let Some(r) = result else {
        return BuildOutcome {
            status: proto::BuildStatus::MiscFailure,
            message: "the store returned no result".into(),
            outputs: Vec::new(),
        };
    };
    let status = match r.status {
        BuildStatus::Built => proto::BuildStatus::Built,
        BuildStatus::AlreadyValid => proto::BuildStatus::AlreadyValid,
        BuildStatus::Failed(_) => proto::BuildStatus::Failed,
        BuildStatus::TimedOut => proto::BuildStatus::TimedOut,
        BuildStatus::LogLimitExceeded => proto::BuildStatus::LogLimitExceeded,
        BuildStatus::OutputRejected => proto::BuildStatus::OutputRejected,
        BuildStatus::DependencyFailed => proto::BuildStatus::DependencyFailed,
        BuildStatus::MiscFailure => proto::BuildStatus::MiscFailure,
    };
    let mut message = r.message.unwrap_or_default();
    message.truncate(proto::MAX_MESSAGE_LEN);
    BuildOutcome {
        status,
        message,
        outputs: r
            .outputs
            .into_iter()
            .map(|(name, path)| (name, path.to_string()))
            .collect(),
    }
}

/// Send the items `paths` (valid here), ordered so that references come
/// first, as an export stream signed with the agent's key.
pub(super) async fn export(
    session: &Session,
    paths: &[String],
    w: &mut (impl AsyncWrite + Unpin),
) -> Result<(), StreamError> {
    let service = &session.service;
    let parsed = match parse_paths(service, paths) {
        Ok(p) => p,
        Err(f) => return fail(w, f.kind, f.message).await,
    };
    let mut store = match open_store(service).await {
        Ok(s) => s,
        Err(f) => return fail(w, f.kind, f.message).await,
    };
    let sorted = match store.sort(&parsed).await {
        Ok(s) => s,
        Err(e) => return fail(w, FailureKind::Refused, format!("export: {e}")).await,
    };
    framed::write_frame(w, &ToMaster::Reply(Reply::Exporting)).await?;
    let (mut writer, mut rx) = ChannelWriter::new();
    let key = Arc::clone(&service.key);
    let handle = tokio::runtime::Handle::current();
    let exporter = tokio::task::spawn_blocking(move || {
        let result = handle.block_on(store.export(&sorted, &key, &mut writer));
        drop(writer);
        result
    });
    while let Some(chunk) = rx.recv().await {
        framed::write_bytes_frame(w, &ToMaster::Data(Vec::new()), &chunk).await?;
    }
    match exporter.await {
        Ok(Ok(())) => {
            framed::write_frame(w, &ToMaster::End).await?;
            tracing::info!(session = session.id, items = paths.len(), "export sent");
            Ok(())
        }
        Ok(Err(e)) => fail(w, FailureKind::Store, format!("export: {e}")).await,
        Err(e) => fail(w, FailureKind::Internal, format!("export: {e}")).await,
    }
}
