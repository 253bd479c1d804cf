//! Every golden vector in `vectors/` (copied from the project's shared
//! vectors; see `vectors/README.md` for provenance): keys, signatures, ACL,
//! export stream and Nix NARs, byte for byte.

use offload_core::acl::Acl;
use offload_core::crypto::ecdsa;
use offload_core::export::{self, ExportReader, ItemWriter};
use offload_core::hex;
use offload_core::keys::{PublicKey, SecretKey};
use offload_core::nar::{Event, NarReader, NarWriter};
use offload_core::sexp::Sexp;
use offload_core::signature::{Signature, Verdict};
use sha2::{Digest, Sha256};

macro_rules! vector {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/", $path)).as_slice()
    };
}

const ECC_PUB: &[u8] = vector!("ecc-test/signing-key.pub");
const ECC_SEC: &[u8] = vector!("ecc-test/signing-key.sec");
const EXPORT_HELLO: &[u8] = vector!("export-hello.bin");

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode_lower(&Sha256::digest(bytes))
}

#[test]
fn vector_files_are_intact() {
    let table: &[(&[u8], &str)] = &[
        (
            vector!("guix-test-rsa/signing-key.pub"),
            "e65b41fed96cb0a75def2ffebaaf90f1ce0ea211500f3bbec87611a24501256c",
        ),
        (
            vector!("guix-test-rsa/signing-key.sec"),
            "0fe63351ad28b6200516e0900a729621a23a0fac7dc374f14f860992e0343159",
        ),
        (
            vector!("guix-test-rsa/export-hello.sig"),
            "ae8d09f9d2598ae7f2273077e61aa0cd15e5438d7bc163fe2d9e4665ade13de2",
        ),
        (
            ECC_PUB,
            "dda89bbb3296734105c4ae5f333b1de01d33928e0cb388a5fb5e1a9a5311c5f1",
        ),
        (
            ECC_SEC,
            "75b9041dfeb32ae78fcdf466bb3e4e2fe6d078267dc72a24620d7056dffb92d0",
        ),
        (
            vector!("ecc-test/export-hello.sig"),
            "b4477e6cc7c7ec8833f0993e29e76aff1e69868fa4d02462c3649eeeb8460aa4",
        ),
        (
            vector!("ecc-test/short-s.sig"),
            "11b75e8135d916b5b9b93400b6de958c585623414df38c3fec13eaa9f24800ee",
        ),
        (
            vector!("ecc-test/quoted-hash.sig"),
            "2a1e60ecd20c4a974a40f811dccf212027be0decb75c6cf0375897cc167f373f",
        ),
        (
            vector!("ecc-test/quoted-r.sig"),
            "886561aa1fc6162d2229efa4da4bb8d0330d97976d87fc3c3817ff8fd7be6696",
        ),
        (
            vector!("ecc-vectors.txt"),
            "d46ffc43317af8d578f0673d3c4cb03abba5bfeb439ee4498626ce559709b4ab",
        ),
        (
            EXPORT_HELLO,
            "11aa0f28925749f737bd522fec4092be3764de5e4c7a9a0055e5056903589c71",
        ),
        (
            vector!("acl-farm-keys"),
            "956d092736aa39d7a5194270235a30f9f52ffcd44fda5bc0c8bacf4276964e92",
        ),
        (
            vector!("farm-keys/berlin.guix.gnu.org.pub"),
            "0f7e51614eac75353196b650e73b7b5eeee59824b0f78935da0d6717ddd1792f",
        ),
        (
            vector!("farm-keys/bordeaux.guix.gnu.org.pub"),
            "2787b56a1a8682853819fdd457773247040d3893ec8f255bd71093281cabf533",
        ),
        (
            vector!("nix/hello-hi.nar"),
            "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6",
        ),
        (
            vector!("nix/tree.nar"),
            "5778606efdf721be5816400031a11d42e63f9d30713000e36d495ab45a40d5b0",
        ),
        (
            vector!("nix/hello.export"),
            "81a99847e806f61808e158bad380e1f44c06fedf0e776df527f126952dc5d737",
        ),
    ];
    for (i, (bytes, expected)) in table.iter().enumerate() {
        assert_eq!(
            sha256_hex(bytes),
            *expected,
            "vector #{i} was altered (line endings? trailing spaces?)"
        );
    }
}

