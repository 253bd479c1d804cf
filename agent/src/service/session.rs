//! One session: a master whose key was proven, its leases, and the
//! dispatch of its requests. The transport (QUIC or a byte stream) feeds
//! it streams; when the session is dropped, its leases end and the builds
//! running under them are cancelled (their streams fail).

use std::sync::Arc;

use offload_core::proto::admission::SessionId;
use offload_core::proto::stream::{AgentEvent, AgentStream, ProtocolError};
use offload_core::proto::{self, Failure, FailureKind, Hello, Request, ToAgent, ToMaster, Welcome};
use offload_net::framed::{self, FrameError};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Service, requests};

/// The stream cannot go on (the session may).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// Reading or writing failed (the master went away).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The master broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// A master's session.
pub(crate) struct Session {
    pub(crate) service: Arc<Service>,
    pub(crate) id: SessionId,
    /// The master's key fingerprint, for logs.
    pub(crate) peer: String,
}

impl Session {
    pub(crate) fn new(service: Arc<Service>, peer: String) -> Self {
        let id = service.new_session();
        tracing::info!(session = id, master = %peer, "session opened");
        Self { service, id, peer }
    }

    /// Choose a version.
    pub(crate) fn hello(&self, hello: &Hello) -> Result<Welcome, Failure> {
        let Some(version) = hello
            .versions
            .iter()
            .copied()
            .find(|v| proto::VERSIONS.contains(v))
        else {
            return Err(Failure {
                kind: FailureKind::Version,
                message: format!(
                    "no protocol version in common: the master speaks {:?}, this agent {:?}; upgrade one of them",
                    hello.versions,
                    proto::VERSIONS
                ),
            });
        };
        tracing::debug!(session = self.id, version, software = %hello.software, "hello");
        Ok(Welcome {
            version,
            software: software(),
            status: self.service.status(),
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let building = self.service.admission().handle_disconnect(self.id);
        if !building.is_empty() {
            tracing::info!(session = self.id, leases = ?building, "master gone: cancelling its builds");
        }
        self.service.changed();
        tracing::info!(session = self.id, master = %self.peer, "session closed");
    }
}

/// This program, for `Hello` and `Welcome`.
pub(crate) fn software() -> String {
    format!("offload-agent {}", env!("CARGO_PKG_VERSION"))
}

/// Read the first frame of a stream through `machine`; `None` at a clean
/// end before it.
pub(crate) async fn next_event(
    machine: &mut AgentStream,
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<AgentEvent>, StreamError> {
    match framed::read_frame::<ToAgent, _>(r).await {
        Ok(None) => Ok(None),
        Ok(Some(frame)) => Ok(Some(machine.handle(frame)?)),
        // Bytes that are not a frame are the master's fault.
        Err(FrameError::Codec(e)) => Err(ProtocolError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Send a failure, logging it.
pub(crate) async fn fail(
    w: &mut (impl AsyncWrite + Unpin),
    kind: FailureKind,
    message: String,
) -> Result<(), StreamError> {
    tracing::info!(?kind, "request failed: {message}");
    framed::write_frame(w, &ToMaster::Error(Failure { kind, message })).await?;
    Ok(())
}

/// Answer a protocol error where the stream still takes frames.
pub(crate) async fn refuse(w: &mut (impl AsyncWrite + Unpin), error: &StreamError) {
    if let StreamError::Protocol(e) = error {
        let _ = fail(w, FailureKind::Protocol, e.to_string()).await;
    }
}

/// Serve one request whose first frame `request` was read through
/// `machine`; the rest of it (import data, a cancel) comes from `r`.
/// `eof_cancels`: the end of `r` means the master is gone (a byte
/// stream), not just that it has nothing more to send (QUIC); `gone`
/// completes when the master's connection is lost.
pub(crate) async fn serve_request(
    session: &Session,
    request: Request,
    machine: &mut AgentStream,
    r: &mut (impl AsyncRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
    eof_cancels: bool,
    gone: impl std::future::Future<Output = ()>,
) -> Result<(), StreamError> {
    let reply = match request {
        Request::Status => Ok(proto::Reply::Status(session.service.status())),
        Request::Lease => requests::lease(session),
        Request::Renew { lease } => requests::renew(session, lease),
        Request::Release { lease } => Ok(requests::release(session, lease)),
        Request::QueryMissing { paths } => requests::query_missing(session, &paths).await,
        Request::Import => return requests::import(session, machine, r, w, eof_cancels).await,
        Request::Build(b) => {
            return requests::build(session, &b, machine, r, w, eof_cancels, gone).await;
        }
        Request::Export { paths } => return requests::export(session, &paths, w).await,
    };
    match reply {
        Ok(reply) => framed::write_frame(w, &ToMaster::Reply(reply)).await?,
        Err(f) => fail(w, f.kind, f.message).await?,
    }
    Ok(())
}
