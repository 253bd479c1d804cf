//! One session on a byte stream (`offload-agent stdio`, run by a master
//! over SSH): the keys are proven first by the exchange of
//! `offload_core::proto::auth` — SSH's own authentication is not taken as
//! proof of the master's key — then `Hello`, then one request after
//! another on the same stream. The end of the input means the master is
//! gone: a running build is cancelled.

use std::sync::Arc;

use offload_core::proto::auth::{AgentAuth, AuthError};
use offload_core::proto::stream::{AgentEvent, AgentStream};
use offload_core::proto::{FailureKind, ToMaster};
use offload_net::framed;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Service;
use super::session::{Session, StreamError, fail, next_event, refuse, serve_request};

/// Why a byte-stream session ended early.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The master's key was refused or not proven.
    #[error("master refused: {0}")]
    Auth(#[from] AuthError),
    /// The stream failed or the master broke the protocol.
    #[error("{0}")]
    Stream(String),
}

impl From<StreamError> for StdioError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e.to_string())
    }
}

/// Serve one master on `r`/`w` until it goes away.
pub async fn serve(
    service: Arc<Service>,
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
) -> Result<(), StdioError> {
    let mut machine = AgentStream::authenticating();
    let Some(AgentEvent::AuthHello(hello)) = next_event(&mut machine, &mut r).await? else {
        return Err(StdioError::Stream("the master said nothing".into()));
    };
    let nonce = random_nonce()?;
    let accepted = AgentAuth::handle_hello(service.key(), hello, nonce, |q| {
        service
            .authorize(q)
            .map_err(|_| AuthError::Unauthorized(offload_core::proto::auth::fingerprint(q)))
    });
    let auth = match accepted {
        Ok((auth, challenge)) => {
            framed::write_frame(&mut w, &ToMaster::AuthChallenge(challenge))
                .await
                .map_err(StreamError::from)?;
            w.flush()
                .await
                .map_err(|e| StdioError::Stream(e.to_string()))?;
            auth
        }
        Err(e) => {
            fail(&mut w, FailureKind::Refused, format!("refused: {e}")).await?;
            let _ = w.flush().await;
            return Err(e.into());
        }
    };
    let Some(AgentEvent::AuthProof(proof)) = next_event(&mut machine, &mut r).await? else {
        return Err(StdioError::Stream(
            "the master went away before proving its key".into(),
        ));
    };
    let master = match auth.handle_proof(&proof) {
        Ok(q) => q,
        Err(e) => {
            fail(&mut w, FailureKind::Refused, format!("refused: {e}")).await?;
            let _ = w.flush().await;
            return Err(e.into());
        }
    };
    let session = Session::new(service, offload_core::proto::auth::fingerprint(&master));
    let Some(AgentEvent::Hello(hello)) = next_event(&mut machine, &mut r).await? else {
        return Err(StdioError::Stream("expected Hello".into()));
    };
    match session.hello(&hello) {
        Ok(welcome) => {
            framed::write_frame(&mut w, &ToMaster::Welcome(welcome))
                .await
                .map_err(StreamError::from)?;
        }
        Err(f) => {
            fail(&mut w, f.kind, f.message.clone()).await?;
            let _ = w.flush().await;
            return Err(StdioError::Stream(f.message));
        }
    }
    w.flush()
        .await
        .map_err(|e| StdioError::Stream(e.to_string()))?;
    loop {
        machine
            .next_request()
            .map_err(|e| StdioError::Stream(e.to_string()))?;
        let event = match next_event(&mut machine, &mut r).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(e) => {
                refuse(&mut w, &e).await;
                let _ = w.flush().await;
                return Err(e.into());
            }
        };
        let request = match event {
            AgentEvent::Request(request) => request,
            // A cancel that crossed the end of its build.
            AgentEvent::Cancel => continue,
            _ => return Err(StdioError::Stream("expected a request".into())),
        };
        let served = serve_request(
            &session,
            request,
            &mut machine,
            &mut r,
            &mut w,
            true,
            std::future::pending(),
        )
        .await;
        if let Err(e) = served {
            refuse(&mut w, &e).await;
            let _ = w.flush().await;
            return Err(e.into());
        }
        w.flush()
            .await
            .map_err(|e| StdioError::Stream(e.to_string()))?;
        if !machine.is_done() {
            // A build cancelled because the input ended.
            return Ok(());
        }
    }
}

fn random_nonce() -> Result<[u8; 32], StdioError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| StdioError::Stream(format!("no randomness: {e}")))?;
    Ok(nonce)
}