#[test]
fn ecc_test_key_files_round_trip() {
    let public = PublicKey::parse(ECC_PUB).unwrap();
    assert_eq!(public.to_advanced(), ECC_PUB);
    let secret = SecretKey::parse(ECC_SEC).unwrap();
    assert_eq!(secret.public_key(), &public);
    assert_eq!(&secret.to_advanced().unwrap()[..], ECC_SEC);
    assert_eq!(
        hex::encode_upper(public.ecc_q().unwrap()),
        "F2859065CFC050C10DD20FC479E0072BC21F2F1B732E3DA80E051212BCE8FAA6"
    );
}

#[test]
fn farm_keys_and_acl_round_trip() {
    let berlin = vector!("farm-keys/berlin.guix.gnu.org.pub");
    let bordeaux = vector!("farm-keys/bordeaux.guix.gnu.org.pub");
    let acl_text = vector!("acl-farm-keys");
    // berlin has libgcrypt's layout, bordeaux a hand-made one: both read.
    let berlin = PublicKey::parse(berlin).unwrap();
    assert_eq!(
        berlin.to_advanced(),
        vector!("farm-keys/berlin.guix.gnu.org.pub")
    );
    let bordeaux = PublicKey::parse(bordeaux).unwrap();
    assert_ne!(
        bordeaux.to_advanced(),
        vector!("farm-keys/bordeaux.guix.gnu.org.pub")
    );
    let acl = Acl::parse(acl_text).unwrap();
    assert_eq!(acl.to_advanced(), acl_text);
    assert!(acl.contains(berlin.sexp()) && acl.contains(bordeaux.sexp()));
    // Authorizing prepends, as `guix archive --authorize` does.
    let mut built = Acl::default();
    assert!(built.authorize(&bordeaux));
    assert!(built.authorize(&berlin));
    assert!(!built.authorize(&berlin), "already present");
    assert_eq!(built.to_advanced(), acl_text);
    assert_eq!(Acl::default().to_advanced(), b"(acl)\n");
}

fn ecc_acl() -> Acl {
    let mut acl = Acl::default();
    acl.authorize(&PublicKey::parse(ECC_PUB).unwrap());
    acl
}

#[test]
fn ecc_signature_files_verify_and_reproduce() {
    let key = SecretKey::parse(ECC_SEC).unwrap();
    let acl = ecc_acl();
    let files: [(&[u8], &str); 4] = [
        (
            vector!("ecc-test/export-hello.sig"),
            "A56420A104661BECBFEED24046113FF3E0503F7B33F5A449141C4E4A6D89CBB7",
        ),
        (
            vector!("ecc-test/short-s.sig"),
            "D99EE840D3174DCDE03BBBA2FD9549470434035407E4AD3E742ACFFF9D2A26E0",
        ),
        (
            vector!("ecc-test/quoted-hash.sig"),
            "327DEAC9DFFAEF792BB3AF21C122A3A7095D61487EBD6C53A8B8EBDAD5C620F2",
        ),
        (
            vector!("ecc-test/quoted-r.sig"),
            "DF149D544F1258E147B0BC0A7D86DCEC38A82B36FCC4C50E7C02B1E288355985",
        ),
    ];
    for (text, h) in files {
        let h = hex::decode(h.as_bytes()).unwrap();
        let sig = Signature::parse(text).unwrap();
        assert_eq!(sig.to_advanced(), text, "re-printing {h:02x?}");
        assert_eq!(sig.check(&acl, &h).verdict, Verdict::Valid);
        let ours = Signature::create(&key, &h).unwrap().to_advanced();
        assert_eq!(
            ours,
            text,
            "our signature text for H={}",
            hex::encode_upper(&h)
        );
    }
}

#[test]
fn short_s_text_is_exact() {
    let text = vector!("ecc-test/short-s.sig");
    assert_eq!(text.len(), 428);
    assert!(text.windows(66).any(|w| {
        w == b"(s #9B56FCE810045E9DA0B981668EA707BDDA71C1F369AF9E2A7470DC4F349E37#)".as_slice()
            [..66]
            .as_ref()
    }));
}

