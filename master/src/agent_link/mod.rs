//! A link to one agent: a session of the protocol of
//! `offload_core::proto`, over QUIC or over a byte stream (`ssh host
//! offload-agent stdio`), from the master's side.
//!
//! Connecting proves both keys: over QUIC in the TLS handshake (module
//! `offload_net::identity`), over a byte stream by the exchange of
//! `offload_core::proto::auth`. The agent's key must be in our ACL and,
//! when the machine advertised one, be the key it advertised; otherwise
//! the link fails with [`LinkError::Impostor`] or
//! [`LinkError::Unauthorized`]. An agent that refuses our key makes it
//! fail with [`LinkError::Refused`]. Each failure's text is what `status`
//! shows as the machine's health.
//!
//! Over QUIC each request has a stream of its own, so requests run at
//! once; over a byte stream they take turns. Dropping a request's future
//! cancels it: over QUIC the stream is reset (the agent kills a build);
//! over a byte stream the link is unusable afterwards.

mod requests;
pub mod ssh;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::proto::auth::{self, AuthError, MasterAuth};
use offload_core::proto::stream::{MasterEvent, MasterStream};
use offload_core::proto::{self, Failure, Hello, ToAgent, ToMaster, Welcome};
use offload_net::framed::{self, FrameError};
use offload_net::identity::PeerCheck;
use offload_net::quic;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use requests::Lease;

/// How long connecting (handshake and hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long starting a session on a byte stream may take (the SSH login
/// and the agent's start come first).
pub const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a link failed or a request was not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The agent could not be reached (no answer, network error).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The agent refused our key.
    #[error("refused: {0}")]
    Refused(String),
    /// The agent's key is not in our ACL.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The agent could not prove the key it advertises.
    #[error("impostor: {0}")]
    Impostor(String),
    /// The agent broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The agent answered the request with a failure.
    #[error("{}", .0.message)]
    Failed(Failure),
    /// The link was lost during a request.
    #[error("connection lost: {0}")]
    Lost(String),
}

impl From<FrameError> for LinkError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Codec(c) => Self::Protocol(c.to_string()),
            other => Self::Lost(other.to_string()),
        }
    }
}

/// Which agent key the master accepts.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Our ACL: the agent's key must be in it.
    pub acl: Arc<Acl>,
    /// The fingerprint the machine advertised, if any: the key must be it.
    pub fingerprint: Option<String>,
}

impl Expect {
    /// `Ok` if the proven key `q` is acceptable, else why not.
    pub fn check(&self, q: &[u8; 32]) -> Result<(), LinkError> {
        let presented = auth::fingerprint(q);
        if let Some(fp) = &self.fingerprint
            && *fp != presented
        {
            return Err(LinkError::Impostor(format!(
                "could not prove key {fp} (it advertises that key, and proved {presented})"
            )));
        }
        match self.acl.fingerprint_of_q(q) {
            Some(_) => Ok(()),
            None => Err(LinkError::Unauthorized(format!(
                "its key {presented} is not in our ACL; authorize it with `offload-master key authorize`"
            ))),
        }
    }
}

enum Transport {
    Quic {
        conn: quinn::Connection,
        _endpoint: quinn::Endpoint,
    },
    Stream(tokio::sync::Mutex<StreamPair>),
}

struct StreamPair {
    r: Box<dyn AsyncRead + Send + Unpin>,
    w: Box<dyn AsyncWrite + Send + Unpin>,
    /// A request was dropped half-way: the stream is out of step.
    broken: bool,
}

/// How long closing a QUIC link waits for the close to be sent.
const CLOSE_FLUSH: Duration = Duration::from_millis(10);

/// A session with one agent.
pub struct AgentLink {
    transport: Transport,
    welcome: Welcome,
    peer: [u8; 32],
    /// The `ssh` process carrying the session, if it goes over SSH.
    child: Option<tokio::process::Child>,
}

