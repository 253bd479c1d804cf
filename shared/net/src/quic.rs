//! QUIC endpoints (quinn over rustls with ring) whose TLS identities are
//! Guix keys (module [`crate::identity`]). ALPN carries the protocol
//! version ([`offload_core::proto::ALPN`]). TLS 1.3 only, no session
//! resumption and no early data: every connection proves both keys.
//!
//! Transport parameters:
//! * keep-alive every [`KEEP_ALIVE`] and an idle timeout of
//!   [`IDLE_TIMEOUT`]: a peer that vanishes without closing (killed, cable
//!   pulled) is noticed within that time, and its leases and builds end;
//! * flow-control windows and congestion control: quinn's defaults (Cubic,
//!   stream window 1.25 MiB·s of a 100 Mbit/s link scaled by RTT …). The
//!   benchmark `tests/benches/transport.rs` measured them against larger
//!   windows on the namespace LAN (README, benchmark section): at LAN RTTs
//!   (≈0.2 ms) the defaults already saturate the CPU, and larger socket
//!   buffers made it worse, so they are left as they are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use offload_core::keys::SecretKey;
use offload_core::proto::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Endpoint, ServerConfig, TransportConfig, VarInt};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::server::AlwaysResolvesServerRawPublicKeys;

use crate::identity::{GuixSigningKey, IdentityError, PeerCheck};

/// How often an idle connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_millis(1000);
/// How long a connection may stay silent before it counts as lost.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(4000);
/// Most request streams a master may have open on an agent at once.
pub const MAX_STREAMS: u32 = 64;

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The key cannot be a TLS identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls or quinn refused the configuration (a bug).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn tls(e: impl std::fmt::Display) -> SetupError {
    SetupError::Tls(e.to_string())
}

/// The crypto provider: ring. rustls deprecates ring's provider because
/// it has no post-quantum key exchange; the alternative, aws-lc-rs, is a
/// large C build on every agent. Peers are pinned keys on a LAN; revisit
/// when ring gains ML-KEM.
///
/// AES-128-GCM is preferred (ring's default puts AES-256 first): on bulk
/// transfers the cipher is a large part of the CPU time, and 128-bit
/// keys are ample for session keys of a LAN service.
#[allow(deprecated)]
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    p
}

/// The transport parameters both sides use.
pub fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // 4000 ms is far below VarInt's bound: this cannot fail.
    t.max_idle_timeout(Some(
        VarInt::from_u32(IDLE_TIMEOUT.as_millis() as u32).into(),
    ));
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

/// The agent's side: present `key`, accept masters that `check` accepts.
pub fn server_config(
    key: Arc<SecretKey>,
    check: Arc<PeerCheck>,
) -> Result<ServerConfig, SetupError> {
    let certified = GuixSigningKey::new(key)?.certified();
    let provider = Arc::new(provider());
    let mut tls_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(check)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(certified)));
    tls_config.alpn_protocols = vec![ALPN.to_vec()];
    tls_config.max_early_data_size = 0;
    // No resumption: a resumed handshake skips the certificate check, so
    // a key removed from the ACL could come back on an old ticket.
    tls_config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls_config.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls_config).map_err(tls)?;
    let mut config = ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The master's side: present `key`, accept an agent that `check` accepts.
pub fn client_config(
    key: Arc<SecretKey>,
    check: Arc<PeerCheck>,
) -> Result<ClientConfig, SetupError> {
    let certified = GuixSigningKey::new(key)?.certified();
    let provider = Arc::new(provider());
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(check)
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(certified)));
    tls_config.alpn_protocols = vec![ALPN.to_vec()];
    // Every handshake proves both keys again (the agent refuses resumption).
    tls_config.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls_config).map_err(tls)?;
    let mut config = ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// An endpoint accepting connections on `addr`.
pub fn server(config: ServerConfig, addr: SocketAddr) -> Result<Endpoint, SetupError> {
    Endpoint::server(config, addr).map_err(|source| SetupError::Bind { addr, source })
}

/// An endpoint for connecting to agents at addresses of `family`'s kind.
pub fn client(peer: SocketAddr) -> Result<Endpoint, SetupError> {
    let addr: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    Endpoint::client(addr).map_err(|source| SetupError::Bind { addr, source })
}

/// The Ed25519 key a connection's peer proved, if any.
pub fn peer_key(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<rustls::pki_types::CertificateDer<'static>>>()?;
    crate::identity::key_of_spki(certs.first()?.as_ref())
}
