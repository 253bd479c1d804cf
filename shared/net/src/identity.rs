//! The transport identity: a node's Guix key, used as-is as its TLS key
//! (design (a) of the agent issue; ARCHITECTURE.md says why).
//!
//! A Guix public key is the Ed25519 encoding of Q = d·G, so it is also an
//! Ed25519 public key, and signatures made with the scalar d verify under
//! it (`offload_core::crypto::ed25519`). Each side presents it as an
//! RFC 7250 raw public key (a 44-byte SubjectPublicKeyInfo) and signs the
//! TLS 1.3 handshake with it; each checks the other's key against its
//! policy — for the agent, "in my ACL"; for the master, "in my ACL, and the
//! key this machine advertises" — inside the handshake, before any
//! application byte. TLS 1.3 with Ed25519 only; no X.509, no CA, no trust
//! on first use.
//!
//! The policy says why it refuses a key; callers that want to report it
//! keep it themselves (the master's link does).

use std::fmt;
use std::sync::Arc;

use offload_core::keys::SecretKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, PeerIncompatible,
    SignatureAlgorithm, SignatureScheme,
};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the
/// 32-byte key follows.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The SubjectPublicKeyInfo of the Ed25519 key `q`.
pub fn spki(q: &[u8; 32]) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], q].concat()
}

/// The key of an Ed25519 SubjectPublicKeyInfo.
pub fn key_of_spki(der: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
}

/// Why an identity cannot be made from a key.
#[derive(Debug, thiserror::Error)]
#[error("the signing key cannot be a transport identity: {0}")]
pub struct IdentityError(String);

/// A Guix key as a TLS signing key.
pub struct GuixSigningKey {
    key: Arc<SecretKey>,
    q: [u8; 32],
}

impl fmt::Debug for GuixSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuixSigningKey")
            .field("fingerprint", &self.key.public_key().fingerprint())
            .finish()
    }
}

impl GuixSigningKey {
    /// The key, which must be an ECC key that can sign.
    pub fn new(key: Arc<SecretKey>) -> Result<Self, IdentityError> {
        let q = *key
            .public_key()
            .ecc_q()
            .ok_or_else(|| IdentityError("only ECC (Ed25519-curve) keys can".into()))?;
        key.sign_ed25519(b"probe")
            .map_err(|e| IdentityError(e.to_string()))?;
        Ok(Self { key, q })
    }

    /// The raw-public-key certificate and signing key rustls resolves.
    pub fn certified(self) -> Arc<CertifiedKey> {
        let cert = CertificateDer::from(spki(&self.q));
        Arc::new(CertifiedKey::new(vec![cert], Arc::new(self)))
    }
}

impl SigningKey for GuixSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(GuixSigner(Arc::clone(&self.key))) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(spki(&self.q)))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

struct GuixSigner(Arc<SecretKey>);

impl fmt::Debug for GuixSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GuixSigner")
    }
}

impl Signer for GuixSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TlsError> {
        self.0
            .sign_ed25519(message)
            .map(|s| s.to_vec())
            .map_err(|e| TlsError::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Decides whether a peer's proven key is acceptable: `Ok`, or why not.
pub type Policy = dyn Fn(&[u8; 32]) -> Result<(), String> + Send + Sync;

/// Checks the peer's raw public key against a [`Policy`], on either side
/// of the handshake.
pub struct PeerCheck {
    policy: Box<Policy>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerCheck")
    }
}

impl PeerCheck {
    /// A check applying `policy`.
    pub fn new(policy: impl Fn(&[u8; 32]) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self {
            policy: Box::new(policy),
            algorithms: crate::quic::provider().signature_verification_algorithms,
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), TlsError> {
        let verdict = if !intermediates.is_empty() {
            Err("presented a certificate chain, not one raw public key".to_owned())
        } else {
            match key_of_spki(end_entity.as_ref()) {
                None => Err("presented a key that is not Ed25519".to_owned()),
                Some(q) => (self.policy)(&q),
            }
        };
        verdict.map_err(|_| {
            TlsError::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
        })
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

/// TLS 1.2 is never offered: QUIC is TLS 1.3 only.
fn tls12_refused() -> Result<HandshakeSignatureValid, TlsError> {
    Err(TlsError::PeerIncompatible(
        PeerIncompatible::Tls12NotOffered,
    ))
}

impl ServerCertVerifier for PeerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PeerCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}
