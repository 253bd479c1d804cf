//! narinfo signatures as Guix writes and checks them (spec §13).
//!
//! * The signed text (the fingerprint) is the narinfo from its first byte up
//!   to, not including, the first occurrence of `Signature:`.
//! * H = SHA-256 of that text; it must contain `StorePath`, `NarHash` and
//!   `References` fields, or the narinfo counts as unsigned.
//! * `Signature: 1;<hostname>;<BASE64>` where BASE64 encodes the UTF-8 form
//!   of the Latin-1 decoding of the signature s-expression's bytes.
//!
//! This is **not** Nix's `1;path;narHash;narSize;refs` fingerprint.

use data_encoding::BASE64;
use sha2::{Digest, Sha256};

use crate::acl::Acl;
use crate::signature::{MAX_SIGNATURE_LEN, Signature, Verdict};

/// Largest narinfo accepted.
pub const MAX_NARINFO_LEN: usize = 1 << 20;

/// The signed part of a narinfo: its text before the first `Signature:`.
pub fn fingerprint(narinfo: &str) -> &str {
    narinfo
        .find("Signature:")
        .map_or(narinfo, |i| &narinfo[..i])
}

/// Whether the signed part names the fields Guix requires.
pub fn signed_part_is_complete(signed: &str) -> bool {
    ["StorePath:", "NarHash:", "References:"]
        .iter()
        .all(|field| signed.lines().any(|l| l.starts_with(field)))
}

/// The signature bytes of a `Signature:` field value (`1;host;BASE64`).
pub fn decode_signature_field(value: &str) -> Option<Vec<u8>> {
    let mut parts = value.trim().splitn(3, ';');
    let (version, _host, b64) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "1" || b64.len() > MAX_SIGNATURE_LEN * 2 {
        return None;
    }
    let utf8 = String::from_utf8(BASE64.decode(b64.as_bytes()).ok()?).ok()?;
    // Latin-1: every character must be a single byte value.
    utf8.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// The `Signature:` field value for signature bytes and a host name.
pub fn encode_signature_field(host: &str, signature: &[u8]) -> String {
    let latin1: String = signature.iter().map(|b| char::from(*b)).collect();
    format!("1;{host};{}", BASE64.encode(latin1.as_bytes()))
}

/// Check a narinfo's signature against `acl`. `None` means unsigned (no
/// field, or the signed part lacks required fields).
pub fn verify(narinfo: &str, acl: &Acl) -> Option<Verdict> {
    if narinfo.len() > MAX_NARINFO_LEN {
        return Some(Verdict::Corrupt);
    }
    let signed = fingerprint(narinfo);
    if !signed_part_is_complete(signed) {
        return None;
    }
    let field = narinfo[signed.len()..]
        .lines()
        .next()?
        .strip_prefix("Signature:")?;
    let Some(sig) = decode_signature_field(field)
        .as_deref()
        .and_then(|t| Signature::parse(t).ok())
    else {
        return Some(Verdict::Corrupt);
    };
    let hash = Sha256::digest(signed.as_bytes());
    Some(sig.check(acl, &hash).verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    const SEC: &[u8] = include_bytes!("../vectors/ecc-test/signing-key.sec");

    fn signed(body: &str, below: &str) -> String {
        let key = SecretKey::parse(SEC).unwrap();
        let hash = Sha256::digest(body.as_bytes());
        let sig = Signature::create(&key, &hash).unwrap().to_advanced();
        format!(
            "{body}Signature: {}\n{below}",
            encode_signature_field("example.org", &sig)
        )
    }

    const BODY: &str = "StorePath: /gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello\nURL: nar/gzip/x\nCompression: gzip\nNarHash: sha256:0z40j90wg10bjj8cwazzxsjzb43dyy87076lpmvczbrryqk4mxgb\nNarSize: 128\nReferences: \n";

    fn acl() -> Acl {
        let mut acl = Acl::default();
        acl.authorize(SecretKey::parse(SEC).unwrap().public_key());
        acl
    }

    #[test]
    fn fingerprint_is_the_text_before_the_first_signature() {
        let text = signed(BODY, "FileSize: 10\n");
        assert_eq!(fingerprint(&text), BODY);
        assert_eq!(verify(&text, &acl()), Some(Verdict::Valid));
        // Fields below the signature are not authenticated.
        assert_eq!(
            verify(&text.replace("FileSize: 10", "FileSize: 99"), &acl()),
            Some(Verdict::Valid)
        );
        // Fields above it are.
        assert_eq!(
            verify(&text.replace("NarSize: 128", "NarSize: 129"), &acl()),
            Some(Verdict::HashMismatch)
        );
        assert_eq!(verify(&text, &Acl::default()), Some(Verdict::Unauthorized));
    }

    #[test]
    fn incomplete_or_broken_signatures() {
        let no_refs = BODY.replace("References: \n", "");
        assert_eq!(
            verify(&signed(&no_refs, ""), &acl()),
            None,
            "unsigned without References"
        );
        assert_eq!(verify(BODY, &acl()), None);
        assert_eq!(
            verify(&format!("{BODY}Signature: 1;host;!!!\n"), &acl()),
            Some(Verdict::Corrupt)
        );
        assert_eq!(
            verify(&format!("{BODY}Signature: 2;host;YQ==\n"), &acl()),
            Some(Verdict::Corrupt)
        );
    }

    #[test]
    fn signature_field_is_latin1_in_utf8_in_base64() {
        let raw = b"(x \"\xe9\")\n";
        let field = encode_signature_field("h", raw);
        let b64 = field.rsplit(';').next().unwrap();
        assert_eq!(
            BASE64.decode(b64.as_bytes()).unwrap(),
            "(x \"\u{e9}\")\n".as_bytes()
        );
        assert_eq!(decode_signature_field(&field).unwrap(), raw);
    }
}