impl AgentLink {
    /// Connect over QUIC to `addr`, proving `key`, accepting the agent
    /// that `expect` describes.
    pub async fn connect_quic(
        addr: SocketAddr,
        key: Arc<SecretKey>,
        expect: Expect,
    ) -> Result<Self, LinkError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::quic(addr, key, expect))
            .await
            .unwrap_or_else(|_| {
                Err(LinkError::Unreachable(format!(
                    "{addr}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            })
    }

    async fn quic(
        addr: SocketAddr,
        key: Arc<SecretKey>,
        expect: Expect,
    ) -> Result<Self, LinkError> {
        let verdict: Arc<std::sync::Mutex<Option<LinkError>>> = Arc::default();
        let check = {
            let (expect, verdict) = (expect.clone(), Arc::clone(&verdict));
            Arc::new(PeerCheck::new(move |q| {
                expect.check(q).map_err(|e| {
                    let text = e.to_string();
                    *verdict
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    text
                })
            }))
        };
        let setup = |e: quic::SetupError| LinkError::Unreachable(e.to_string());
        let config = quic::client_config(key, check).map_err(setup)?;
        let endpoint = quic::client(addr).map_err(setup)?;
        let connecting = endpoint
            .connect_with(config, addr, "offload-agent")
            .map_err(|e| LinkError::Unreachable(format!("{addr}: {e}")))?;
        let conn = match connecting.await {
            Ok(c) => c,
            Err(e) => {
                let ours = verdict
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(ours.unwrap_or_else(|| classify(addr, &e)));
            }
        };
        let peer = quic::peer_key(&conn)
            .ok_or_else(|| LinkError::Protocol("the agent proved no key".into()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(addr, &e))?;
        let hello = ToAgent::Hello(hello());
        let welcome = async {
            framed::write_frame(&mut send, &hello).await?;
            let _ = send.finish();
            read_welcome(&mut recv).await
        }
        .await
        .map_err(|e| match conn.close_reason() {
            Some(reason) => classify(addr, &reason),
            None => e,
        })?;
        Ok(Self {
            transport: Transport::Quic {
                conn,
                _endpoint: endpoint,
            },
            welcome,
            peer,
            child: None,
        })
    }

    /// Start a session on a byte stream (stdin and stdout of `ssh host
    /// offload-agent stdio`): prove `key`, check the agent's; within
    /// [`STREAM_CONNECT_TIMEOUT`] (an SSH login and the agent's start
    /// included).
    pub async fn connect_stream(
        r: impl AsyncRead + Send + Unpin + 'static,
        w: impl AsyncWrite + Send + Unpin + 'static,
        key: &SecretKey,
        expect: &Expect,
    ) -> Result<Self, LinkError> {
        tokio::time::timeout(STREAM_CONNECT_TIMEOUT, Self::stream(r, w, key, expect))
            .await
            .unwrap_or_else(|_| {
                Err(LinkError::Unreachable(format!(
                    "the agent did not answer within {} s",
                    STREAM_CONNECT_TIMEOUT.as_secs()
                )))
            })
    }

    async fn stream(
        r: impl AsyncRead + Send + Unpin + 'static,
        w: impl AsyncWrite + Send + Unpin + 'static,
        key: &SecretKey,
        expect: &Expect,
    ) -> Result<Self, LinkError> {
        let (mut r, mut w): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = (Box::new(r), Box::new(w));
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|e| LinkError::Unreachable(format!("no randomness: {e}")))?;
        let own = |e: AuthError| LinkError::Protocol(e.to_string());
        let (auth, hello_auth) = MasterAuth::start(key, nonce).map_err(own)?;
        framed::write_frame(&mut w, &ToAgent::AuthHello(hello_auth)).await?;
        w.flush()
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        let challenge = match framed::read_frame::<ToMaster, _>(&mut r).await? {
            Some(ToMaster::AuthChallenge(c)) => c,
            Some(ToMaster::Error(f)) => {
                return Err(LinkError::Refused(format!(
                    "{}; the agent's ACL must hold our key",
                    f.message
                )));
            }
            Some(_) => return Err(LinkError::Protocol("expected AuthChallenge".into())),
            None => return Err(LinkError::Unreachable("the agent closed the stream".into())),
        };
        let mut verdict = None;
        let proven = auth.handle_challenge(key, &challenge, |q| {
            expect.check(q).map_err(|e| {
                let text = e.to_string();
                verdict = Some(e);
                AuthError::Unauthorized(text)
            })
        });
        let (proof, peer) = match proven {
            Ok(p) => p,
            Err(AuthError::BadProof(fp)) => {
                return Err(LinkError::Impostor(format!("could not prove key {fp}")));
            }
            Err(e) => return Err(verdict.unwrap_or(LinkError::Protocol(e.to_string()))),
        };
        framed::write_frame(&mut w, &ToAgent::AuthProof(proof)).await?;
        framed::write_frame(&mut w, &ToAgent::Hello(hello())).await?;
        w.flush()
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        let welcome = match read_welcome(&mut r).await {
            Err(LinkError::Failed(f)) if f.kind == proto::FailureKind::Refused => {
                return Err(LinkError::Refused(f.message));
            }
            other => other?,
        };
        Ok(Self {
            child: None,
            transport: Transport::Stream(tokio::sync::Mutex::new(StreamPair {
                r,
                w,
                broken: false,
            })),
            welcome,
            peer,
        })
    }

    /// The agent's answer to our hello (its state when we connected).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The key the agent proved.
    pub fn peer_key(&self) -> [u8; 32] {
        self.peer
    }

    /// `QUIC`, `SSH` or `stream`: how this link reaches its agent.
    pub fn transport(&self) -> &'static str {
        match (&self.transport, &self.child) {
            (Transport::Quic { .. }, _) => "QUIC",
            (Transport::Stream(_), Some(_)) => "SSH",
            (Transport::Stream(_), None) => "stream",
        }
    }

    /// Close the link (the agent releases our leases at once).
    pub async fn close(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Transport::Stream(pair) = self.transport {
                let _ = pair.into_inner().w.shutdown().await;
            }
            // ssh ends when the agent's side does; do not wait long.
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            return;
        }
        match self.transport {
            Transport::Quic { conn, _endpoint } => {
                conn.close(0u32.into(), b"bye");
                // Long enough for the endpoint to send the close (the agent
                // then ends our session at once); not the whole draining
                // period (three round-trip timeouts), which only protects
                // against late packets and would delay every hook's exit.
                let _ = tokio::time::timeout(CLOSE_FLUSH, _endpoint.wait_idle()).await;
            }
            Transport::Stream(pair) => {
                let _ = pair.into_inner().w.shutdown().await;
            }
        }
    }
}

fn hello() -> Hello {
    Hello {
        versions: proto::VERSIONS.to_vec(),
        software: format!("offload-master {}", env!("CARGO_PKG_VERSION")),
    }
}

async fn read_welcome(r: &mut (impl AsyncRead + Unpin)) -> Result<Welcome, LinkError> {
    let mut machine = MasterStream::hello();
    match framed::read_frame::<ToMaster, _>(r).await? {
        None => Err(LinkError::Lost(
            "the agent closed the stream before answering".into(),
        )),
        Some(frame) => match machine.handle(frame) {
            Ok(MasterEvent::Welcome(w)) => Ok(w),
            Ok(MasterEvent::Failed(f)) => Err(LinkError::Failed(f)),
            Ok(_) => Err(LinkError::Protocol("expected Welcome".into())),
            Err(e) => Err(LinkError::Protocol(e.to_string())),
        },
    }
}

/// What a QUIC failure means for the machine's health.
fn classify(addr: SocketAddr, e: &quinn::ConnectionError) -> LinkError {
    use quinn::ConnectionError as C;
    match e {
        C::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            // TLS alerts travel as 0x100 + alert; 49 is access_denied, what
            // the agent sends for a key not in its ACL.
            if code == 0x100 + 120 {
                // no_application_protocol: ALPN carries the version.
                LinkError::Protocol(format!(
                    "{addr}: the agent speaks another protocol version (TLS alert 120); upgrade the older side"
                ))
            } else if code == 0x100 + 49 {
                LinkError::Refused("our key is not in the agent's ACL; run `offload-master key show | ssh AGENT offload-master key authorize`".into())
            } else if (0x100..0x200).contains(&code) {
                LinkError::Refused(format!(
                    "TLS alert {} from the agent: {close}",
                    code - 0x100
                ))
            } else {
                LinkError::Lost(format!("{addr}: {close}"))
            }
        }
        // The agent's own refusal, after the handshake (its ACL changed).
        C::ApplicationClosed(close) if close.error_code == 3u32.into() => {
            LinkError::Refused("our key is not in the agent's ACL (any more)".into())
        }
        C::ApplicationClosed(close) => {
            LinkError::Lost(format!("{addr}: closed by the agent: {close}"))
        }
        C::TimedOut => LinkError::Unreachable(format!("{addr}: no answer")),
        C::VersionMismatch | C::TransportError(_) => LinkError::Protocol(format!("{addr}: {e}")),
        other => LinkError::Unreachable(format!("{addr}: {other}")),
    }
}
