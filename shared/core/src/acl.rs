//! The Guix ACL, `/etc/guix/acl` (spec §12).
//!
//! ```text
//! acl   := (acl entry*)
//! entry := (entry PUBLIC-KEY (tag (guix import)))
//! ```
//!
//! Parsing is strict, as in Guix (`acl->public-keys`): any other shape
//! makes the whole ACL invalid; an entry's subject may be any
//! s-expression, as there. Membership is structural equality of the parsed key
//! s-expression. The file is a trust decision, so entries are kept exactly
//! as read; keys Guix cannot use (EdDSA, unknown algorithms) are kept too
//! and simply never match a valid signature.

use crate::keys::PublicKey;
use crate::sexp::{self, Sexp};

/// Why an ACL could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not an s-expression.
    #[error("invalid access-control list: {0}")]
    Sexp(#[from] sexp::Error),
    /// Valid s-expression, wrong shape; `index` counts entries from 0.
    #[error("invalid access-control list: {0}")]
    Shape(String),
}

/// An access-control list of public keys authorized to sign imports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    keys: Vec<Sexp>,
    /// The entries that are readable public keys: fingerprint and, for ECC
    /// keys in Guix's shape, the point (the transport's identity). Computed
    /// once: they are looked up for every discovered agent and connection.
    readable: Vec<(String, Option<[u8; 32]>)>,
}

impl Acl {
    /// Parse ACL text.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let sexp = Sexp::parse(text)?;
        let Some([tag, entries @ ..]) = sexp.as_list() else {
            return Err(Error::Shape("empty list".into()));
        };
        if tag.as_atom() != Some(b"acl") {
            return Err(Error::Shape("the list must start with `acl`".into()));
        }
        let keys: Vec<Sexp> = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_entry(entry).ok_or_else(|| {
                    Error::Shape(format!(
                        "entry {} is not (entry KEY (tag (guix import)))",
                        i + 1
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let readable = keys.iter().filter_map(readable).collect();
        Ok(Self { keys, readable })
    }

    /// The ACL text as libgcrypt prints it.
    pub fn to_advanced(&self) -> Vec<u8> {
        let entries = self.keys.iter().map(|key| {
            Sexp::tagged(
                "entry",
                [
                    key.clone(),
                    Sexp::tagged("tag", [Sexp::tagged("guix", [Sexp::atom("import")])]),
                ],
            )
        });
        Sexp::tagged("acl", entries).to_advanced()
    }

    /// Whether `key` (a `(public-key …)` s-expression) is authorized.
    pub fn contains(&self, key: &Sexp) -> bool {
        self.keys.contains(key)
    }

    /// Authorize `key` by prepending it, as `guix archive --authorize` does.
    /// Returns false (and changes nothing) when it is already present.
    pub fn authorize(&mut self, key: &PublicKey) -> bool {
        if self.contains(key.sexp()) {
            return false;
        }
        self.keys.insert(0, key.sexp().clone());
        self.readable
            .insert(0, (key.fingerprint(), key.ecc_q().copied()));
        true
    }

    /// The authorized keys' s-expressions, in file order.
    pub fn keys(&self) -> &[Sexp] {
        &self.keys
    }

    /// Whether a key with this fingerprint is authorized.
    pub fn contains_fingerprint(&self, fingerprint: &str) -> bool {
        self.readable.iter().any(|(f, _)| f == fingerprint)
    }

    /// The fingerprint of the authorized ECC key whose point is `q` (a
    /// peer's proven transport identity), if there is one.
    pub fn fingerprint_of_q(&self, q: &[u8; 32]) -> Option<&str> {
        self.readable
            .iter()
            .find(|(_, p)| p.as_ref() == Some(q))
            .map(|(f, _)| f.as_str())
    }
}

/// Fingerprint and ECC point of an entry that is a readable public key.
fn readable(key: &Sexp) -> Option<(String, Option<[u8; 32]>)> {
    PublicKey::from_sexp(key.clone())
        .ok()
        .map(|k| (k.fingerprint(), k.ecc_q().copied()))
}

fn parse_entry(entry: &Sexp) -> Option<Sexp> {
    let [tag, key, acl_tag] = entry.as_list()? else {
        return None;
    };
    let import = Sexp::tagged("tag", [Sexp::tagged("guix", [Sexp::atom("import")])]);
    (tag.as_atom() == Some(b"entry") && *acl_tag == import).then(|| key.clone())
}
