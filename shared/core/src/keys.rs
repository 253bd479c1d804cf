//! Guix signing keys: `signing-key.pub` and `signing-key.sec` (spec §11).
//!
//! ```text
//! public  := (public-key (ecc (curve Ed25519) (q Q32)))          ; Guix's default shape
//!          | (public-key (rsa (n N) (e E)))                      ; legacy, verify only
//! secret  := (private-key (ecc (curve Ed25519) (q Q32) (d D)))
//!          | (private-key (rsa (n N) (e E) (d D) (p P) (q Q) (u U)))
//! ```
//!
//! A [`PublicKey`] keeps the exact s-expression it was read from, because
//! Guix matches keys against the ACL structurally; ECC keys carrying
//! `(flags eddsa)` parse but cannot sign or verify Guix archives (libgcrypt
//! refuses them too).

use sha2::{Digest, Sha256};

use crate::crypto::{ecdsa, rsa};
use crate::sexp::{self, Sexp};

/// Why a key could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not an s-expression at all.
    #[error("key is not a valid s-expression: {0}")]
    Sexp(#[from] sexp::Error),
    /// An s-expression of the wrong shape.
    #[error("{0}")]
    Shape(String),
    /// The key's numbers are unusable.
    #[error("{0}")]
    Crypto(#[from] ecdsa::Error),
}

fn shape(msg: impl Into<String>) -> Error {
    Error::Shape(msg.into())
}

/// The curve name Guix keys carry.
const CURVE: &[u8] = b"Ed25519";

/// A public key as found in `signing-key.pub`, an ACL entry or a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    sexp: Sexp,
    params: PublicParams,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicParams {
    Ecdsa { q: [u8; 32] },
    EdDsa,
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    /// Read a public key from text (any libgcrypt syntax).
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        Self::from_sexp(Sexp::parse(text)?)
    }

    /// Interpret a `(public-key …)` s-expression.
    pub fn from_sexp(sexp: Sexp) -> Result<Self, Error> {
        if sexp.tag() != Some(b"public-key") {
            return Err(shape("s-expression does not denote a public key"));
        }
        let params = match key_body(&sexp)? {
            (b"ecc", body) => {
                check_curve(body)?;
                if has_eddsa_flag(body) {
                    PublicParams::EdDsa
                } else {
                    PublicParams::Ecdsa { q: ecc_q(body)? }
                }
            }
            (b"rsa", body) => PublicParams::Rsa {
                n: mpi(body, "n")?,
                e: mpi(body, "e")?,
            },
            (algo, _) => {
                return Err(shape(format!(
                    "unsupported key algorithm `{}` (Guix keys are ecc or rsa)",
                    String::from_utf8_lossy(algo)
                )));
            }
        };
        Ok(Self { sexp, params })
    }

    /// The `(public-key …)` s-expression exactly as read.
    pub fn sexp(&self) -> &Sexp {
        &self.sexp
    }

    /// The key file text, as libgcrypt prints it (`signing-key.pub`).
    pub fn to_advanced(&self) -> Vec<u8> {
        self.sexp.to_advanced()
    }

    /// A short identity for logs, TXT records and listings: the nix-base32
    /// SHA-256 of the key's canonical s-expression (52 characters).
    pub fn fingerprint(&self) -> String {
        crate::nixbase32::encode(&Sha256::digest(self.sexp.to_canonical()))
    }

    /// The ECC key in Guix's default shape whose point is `q` (a peer's
    /// transport identity); `None` if `q` is not a point on the curve.
    pub fn from_ecc_q(q: &[u8; 32]) -> Option<Self> {
        curve25519_dalek::edwards::CompressedEdwardsY(*q)
            .decompress()
            .map(|_| ecc_public(q))
    }

    /// The ECDSA point, for ECC keys in Guix's default shape.
    pub fn ecc_q(&self) -> Option<&[u8; 32]> {
        match &self.params {
            PublicParams::Ecdsa { q } => Some(q),
            _ => None,
        }
    }

    /// The `flags` token that `(data (flags …) (hash …))` uses for this key:
    /// `rfc6979` for ECC, `pkcs1` for RSA (guile-gcrypt's `key-type`).
    pub fn data_flag(&self) -> &'static str {
        match self.params {
            PublicParams::Rsa { .. } => "pkcs1",
            _ => "rfc6979",
        }
    }

    /// Check a signature value (the `(sig-val …)` list) over `hash`.
    /// Only the cryptographic check: ACL and hash comparison are the caller's.
    pub fn verify(&self, sig_val: &Sexp, hash: &[u8]) -> Result<bool, Error> {
        match &self.params {
            PublicParams::Ecdsa { q } => {
                let body = sig_val
                    .child("ecdsa")
                    .ok_or_else(|| shape("signature value is not (sig-val (ecdsa (r …) (s …)))"))?;
                let body = Sexp::List([vec![Sexp::atom("ecdsa")], body.to_vec()].concat());
                let (r, s) = (mpi(&body, "r")?, mpi(&body, "s")?);
                Ok(ecdsa::verify(q, hash, &r, &s)?)
            }
            PublicParams::Rsa { n, e } => {
                let body = sig_val
                    .child("rsa")
                    .ok_or_else(|| shape("signature value is not (sig-val (rsa (s …)))"))?;
                let body = Sexp::List([vec![Sexp::atom("rsa")], body.to_vec()].concat());
                Ok(rsa::verify_pkcs1_sha256(n, e, hash, &mpi(&body, "s")?))
            }
            PublicParams::EdDsa => Err(shape(
                "EdDSA keys ((flags eddsa)) cannot verify Guix archive signatures",
            )),
        }
    }
}

