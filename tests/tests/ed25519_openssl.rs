//! The transport identity against an independent Ed25519 verifier: a Guix
//! key's secret d, used as is (not clamped, as libgcrypt leaves it),
//! signs messages that OpenSSL's Ed25519 verifier accepts under the Guix
//! public key — first with the golden test key of
//! `shared/core/vectors/ecc-test/`, whose d is not clamped, then with
//! fresh keys in Guix's shape.

use std::path::Path;
use std::process::Command;

use offload_core::keys::SecretKey;
use offload_tests::require_program;

/// `openssl pkeyutl -verify` of `sig` over `msg` under the Ed25519 key `q`.
fn openssl_verifies(dir: &Path, q: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    let spki = offload_net::identity::spki(q);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        data_encoding::BASE64.encode(&spki)
    );
    std::fs::write(dir.join("pub.pem"), pem).unwrap();
    std::fs::write(dir.join("msg"), msg).unwrap();
    std::fs::write(dir.join("sig"), sig).unwrap();
    let out = Command::new(require_program("openssl", "openssl"))
        .current_dir(dir)
        .args([
            "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg",
            "-sigfile", "sig",
        ])
        .output()
        .expect("run openssl");
    let said = String::from_utf8_lossy(&out.stdout);
    out.status.success() && said.contains("Signature Verified Successfully")
}

fn check(key: &SecretKey, dir: &Path) {
    let q = *key.public_key().ecc_q().expect("ECC key");
    // (OpenSSL's command line cannot read an empty message.)
    for msg in [&b"o"[..], b"offload", &[0xa5; 1000][..]] {
        let sig = key.sign_ed25519(msg).expect("sign");
        assert!(
            openssl_verifies(dir, &q, msg, &sig),
            "OpenSSL refused a signature of {} bytes",
            msg.len()
        );
        let mut other = msg.to_vec();
        other.push(1);
        assert!(
            !openssl_verifies(dir, &q, &other, &sig),
            "OpenSSL accepted a signature of another message"
        );
    }
}

#[test]
fn the_golden_key_with_an_unclamped_secret() {
    let text = include_bytes!("../../shared/core/vectors/ecc-test/signing-key.sec");
    let key = SecretKey::parse(text).expect("the test key");
    let dir = tempfile::tempdir().unwrap();
    check(&key, dir.path());
}

#[test]
fn fresh_keys_in_guix_shape() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..8u8 {
        let mut bytes = [0u8; 32];
        getrandom_bytes(&mut bytes, seed);
        check(&SecretKey::from_random(&bytes), dir.path());
    }
}

fn getrandom_bytes(out: &mut [u8; 32], seed: u8) {
    use sha2::Digest;
    out.copy_from_slice(&sha2::Sha256::digest([seed, 0x42]));
}