struct Block {
    fields: Vec<(String, String)>,
}

impl Block {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn bytes(&self, key: &str) -> Vec<u8> {
        hex::decode(self.get(key).unwrap().as_bytes()).unwrap()
    }
}

fn ecc_blocks() -> Vec<Block> {
    let text = std::str::from_utf8(vector!("ecc-vectors.txt")).unwrap();
    text.split("\n\n")
        .map(|block| Block {
            fields: block
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        })
        .filter(|b| b.get("ecdsa").is_some())
        .collect()
}

#[test]
fn ecc_vectors_txt() {
    let blocks = ecc_blocks();
    assert!(blocks.len() >= 9, "found {} vector blocks", blocks.len());
    for b in &blocks {
        let name = b.get("name").unwrap();
        let q: [u8; 32] = b.bytes("q").try_into().unwrap();
        let h = b.bytes("H");
        if let Some(msg) = b.get("msg") {
            assert_eq!(
                Sha256::digest(msg.as_bytes()).as_slice(),
                h,
                "{name}: H = SHA-256(msg)"
            );
        }
        let expected = b.get("ecdsa") == Some("valid");
        let got = ecdsa::verify(&q, &h, &b.bytes("r"), &b.bytes("s")).unwrap();
        assert_eq!(got, expected, "{name}: ECDSA check");
        if let Some(d) = b.get("d") {
            let d = ecdsa::SecretScalar::from_be(&hex::decode(d.as_bytes()).unwrap()).unwrap();
            assert_eq!(d.public_key(), q, "{name}: q = d·G");
            if expected {
                let (r, s) = d.sign(&h);
                assert_eq!(
                    (r, s),
                    (b.bytes("r"), b.bytes("s")),
                    "{name}: RFC 6979 signature"
                );
            }
        }
    }
}

#[test]
fn low_bit_flip_needs_the_hash_comparison() {
    let h =
        hex::decode(b"A56420A104661BECBFEED24046113FF3E0503F7B33F5A449141C4E4A6D89CBB7").unwrap();
    let sig = Signature::parse(vector!("ecc-test/export-hello.sig")).unwrap();
    let acl = ecc_acl();
    let mut low = h.clone();
    low[31] ^= 1;
    // The ECDSA check alone passes (only H >> 3 is signed)…
    let q = *PublicKey::parse(ECC_PUB).unwrap().ecc_q().unwrap();
    let (r, s) = (
        hex::decode(b"02B27A38E509BD81882FD9A169AD93C2DA74A1F868EDCCC266D7DBD314764F9A").unwrap(),
        hex::decode(b"0C128F3410D194EE7409E4E1FD3FEC0A19ADD0DEE30C70AA0F866D5867CD992C").unwrap(),
    );
    assert!(ecdsa::verify(&q, &low, &r, &s).unwrap());
    // …so the signature check must compare the hash itself.
    assert_eq!(sig.check(&acl, &low).verdict, Verdict::HashMismatch);
    let mut bit3 = h.clone();
    bit3[31] ^= 8;
    assert!(!ecdsa::verify(&q, &bit3, &r, &s).unwrap());
    assert_eq!(
        sig.check(&Acl::default(), &h).verdict,
        Verdict::Unauthorized
    );
}

#[test]
fn rsa_vector_verifies() {
    let public = PublicKey::parse(vector!("guix-test-rsa/signing-key.pub")).unwrap();
    let secret = SecretKey::parse(vector!("guix-test-rsa/signing-key.sec")).unwrap();
    assert_eq!(
        secret.public_key().sexp(),
        public.sexp(),
        "public part of the secret key"
    );
    assert!(secret.sign(&[0; 32]).is_err(), "RSA keys do not sign");
    let mut acl = Acl::default();
    acl.authorize(&public);
    let h =
        hex::decode(b"A56420A104661BECBFEED24046113FF3E0503F7B33F5A449141C4E4A6D89CBB7").unwrap();
    let text = vector!("guix-test-rsa/export-hello.sig");
    let sig = Signature::parse(text).unwrap();
    assert_eq!(sig.to_advanced(), text);
    assert_eq!(sig.check(&acl, &h).verdict, Verdict::Valid);
    // A flipped byte in s breaks it.
    let mut sexp = Sexp::parse(text).unwrap();
    flip_in_atom_after(&mut sexp, b"s");
    let tampered = Signature::parse(&sexp.to_advanced()).unwrap();
    assert_eq!(tampered.check(&acl, &h).verdict, Verdict::Invalid);
}