/// A secret key from `signing-key.sec`. Only ECC keys can sign.
pub struct SecretKey {
    public: PublicKey,
    secret: Option<ecdsa::SecretScalar>,
}

impl SecretKey {
    /// Read a secret key from text. The parsed s-expression, which holds
    /// the secret, is wiped before returning.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let mut sexp = Sexp::parse(text)?;
        let key = Self::from_secret_sexp(&sexp);
        sexp.zeroize();
        key
    }

    fn from_secret_sexp(sexp: &Sexp) -> Result<Self, Error> {
        if sexp.tag() != Some(b"private-key") {
            return Err(shape("s-expression does not denote a private key"));
        }
        match key_body(sexp)? {
            (b"ecc", body) => {
                check_curve(body)?;
                if has_eddsa_flag(body) {
                    return Err(shape(
                        "EdDSA keys ((flags eddsa)) cannot sign Guix archives; \
                         generate a key in Guix's default shape with `offload-master key generate`",
                    ));
                }
                let q = ecc_q(body)?;
                let d = ecdsa::SecretScalar::from_be(&zeroize::Zeroizing::new(mpi(body, "d")?))?;
                if d.public_key() != q {
                    return Err(shape("secret key is inconsistent: q is not d·G"));
                }
                Ok(Self {
                    public: ecc_public(&q),
                    secret: Some(d),
                })
            }
            (b"rsa", body) => {
                let public = Sexp::tagged(
                    "public-key",
                    [Sexp::tagged(
                        "rsa",
                        [
                            Sexp::tagged("n", [Sexp::Atom(mpi(body, "n")?)]),
                            Sexp::tagged("e", [Sexp::Atom(mpi(body, "e")?)]),
                        ],
                    )],
                );
                Ok(Self {
                    public: PublicKey::from_sexp(public)?,
                    secret: None,
                })
            }
            (algo, _) => Err(shape(format!(
                "unsupported key algorithm `{}`",
                String::from_utf8_lossy(algo)
            ))),
        }
    }

    /// Make a key in Guix's default shape from 32 random bytes, with the
    /// secret shaped as libgcrypt shapes it.
    pub fn from_random(bytes: &[u8; 32]) -> Self {
        let d = ecdsa::SecretScalar::from_random(bytes);
        Self {
            public: ecc_public(&d.public_key()),
            secret: Some(d),
        }
    }

    /// The matching public key (`signing-key.pub`).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Use `public` (the `signing-key.pub` next to the secret key, as Guix's
    /// signing agent does) as the key embedded in signatures. It must hold
    /// the same key; its exact s-expression is kept, so ACL entries made
    /// from that file match our signatures structurally.
    pub fn with_public_key(mut self, public: PublicKey) -> Result<Self, Error> {
        let same = match (&public.params, &self.public.params) {
            (PublicParams::Ecdsa { q: a }, PublicParams::Ecdsa { q: b }) => a == b,
            (PublicParams::Rsa { n: n1, e: e1 }, PublicParams::Rsa { n: n2, e: e2 }) => {
                strip_zeros(n1) == strip_zeros(n2) && strip_zeros(e1) == strip_zeros(e2)
            }
            _ => false,
        };
        if !same {
            return Err(shape(
                "the public key file does not belong to the secret key",
            ));
        }
        self.public = public;
        Ok(self)
    }

    /// The `signing-key.sec` text as libgcrypt prints it; `None` for RSA keys,
    /// which this program never writes.
    pub fn to_advanced(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let d = self.secret.as_ref()?;
        let q = self.public.ecc_q()?;
        let mut sexp = Sexp::tagged(
            "private-key",
            [Sexp::tagged(
                "ecc",
                [
                    Sexp::tagged("curve", [Sexp::atom(CURVE)]),
                    Sexp::tagged("q", [Sexp::atom(q)]),
                    Sexp::tagged("d", [Sexp::atom(&d.to_be()[..])]),
                ],
            )],
        );
        let text = zeroize::Zeroizing::new(sexp.to_advanced());
        sexp.zeroize();
        Some(text)
    }

    /// An Ed25519 signature of `message` under this key's `q` (the
    /// transport's identity; module [`crate::crypto::ed25519`]).
    pub fn sign_ed25519(
        &self,
        message: &[u8],
    ) -> Result<[u8; crate::crypto::ed25519::SIGNATURE_LEN], Error> {
        let d = self
            .secret
            .as_ref()
            .ok_or_else(|| shape("RSA keys cannot prove an identity; generate an ECC key"))?;
        Ok(crate::crypto::ed25519::sign(d, message))
    }

    /// Sign `hash`, returning the `(sig-val (ecdsa (r …) (s …)))` list.
    pub fn sign(&self, hash: &[u8]) -> Result<Sexp, Error> {
        let d = self
            .secret
            .as_ref()
            .ok_or_else(|| shape("RSA keys can verify but not sign; generate an ECC key"))?;
        let (r, s) = d.sign(hash);
        Ok(Sexp::tagged(
            "sig-val",
            [Sexp::tagged(
                "ecdsa",
                [
                    Sexp::tagged("r", [Sexp::Atom(r)]),
                    Sexp::tagged("s", [Sexp::Atom(s)]),
                ],
            )],
        ))
    }
}

