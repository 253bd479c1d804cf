//! Proving keys on a byte stream (`offload-agent stdio` under SSH), where
//! no TLS handshake does it: a challenge–response in which each side signs
//! both nonces and both keys with its Guix key (Ed25519 signatures,
//! [`crate::crypto::ed25519`]), under a domain string per role. SSH's own
//! authentication is never taken as proof of the master's key.
//!
//! ```text
//! master → agent  AuthHello     { key: Qm, nonce: Nm }
//! agent  → master AuthChallenge { key: Qa, nonce: Na, signature: Sa(AGENT_DOMAIN ‖ Qm ‖ Nm ‖ Qa ‖ Na) }
//! master → agent  AuthProof     { signature: Sm(MASTER_DOMAIN ‖ Qm ‖ Nm ‖ Qa ‖ Na) }
//! ```
//!
//! The agent refuses `AuthHello` at once when Qm is not in its ACL; the
//! master refuses a challenge whose Qa is not in its ACL (or not the key
//! it expects of that machine), or whose signature fails; the agent
//! refuses a proof whose signature fails. Nonces are 32 random bytes the
//! caller supplies. Then the session goes on with `Hello` as over QUIC.

use serde::{Deserialize, Serialize};

use crate::crypto::ed25519::{self, SIGNATURE_LEN};
use crate::keys::{PublicKey, SecretKey};

/// Domain string of the agent's signature.
pub const AGENT_DOMAIN: &[u8] = b"offload stdio agent proof v1\0";
/// Domain string of the master's signature.
pub const MASTER_DOMAIN: &[u8] = b"offload stdio master proof v1\0";

/// The master's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthHello {
    /// The master's public key (the ACL's `q`).
    pub key: [u8; 32],
    /// Its nonce.
    pub nonce: [u8; 32],
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallenge {
    /// The agent's public key.
    pub key: [u8; 32],
    /// Its nonce.
    pub nonce: [u8; 32],
    /// Its signature of the transcript.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The master's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof {
    /// Its signature of the transcript.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why the exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer's key is not in our ACL.
    #[error("key {0} is not authorized")]
    Unauthorized(String),
    /// The peer's key is not the one expected of it.
    #[error("presented key {presented}, expected {expected}")]
    WrongKey {
        /// What it presented (fingerprint).
        presented: String,
        /// What we expected.
        expected: String,
    },
    /// The peer could not prove its key.
    #[error("could not prove key {0}: bad signature")]
    BadProof(String),
    /// Our own key cannot sign.
    #[error("our key cannot sign: {0}")]
    OwnKey(String),
}

pub(super) fn transcript(
    domain: &[u8],
    qm: &[u8; 32],
    nm: &[u8; 32],
    qa: &[u8; 32],
    na: &[u8; 32],
) -> Vec<u8> {
    [domain, qm, nm, qa, na].concat()
}

/// The fingerprint of the key whose point is `q`, for messages.
pub fn fingerprint(q: &[u8; 32]) -> String {
    PublicKey::from_ecc_q(q).map_or_else(
        || format!("(not a point: {})", crate::hex::encode_lower(q)),
        |k| k.fingerprint(),
    )
}

fn own_q(key: &SecretKey) -> Result<[u8; 32], AuthError> {
    key.public_key()
        .ecc_q()
        .copied()
        .ok_or_else(|| AuthError::OwnKey("not an ECC key".into()))
}

fn sign(key: &SecretKey, message: &[u8]) -> Result<Vec<u8>, AuthError> {
    key.sign_ed25519(message)
        .map(|s| s.to_vec())
        .map_err(|e| AuthError::OwnKey(e.to_string()))
}

/// The master's side.
#[derive(Debug)]
pub struct MasterAuth {
    hello: AuthHello,
}

impl MasterAuth {
    /// Start with our key and a fresh nonce; send the returned hello.
    pub fn start(key: &SecretKey, nonce: [u8; 32]) -> Result<(Self, AuthHello), AuthError> {
        let hello = AuthHello {
            key: own_q(key)?,
            nonce,
        };
        Ok((
            Self {
                hello: hello.clone(),
            },
            hello,
        ))
    }

    /// Check the agent's challenge: `accept` says whether its key is one
    /// we accept for this machine (`Err` says why not). Returns the proof
    /// to send and the agent's key.
    pub fn handle_challenge(
        self,
        key: &SecretKey,
        challenge: &AuthChallenge,
        accept: impl FnOnce(&[u8; 32]) -> Result<(), AuthError>,
    ) -> Result<(AuthProof, [u8; 32]), AuthError> {
        accept(&challenge.key)?;
        let h = &self.hello;
        let message = transcript(
            AGENT_DOMAIN,
            &h.key,
            &h.nonce,
            &challenge.key,
            &challenge.nonce,
        );
        if !ed25519::verify(&challenge.key, &message, &challenge.signature) {
            return Err(AuthError::BadProof(fingerprint(&challenge.key)));
        }
        let mine = transcript(
            MASTER_DOMAIN,
            &h.key,
            &h.nonce,
            &challenge.key,
            &challenge.nonce,
        );
        Ok((
            AuthProof {
                signature: sign(key, &mine)?,
            },
            challenge.key,
        ))
    }
}

/// The agent's side.
#[derive(Debug)]
pub struct AgentAuth {
    hello: AuthHello,
    challenge: AuthChallenge,
}

impl AgentAuth {
    /// Answer the master's hello: `accept` says whether its key is in our
    /// ACL. Send the returned challenge.
    pub fn handle_hello(
        key: &SecretKey,
        hello: AuthHello,
        nonce: [u8; 32],
        accept: impl FnOnce(&[u8; 32]) -> Result<(), AuthError>,
    ) -> Result<(Self, AuthChallenge), AuthError> {
        accept(&hello.key)?;
        let qa = own_q(key)?;
        let message = transcript(AGENT_DOMAIN, &hello.key, &hello.nonce, &qa, &nonce);
        let challenge = AuthChallenge {
            key: qa,
            nonce,
            signature: sign(key, &message)?,
        };
        Ok((
            Self {
                hello,
                challenge: challenge.clone(),
            },
            challenge,
        ))
    }

    /// Check the master's proof; its key when valid.
    pub fn handle_proof(self, proof: &AuthProof) -> Result<[u8; 32], AuthError> {
        let (h, c) = (&self.hello, &self.challenge);
        let message = transcript(MASTER_DOMAIN, &h.key, &h.nonce, &c.key, &c.nonce);
        if proof.signature.len() != SIGNATURE_LEN
            || !ed25519::verify(&h.key, &message, &proof.signature)
        {
            return Err(AuthError::BadProof(fingerprint(&h.key)));
        }
        Ok(h.key)
    }
}