fn flip_in_atom_after(sexp: &mut Sexp, tag: &[u8]) -> bool {
    if let Sexp::List(items) = sexp {
        if items.first().and_then(Sexp::as_atom) == Some(tag)
            && let Some(Sexp::Atom(bytes)) = items.get_mut(1)
        {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            return true;
        }
        return items.iter_mut().any(|item| flip_in_atom_after(item, tag));
    }
    false
}

/// Re-encode a NAR from its events: the writer must reproduce it exactly.
fn reencode(nar: &[u8]) -> Vec<u8> {
    let mut reader = NarReader::new(nar, Default::default());
    let mut writer = NarWriter::new(Vec::new()).unwrap();
    while let Some(event) = reader.next_event().unwrap() {
        match event {
            Event::Regular {
                name,
                executable,
                size,
            } => {
                let mut contents = Vec::new();
                let mut buf = [0u8; 3];
                loop {
                    let n = reader.contents(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    contents.extend_from_slice(&buf[..n]);
                }
                writer
                    .regular(name.as_deref(), executable, size, &mut contents.as_slice())
                    .unwrap();
            }
            Event::Symlink { name, target } => writer.symlink(name.as_deref(), &target).unwrap(),
            Event::Directory { name } => writer.start_directory(name.as_deref()).unwrap(),
            Event::EndDirectory => writer.end_directory().unwrap(),
        }
    }
    assert!(reader.is_done());
    writer.finish().unwrap()
}

#[test]
fn nix_nars_reencode_identically() {
    for nar in [vector!("nix/hello-hi.nar"), vector!("nix/tree.nar")] {
        assert_eq!(reencode(nar), nar);
    }
    let events: Vec<Event> = {
        let mut r = NarReader::new(vector!("nix/tree.nar"), Default::default());
        std::iter::from_fn(|| r.next_event().unwrap()).collect()
    };
    let names: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Regular { name: Some(n), .. }
            | Event::Symlink { name: Some(n), .. }
            | Event::Directory { name: Some(n) } => Some(String::from_utf8_lossy(n).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a.txt", "empty", "link", "sub", "run.sh"]);
    assert!(events.contains(&Event::Symlink {
        name: Some(b"link".to_vec()),
        target: b"a.txt".to_vec()
    }));
    assert!(events.contains(&Event::Regular {
        name: Some(b"run.sh".to_vec()),
        executable: true,
        size: 17
    }));
}

#[test]
fn export_hello_reads_verifies_and_rewrites() {
    let mut reader = ExportReader::new(EXPORT_HELLO, Default::default());
    let mut item = reader.next_item().unwrap().unwrap();
    let mut contents = Vec::new();
    while let Some(event) = item.nar().next_event().unwrap() {
        if let Event::Regular { .. } = event {
            let mut buf = [0u8; 64];
            let n = item.nar().contents(&mut buf).unwrap();
            contents.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(contents, b"Hello, Guix!\n");
    let trailer = item.finish().unwrap();
    assert!(reader.next_item().unwrap().is_none());
    assert!(reader.is_done());
    assert_eq!(
        trailer.path.to_string(),
        "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello.txt"
    );
    assert!(trailer.references.is_empty() && trailer.deriver.is_none());
    assert_eq!(
        hex::encode_lower(&trailer.hash),
        "a56420a104661becbfeed24046113ff3e0503f7b33f5a449141c4e4a6d89cbb7"
    );
    assert_eq!(
        sha256_hex(&EXPORT_HELLO[8..8 + 128]),
        "ebf54a26f639afcf76bdd41c7090f76d90f5a5eeff2bce90940b84c74192807c"
    );
    // The NAR is the first 128 bytes of the item: its hash and size.
    assert_eq!(trailer.nar_size, 128);
    assert_eq!(
        hex::encode_lower(&trailer.nar_hash),
        sha256_hex(&EXPORT_HELLO[8..8 + 128])
    );
    let check = export::check_item(&trailer, &ecc_acl());
    assert!(check.is_valid(), "{}", check.word());
    assert_eq!(check.signer.unwrap().to_advanced(), ECC_PUB);
    assert_eq!(
        export::check_item(&trailer, &Acl::default()).word(),
        "unauthorized"
    );

    // Writing the same item with the same key reproduces all 680 bytes.
    let key = SecretKey::parse(ECC_SEC).unwrap();
    let mut out = Vec::new();
    let mut item = ItemWriter::begin(&mut out).unwrap();
    let mut nar = NarWriter::new(item.nar_sink()).unwrap();
    nar.regular(None, false, 13, &mut &b"Hello, Guix!\n"[..])
        .unwrap();
    nar.finish().unwrap();
    let hash = item
        .finish(&trailer.path, &[], None, |h| {
            Some(Signature::create(&key, h).unwrap().to_advanced())
        })
        .unwrap();
    export::write_end(&mut out).unwrap();
    assert_eq!(hash, trailer.hash);
    assert_eq!(out, EXPORT_HELLO);
}

#[test]
fn nix_export_reads_as_unsigned() {
    let mut reader = ExportReader::new(vector!("nix/hello.export"), Default::default());
    let mut item = reader.next_item().unwrap().unwrap();
    while item.nar().next_event().unwrap().is_some() {}
    let trailer = item.finish().unwrap();
    assert_eq!(
        trailer.path.to_string(),
        "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"
    );
    assert_eq!(
        trailer.deriver.as_ref().unwrap().to_string(),
        "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv"
    );
    assert!(trailer.signature.is_none());
    // `nix-daemon.md` §4.1: the hello output's NAR is the 120-byte `hi\n` vector.
    assert_eq!(trailer.nar_size, 120);
    assert_eq!(
        hex::encode_lower(&trailer.nar_hash),
        "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6"
    );
    assert_eq!(export::check_item(&trailer, &ecc_acl()).word(), "unsigned");
    assert!(reader.next_item().unwrap().is_none());
}

/// libgcrypt shapes Ed25519-curve secrets like X25519 ones (bit 254 set),
/// so d > n, and RFC 6979 hashes the unreduced d. Key and signature made
/// by libgcrypt 1.10.1 through guile-gcrypt (`tests/guile_interop.rs`).
#[test]
fn libgcrypt_key_with_d_above_n_signs_identically() {
    let sec = b"(private-key \n (ecc \n  (curve Ed25519)\n  (q #7C077E5ED66D61A55EB066E2CF2132F2C878D55D133BD0499C9B69E80E639946#)\n  (d #6B3EBD4F602BDEC1F77FF45009B6CBC5B3E732E31267BA7CC051CB74A43A9530#)\n  )\n )\n";
    let key = SecretKey::parse(sec).unwrap();
    assert_eq!(
        &key.to_advanced().unwrap()[..],
        sec,
        "d is printed unreduced"
    );
    let h =
        hex::decode(b"a56420a104661becbfeed24046113ff3e0503f7b33f5a449141c4e4a6d89cbb7").unwrap();
    let sig = key.sign(&h).unwrap();
    let body = sig.find_token("ecdsa").unwrap();
    assert_eq!(
        hex::encode_upper(body.child_atom("r").unwrap()),
        "02626C104EEC5D66E23C2D066991BAD5FDE7C084A604A8B51CA0F72EACEF2726"
    );
    assert_eq!(
        hex::encode_upper(body.child_atom("s").unwrap()),
        "04020B87D4157C29E234A1ADFD4F4849C159E884816380CDFD6539A520EC4F00"
    );
}

#[test]
fn generated_keys_have_libgcrypts_shape() {
    let key = SecretKey::from_random(&[0xff; 32]);
    let text = key.to_advanced().unwrap();
    let sexp = Sexp::parse(&text).unwrap();
    let d = sexp.find_token("ecc").unwrap().child_atom("d").unwrap();
    assert_eq!(d.len(), 32);
    assert_eq!(d[0] & 0xc0, 0x40, "bit 254 set, bit 255 clear");
    assert_eq!(d[31] & 0x07, 0, "low 3 bits clear");
    let reparsed = SecretKey::parse(&text).unwrap();
    assert_eq!(reparsed.public_key(), key.public_key());
}

/// Guix's `signature-status`: corrupt only without `data` or `public-key`;
/// a `data` without a hash is a hash mismatch; anything that makes
/// `gcry_pk_verify` fail is invalid.
#[test]
fn verdicts_follow_guix_order() {
    let acl = ecc_acl();
    let h =
        hex::decode(b"A56420A104661BECBFEED24046113FF3E0503F7B33F5A449141C4E4A6D89CBB7").unwrap();
    let text = vector!("ecc-test/export-hello.sig");
    let mut sexp = Sexp::parse(text).unwrap();
    let verdict = |s: &Sexp| {
        Signature::parse(&s.to_advanced())
            .unwrap()
            .check(&acl, &h)
            .verdict
    };
    assert_eq!(verdict(&sexp), Verdict::Valid);
    let Sexp::List(items) = &mut sexp else {
        panic!()
    };
    let (data, sig_val, key) = (items[1].clone(), items[2].clone(), items[3].clone());
    let sig = |parts: Vec<Sexp>| Sexp::tagged("signature", parts);
    assert_eq!(
        verdict(&sig(vec![sig_val.clone(), key.clone()])),
        Verdict::Corrupt,
        "no data"
    );
    assert_eq!(
        verdict(&sig(vec![data.clone(), sig_val.clone()])),
        Verdict::Corrupt,
        "no public-key"
    );
    let no_hash = Sexp::tagged("data", [Sexp::tagged("flags", [Sexp::atom("rfc6979")])]);
    assert_eq!(
        verdict(&sig(vec![no_hash, sig_val.clone(), key.clone()])),
        Verdict::HashMismatch
    );
    assert_eq!(
        verdict(&sig(vec![data.clone(), key.clone()])),
        Verdict::Invalid,
        "no sig-val"
    );
    let bogus = Sexp::tagged(
        "sig-val",
        [Sexp::tagged(
            "rsa",
            [Sexp::tagged("s", [Sexp::atom([1u8])])],
        )],
    );
    assert_eq!(
        verdict(&sig(vec![data, bogus, key])),
        Verdict::Invalid,
        "wrong algorithm"
    );
}

#[test]
fn hex_escapes_need_two_hex_digits() {
    assert!(Sexp::parse(b"(a \"\\x+f\")").is_err());
    assert_eq!(
        Sexp::parse(b"(a \"\\x4a\")").unwrap(),
        Sexp::tagged("a", [Sexp::atom("J")])
    );
}

#[test]
fn acl_entries_may_have_any_subject_as_in_guix() {
    let acl = Acl::parse(
        b"(acl (entry (hash sha256 #00#) (tag (guix import))) (entry foo (tag (guix import))))",
    )
    .unwrap();
    assert_eq!(acl.keys().len(), 2);
    assert!(Acl::parse(b"(acl (entry foo (tag (guix export))))").is_err());
}

#[test]
fn with_public_key_keeps_the_files_layout_and_rejects_other_keys() {
    let key = SecretKey::parse(ECC_SEC).unwrap();
    let own = PublicKey::parse(b"(public-key (ecc (curve \"Ed25519\") (q |8oWQZc/AUMEN0g/EeeAHK8IfLxtzLj2oDgUSErzo+qY=|)))").unwrap();
    let key = key.with_public_key(own.clone()).unwrap();
    assert_eq!(key.public_key(), &own);
    let other = PublicKey::parse(vector!("farm-keys/berlin.guix.gnu.org.pub")).unwrap();
    assert!(
        SecretKey::parse(ECC_SEC)
            .unwrap()
            .with_public_key(other)
            .is_err()
    );
}
