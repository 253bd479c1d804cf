//! The service over QUIC: one session per connection (the master's key
//! was proven and found in the ACL during the handshake), one task per
//! request stream. The first stream carries `Hello`; no other stream is
//! served before it is answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use offload_core::proto::stream::{AgentEvent, AgentStream};
use offload_core::proto::{FailureKind, ToMaster};
use offload_net::framed;
use offload_net::identity::PeerCheck;
use offload_net::quic;
use quinn::{Connection, Endpoint, Incoming};
use tokio::task::JoinSet;

use super::Service;
use super::session::{Session, StreamError, fail, next_event, refuse, serve_request};

/// How long a master has to send `Hello` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Application close code: the agent stops.
pub const CLOSE_STOPPING: u32 = 1;
/// Application close code: the master broke the protocol.
pub const CLOSE_PROTOCOL: u32 = 2;
/// Application close code: the master's key is not (or no longer) in the ACL.
pub const CLOSE_REFUSED: u32 = 3;

/// The agent's endpoint on `addr`, accepting masters the service's ACL
/// holds (read at each handshake, so a changed ACL applies at once).
pub fn endpoint(
    service: &Arc<Service>,
    addr: std::net::SocketAddr,
) -> Result<Endpoint, quic::SetupError> {
    let acl_service = Arc::clone(service);
    let check = Arc::new(PeerCheck::new(move |q| {
        acl_service
            .authorize(q)
            .inspect_err(|why| tracing::info!("refused in the handshake: {why}"))
    }));
    let config = quic::server_config(Arc::clone(service.key()), check)?;
    quic::server(config, addr)
}

/// Serve connections on `endpoint` until `shutdown` completes; then stop
/// accepting and return (sessions still open go on until they end or the
/// caller closes the endpoint).
pub async fn serve(service: Arc<Service>, endpoint: Endpoint, shutdown: impl Future<Output = ()>) {
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    sessions.spawn(connection(Arc::clone(&service), incoming));
                }
                None => break,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.detach_all();
}

async fn connection(service: Arc<Service>, incoming: Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Refused keys end here, before any application byte.
            tracing::info!(%remote, "connection refused: {e}");
            return;
        }
    };
    let Some(q) = quic::peer_key(&conn) else {
        conn.close(CLOSE_PROTOCOL.into(), b"no key");
        return;
    };
    // Checked again here, whatever the handshake did (the ACL may have
    // changed while it ran).
    if let Err(why) = service.authorize(&q) {
        tracing::info!(%remote, "connection refused: {why}");
        conn.close(CLOSE_REFUSED.into(), b"key not authorized");
        return;
    }
    let session = Session::new(service, offload_core::proto::auth::fingerprint(&q));
    tracing::debug!(session = session.id, %remote, "connected");
    if let Err(e) = first_stream(&session, &conn).await {
        tracing::info!(session = session.id, "no hello: {e}");
        conn.close(CLOSE_PROTOCOL.into(), b"hello expected");
        return;
    }
    let session = Arc::new(session);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(request_stream(Arc::clone(&session), conn.clone(), send, recv));
                }
                Err(e) => {
                    tracing::info!(session = session.id, "connection ended: {e}");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The streams' reads fail now: builds are cancelled, then the session
    // (its leases) ends with the last of them.
    while streams.join_next().await.is_some() {}
}

async fn first_stream(session: &Session, conn: &Connection) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut machine = AgentStream::first();
    let event = tokio::time::timeout(HELLO_TIMEOUT, next_event(&mut machine, &mut recv))
        .await
        .map_err(|_| "timed out".to_owned())?;
    let hello = match event {
        Ok(Some(AgentEvent::Hello(h))) => h,
        Ok(_) => return Err("stream ended".into()),
        Err(e) => {
            refuse(&mut send, &e).await;
            return Err(e.to_string());
        }
    };
    match session.hello(&hello) {
        Ok(welcome) => {
            framed::write_frame(&mut send, &ToMaster::Welcome(welcome))
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            Ok(())
        }
        Err(f) => {
            let _ = fail(&mut send, f.kind, f.message.clone()).await;
            let _ = send.finish();
            // Let the failure reach the master before the close.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            Err(f.message)
        }
    }
}

async fn request_stream(
    session: Arc<Session>,
    conn: Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut machine = AgentStream::request();
    let result: Result<(), StreamError> = async {
        match next_event(&mut machine, &mut recv).await? {
            Some(AgentEvent::Request(request)) => {
                let closed = conn.clone();
                let gone = async move {
                    closed.closed().await;
                };
                serve_request(
                    &session,
                    request,
                    &mut machine,
                    &mut recv,
                    &mut send,
                    false,
                    gone,
                )
                .await
            }
            Some(_) => {
                fail(
                    &mut send,
                    FailureKind::Protocol,
                    "expected a request".into(),
                )
                .await
            }
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = &result {
        refuse(&mut send, e).await;
    }
    let _ = send.finish();
    if let Err(e) = &result {
        tracing::debug!(session = session.id, "stream: {e}");
        if let StreamError::Protocol(p) = e {
            // A master that breaks the protocol is not trusted with the
            // connection: the failure goes out, then the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            tracing::warn!(session = session.id, master = %session.peer, "closing the connection: {p}");
            conn.close(CLOSE_PROTOCOL.into(), b"protocol error");
            return;
        }
    }
    // Wait for the master to have the whole answer (or to be gone).
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}
