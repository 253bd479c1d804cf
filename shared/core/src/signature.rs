//! The Guix signature s-expression and its verification (spec §6).
//!
//! ```text
//! (signature (data (flags rfc6979|pkcs1) (hash sha256 #H#))
//!            (sig-val (ecdsa (r #R#) (s #S#)) | (rsa (s #S#)))
//!            (public-key …))
//! ```
//!
//! Verification follows Guix's `signature-status`, in this order: no
//! `data` or no `public-key` list → [`Verdict::Corrupt`]; public key not
//! structurally in the ACL → [`Verdict::Unauthorized`]; the value of the
//! `(hash ALGO VALUE)` found in `data` (depth-first, as `find-sexp-token`)
//! missing or ≠ the expected hash → [`Verdict::HashMismatch`]; anything
//! that makes `gcry_pk_verify` fail (no `sig-val`, an unusable key, a wrong
//! signature) → [`Verdict::Invalid`]. The hash comparison matters: ECDSA
//! here covers only the top 253 bits of H.

use std::fmt;

use crate::acl::Acl;
use crate::keys::{PublicKey, SecretKey};
use crate::sexp::Sexp;

/// The largest signature text accepted (an RSA-16384 signature is ~5 KiB).
pub const MAX_SIGNATURE_LEN: usize = 64 << 10;

/// The outcome of checking a signature against an ACL and an expected hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by an authorized key over exactly the expected hash.
    Valid,
    /// The signing key is not in the ACL.
    Unauthorized,
    /// The signature covers a different hash than the content.
    HashMismatch,
    /// The cryptographic check failed.
    Invalid,
    /// The signature text is malformed or lacks parts.
    Corrupt,
}

impl Verdict {
    /// The lowercase word used in listings (`valid`, `hash-mismatch`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Unauthorized => "unauthorized",
            Self::HashMismatch => "hash-mismatch",
            Self::Invalid => "invalid",
            Self::Corrupt => "corrupt",
        }
    }

    /// What the verdict means and what to do, for error messages.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Valid => "valid signature",
            Self::Unauthorized => {
                "the signing key is not in the ACL; if you trust it, add it with `offload-master key authorize`"
            }
            Self::HashMismatch => {
                "the signed hash does not match the content: the archive is corrupt or was tampered with; do not use it, transfer it again"
            }
            Self::Invalid => {
                "invalid signature: the archive was altered or the signature forged; do not use it, transfer it again"
            }
            Self::Corrupt => {
                "corrupt signature data (no data or public-key part): transfer the archive again"
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed signature s-expression.
#[derive(Clone, Debug)]
pub struct Signature {
    sexp: Sexp,
}

/// The result of [`Signature::check`]: the verdict and, when the signature
/// named one, its key.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The verdict.
    pub verdict: Verdict,
    /// The signer's key, when the signature carries a readable one.
    pub signer: Option<PublicKey>,
}

/// Why signature text is not a signature (the caller reports
/// [`Verdict::Corrupt`], with this as the cause).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_SIGNATURE_LEN`].
    #[error("signature text of {0} bytes, more than {MAX_SIGNATURE_LEN}")]
    TooLong(usize),
    /// Not an s-expression.
    #[error("the signature is not an s-expression: {0}")]
    Sexp(#[from] crate::sexp::Error),
}

impl Signature {
    /// Parse signature text.
    pub fn parse(text: &[u8]) -> Result<Self, ParseError> {
        if text.len() > MAX_SIGNATURE_LEN {
            return Err(ParseError::TooLong(text.len()));
        }
        Ok(Self {
            sexp: Sexp::parse(text)?,
        })
    }

    /// Sign `hash` with `key` as Guix's `signature-sexp` does.
    pub fn create(key: &SecretKey, hash: &[u8]) -> Result<Self, crate::keys::Error> {
        let public = key.public_key();
        let data = hash_data(public, hash);
        let sig_val = key.sign(hash)?;
        Ok(Self {
            sexp: Sexp::tagged("signature", [data, sig_val, public.sexp().clone()]),
        })
    }

    /// The text libgcrypt prints for this signature (advanced format).
    pub fn to_advanced(&self) -> Vec<u8> {
        self.sexp.to_advanced()
    }

    /// The signer's public key, if the signature names a readable one.
    pub fn signer(&self) -> Option<PublicKey> {
        PublicKey::from_sexp(self.sexp.find_token("public-key")?.clone()).ok()
    }

    /// The hash value of the `(hash ALGO VALUE)` list inside `data`.
    pub fn signed_hash(&self) -> Option<&[u8]> {
        match self
            .sexp
            .find_token("data")?
            .find_token("hash")?
            .as_list()?
        {
            [_tag, _algo, value] => value.as_atom(),
            _ => None,
        }
    }

    /// Check the signature as Guix does (see the module documentation).
    pub fn check(&self, acl: &Acl, expected_hash: &[u8]) -> Checked {
        let (Some(subject), Some(_data)) = (
            self.sexp.find_token("public-key"),
            self.sexp.find_token("data"),
        ) else {
            return Checked {
                verdict: Verdict::Corrupt,
                signer: None,
            };
        };
        let signer = PublicKey::from_sexp(subject.clone()).ok();
        let signed_hash = self.signed_hash();
        let verdict = if !acl.contains(subject) {
            Verdict::Unauthorized
        } else if signed_hash != Some(expected_hash) {
            Verdict::HashMismatch
        } else {
            match (&signer, self.sexp.find_token("sig-val")) {
                (Some(key), Some(sig_val))
                    if key.verify(sig_val, expected_hash).unwrap_or(false) =>
                {
                    Verdict::Valid
                }
                _ => Verdict::Invalid,
            }
        };
        Checked { verdict, signer }
    }
}

/// `(data (flags rfc6979|pkcs1) (hash sha256 #H#))`, guile-gcrypt's
/// `bytevector->hash-data` for SHA-256.
pub fn hash_data(key: &PublicKey, hash: &[u8]) -> Sexp {
    Sexp::tagged(
        "data",
        [
            Sexp::tagged("flags", [Sexp::atom(key.data_flag())]),
            Sexp::tagged("hash", [Sexp::atom("sha256"), Sexp::atom(hash)]),
        ],
    )
}