fn ecc_public(q: &[u8; 32]) -> PublicKey {
    PublicKey {
        sexp: Sexp::tagged(
            "public-key",
            [Sexp::tagged(
                "ecc",
                [
                    Sexp::tagged("curve", [Sexp::atom(CURVE)]),
                    Sexp::tagged("q", [Sexp::atom(q)]),
                ],
            )],
        ),
        params: PublicParams::Ecdsa { q: *q },
    }
}

/// `(public-key (ALGO …))` → (ALGO, the `(ALGO …)` list).
fn key_body(sexp: &Sexp) -> Result<(&[u8], &Sexp), Error> {
    match sexp.as_list() {
        Some([_, body]) => Ok((
            body.tag()
                .ok_or_else(|| shape("key has no algorithm name"))?,
            body,
        )),
        _ => Err(shape("key must hold exactly one algorithm list")),
    }
}

fn check_curve(body: &Sexp) -> Result<(), Error> {
    match body.child_atom("curve") {
        Some(CURVE) => Ok(()),
        Some(other) => Err(shape(format!(
            "unsupported curve `{}` (Guix keys use Ed25519)",
            String::from_utf8_lossy(other)
        ))),
        None => Err(shape("ecc key has no (curve …)")),
    }
}

fn has_eddsa_flag(body: &Sexp) -> bool {
    body.child("flags")
        .is_some_and(|flags| flags.iter().any(|f| f.as_atom() == Some(b"eddsa")))
}

fn ecc_q(body: &Sexp) -> Result<[u8; 32], Error> {
    let q = body
        .child_atom("q")
        .ok_or_else(|| shape("ecc key has no (q …)"))?;
    let q: [u8; 32] = q.try_into().map_err(|_| {
        shape(format!(
            "ecc public key q must be 32 bytes, not {}",
            q.len()
        ))
    })?;
    curve25519_dalek::edwards::CompressedEdwardsY(q)
        .decompress()
        .ok_or(Error::Crypto(ecdsa::Error::BadPoint))?;
    Ok(q)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn mpi(body: &Sexp, name: &str) -> Result<Vec<u8>, Error> {
    body.child_atom(name).map(<[u8]>::to_vec).ok_or_else(|| {
        shape(format!(
            "missing ({name} …) in `{}`",
            String::from_utf8_lossy(body.tag().unwrap_or(b"?"))
        ))
    })
}
