use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::{Derivation, Error, MAX_DRV_LEN, MAX_OUTPUTS, Output};
use crate::{hex, nixbase32};

/// Golden `.drv` files written by Nix 2.8 (see `vectors/drv/README.md`) and
/// the store paths Nix gave them.
const GOLDEN: &[(&str, &[u8], &str)] = &[
    (
        "hello.drv",
        include_bytes!("../../vectors/drv/hello.drv"),
        "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv",
    ),
    (
        "hello-gnu.drv",
        include_bytes!("../../vectors/drv/hello-gnu.drv"),
        "/gnu/store/mjnvhnrq147j2vrib7axrp905ivx5zhq-hello.drv",
    ),
    (
        "step-a.drv",
        include_bytes!("../../vectors/drv/step-a.drv"),
        "/nix/store/6wk3f6wkp9faw3j2ws355ga1g50zrs69-step-a.drv",
    ),
    (
        "step-b.drv",
        include_bytes!("../../vectors/drv/step-b.drv"),
        "/nix/store/sg2dimw8y0nfgig3hwd21bcrfz6zhq9z-step-b.drv",
    ),
    (
        "needs-kvm.drv",
        include_bytes!("../../vectors/drv/needs-kvm.drv"),
        "/nix/store/nqvpbzllzn9g9fpqyjr8a6bkds1856g1-needs-kvm.drv",
    ),
    (
        "escapes.drv",
        include_bytes!("../../vectors/drv/escapes.drv"),
        "/nix/store/f4flsygmyakil9bkfalhf69f7r4if31s-escapes.drv",
    ),
    (
        "lib.drv",
        include_bytes!("../../vectors/drv/lib.drv"),
        "/nix/store/sibraajzwq2m5i73qhswfzc32ywv8078-lib.drv",
    ),
    (
        "multi.drv",
        include_bytes!("../../vectors/drv/multi.drv"),
        "/nix/store/q5qyxsby5ncf1rc93n22lbj3sm8if42v-multi.drv",
    ),
    (
        "fixed-rec.drv",
        include_bytes!("../../vectors/drv/fixed-rec.drv"),
        "/nix/store/6d03xmvav3kwg2kzpc39w1rcczdvwbfv-fixed-rec.drv",
    ),
    (
        "fixed-flat.drv",
        include_bytes!("../../vectors/drv/fixed-flat.drv"),
        "/nix/store/x67vlfisa443h7m9la58vg61icza4nsf-fixed-flat.drv",
    ),
    (
        "raw-platform.drv",
        include_bytes!("../../vectors/drv/raw-platform.drv"),
        "/nix/store/3bh5r16lrrag13cwmfljdban4nmwl6g2-odd2.drv",
    ),
];

fn golden(name: &str) -> Derivation {
    let (_, bytes, _) = GOLDEN.iter().find(|(n, _, _)| *n == name).unwrap();
    Derivation::parse(bytes).unwrap()
}

/// Nix's `makeTextPath` for a `.drv`: the store path of `contents` under
/// `dir` with the derivation's inputs as references.
fn text_store_path(dir: &str, name: &str, contents: &[u8], references: &BTreeSet<&str>) -> String {
    let mut fingerprint = String::from("text");
    for r in references {
        fingerprint.push(':');
        fingerprint.push_str(r);
    }
    fingerprint.push_str(":sha256:");
    fingerprint.push_str(&hex::encode_lower(&Sha256::digest(contents)));
    fingerprint.push_str(&format!(":{dir}:{name}"));
    let full = Sha256::digest(fingerprint.as_bytes());
    let mut folded = [0u8; 20];
    for (i, b) in full.iter().enumerate() {
        folded[i % 20] ^= b;
    }
    format!("{dir}/{}-{name}", nixbase32::encode(&folded))
}

#[test]
fn golden_files_reprint_byte_identically() {
    for (name, bytes, _) in GOLDEN {
        let drv = Derivation::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(drv.to_aterm(), *bytes, "{name} re-printed differently");
    }
}

#[test]
fn golden_files_hash_to_their_store_paths() {
    // to_aterm's bytes give Nix's store path: they are what Nix hashed.
    for (file, bytes, path) in GOLDEN {
        let drv = Derivation::parse(bytes).unwrap();
        let (dir, base) = path.rsplit_once('/').unwrap();
        let name = &base[33..];
        let refs: BTreeSet<&str> = drv
            .input_srcs
            .iter()
            .chain(drv.input_drvs.keys())
            .map(String::as_str)
            .collect();
        assert_eq!(
            text_store_path(dir, name, &drv.to_aterm(), &refs),
            *path,
            "{file}"
        );
    }
}

#[test]
fn hello_fields() {
    let drv = golden("hello.drv");
    let out = &drv.outputs["out"];
    assert_eq!(
        out.path,
        "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"
    );
    assert_eq!((out.hash_algo.as_str(), out.hash.as_str()), ("", ""));
    assert!(drv.input_drvs.is_empty() && drv.input_srcs.is_empty());
    assert_eq!(drv.system, "x86_64-linux");
    assert_eq!(drv.builder, "/bin/sh");
    assert_eq!(drv.args, ["-c", "echo hi > $out"]);
    assert_eq!(
        drv.env.keys().collect::<Vec<_>>(),
        ["builder", "name", "out", "system"]
    );
    assert!(drv.required_system_features().is_empty());

    let gnu = golden("hello-gnu.drv");
    assert_eq!(
        gnu.outputs["out"].path,
        "/gnu/store/klxz1v84pdc9nz82lga769p2hpc0q085-hello"
    );
    assert_eq!(gnu.env["out"], gnu.outputs["out"].path);
}

#[test]
fn input_derivations_and_sources() {
    let b = golden("step-b.drv");
    let expected: BTreeMap<String, BTreeSet<String>> = [(
        "/nix/store/6wk3f6wkp9faw3j2ws355ga1g50zrs69-step-a.drv".to_owned(),
        ["out".to_owned()].into(),
    )]
    .into();
    assert_eq!(b.input_drvs, expected);
    assert!(
        b.args[1]
            .contains("echo \"b got $x from /nix/store/z9fxjv8qcawyz5aslrflg9ip6b4x31yy-step-a\"")
    );

    let multi = golden("multi.drv");
    assert_eq!(
        multi.outputs.keys().collect::<Vec<_>>(),
        ["dev", "doc", "out"]
    );
    let lib_outputs = &multi.input_drvs["/nix/store/sibraajzwq2m5i73qhswfzc32ywv8078-lib.drv"];
    assert_eq!(lib_outputs.iter().collect::<Vec<_>>(), ["dev", "out"]);
    assert_eq!(
        multi.input_srcs.iter().collect::<Vec<_>>(),
        ["/nix/store/y94h5y7jkd51cbh6ximcmki77r0gmpza-build.sh"]
    );
}

#[test]
fn fixed_outputs() {
    let rec = golden("fixed-rec.drv");
    assert_eq!(rec.outputs["out"].hash_algo, "r:sha256");
    assert_eq!(rec.outputs["out"].hash, "0".repeat(64));
    let flat = golden("fixed-flat.drv");
    assert_eq!(flat.outputs["out"].hash_algo, "sha1");
    assert_eq!(flat.outputs["out"].hash, "0".repeat(40));
}

#[test]
fn escapes_decode_as_nix_wrote_them() {
    let drv = golden("escapes.drv");
    assert_eq!(
        drv.args[1],
        "printf '%s\\n' \"quoted\" 'back\\slash' > $out\n\techo\ttab\r\n"
    );
    assert_eq!(drv.args[2], "");
    assert_eq!(drv.env["quote"], "say \"hi\"");
    assert_eq!(drv.env["backslash"], "a\\b\\\\c");
    assert_eq!(drv.env["multiline"], "line one\nline two\n\ttabbed\r\nend");
    assert_eq!(drv.env["empty"], "");
    assert_eq!(drv.env["unicode"], "grüße, 世界");
}

#[test]
fn system_is_written_unescaped() {
    let drv = golden("raw-platform.drv");
    assert_eq!(drv.system, "a\tb\nc");
    assert_eq!(drv.env["system"], "a\tb\nc");
    let text = drv.to_aterm();
    let needle: &[u8] = b"],\"a\tb\nc\",\"/bin/sh\"";
    assert!(text.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn required_system_features() {
    assert_eq!(
        golden("needs-kvm.drv").required_system_features(),
        ["big-parallel", "kvm"]
    );
    let mut drv = golden("hello.drv");
    drv.env.insert(
        "requiredSystemFeatures".into(),
        " kvm\tnixos-test\n\r kvm  benchmark ".into(),
    );
    assert_eq!(
        drv.required_system_features(),
        ["benchmark", "kvm", "nixos-test"]
    );
    drv.env.insert("requiredSystemFeatures".into(), "  ".into());
    assert!(drv.required_system_features().is_empty());
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    for (name, bytes, _) in GOLDEN {
        for cut in 0..bytes.len() {
            match Derivation::parse(&bytes[..cut]) {
                Err(Error::UnexpectedEnd { offset, .. }) => {
                    assert_eq!(offset, cut, "{name} cut at {cut}")
                }
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn trailing_data_is_an_error() {
    for (name, bytes, _) in GOLDEN {
        for tail in [&b"\n"[..], b" ", b")", b"Derive("] {
            let mut data = bytes.to_vec();
            data.extend_from_slice(tail);
            assert_eq!(
                Derivation::parse(&data),
                Err(Error::TrailingData {
                    offset: bytes.len()
                }),
                "{name}"
            );
        }
    }
}

const HELLO: &str = r#"Derive([("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","hello"),("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"),("system","x86_64-linux")])"#;

fn parse_edited(from: &str, to: &str) -> Result<Derivation, Error> {
    assert!(HELLO.contains(from), "{from}");
    Derivation::parse(HELLO.replacen(from, to, 1).as_bytes())
}

fn offset_of(needle: &str) -> usize {
    HELLO.find(needle).unwrap()
}

#[test]
fn hello_constant_is_the_golden_file() {
    assert_eq!(HELLO.as_bytes(), GOLDEN[0].1);
}

#[test]
fn bad_escapes_are_errors() {
    let at = offset_of("echo hi") + 4;
    for (escape, byte) in [
        ("\\x", b'x'),
        ("\\'", b'\''),
        ("\\0", b'0'),
        ("\\u", b'u'),
        ("\\ ", b' '),
    ] {
        assert_eq!(
            parse_edited("echo hi", &format!("echo{escape}hi")),
            Err(Error::BadEscape {
                offset: at,
                found: byte
            })
        );
    }
    // The five escapes Nix writes are accepted.
    let drv = parse_edited("echo hi", r#"echo\"\\\n\r\thi"#).unwrap();
    assert_eq!(drv.args[1], "echo\"\\\n\r\thi > $out");
}

#[test]
fn raw_control_bytes_in_escaped_strings_are_errors() {
    for byte in [b'\n', b'\r', b'\t'] {
        let text = HELLO.replacen("echo hi", &format!("echo{}hi", byte as char), 1);
        assert_eq!(
            Derivation::parse(text.as_bytes()),
            Err(Error::UnescapedControl {
                offset: offset_of("echo hi") + 4,
                found: byte
            })
        );
    }
}

#[test]
fn escapes_in_raw_fields_are_errors() {
    let at = offset_of("x86_64-linux") + 3;
    assert_eq!(
        parse_edited("x86_64-linux", r"x86\_64-linux"),
        Err(Error::EscapeInRawField {
            offset: at,
            field: "system"
        })
    );
    assert!(matches!(
        parse_edited(r#"("out","/nix"#, r#"("o\"ut","/nix"#),
        Err(Error::EscapeInRawField {
            field: "output name",
            ..
        })
    ));
}

#[test]
fn non_canonical_layout_is_an_error() {
    let cases = [
        ("],[],[]", "], [],[]"),                         // whitespace
        ("[(\"out\"", "[,(\"out\""),                     // empty first element
        ("\"echo hi > $out\"]", "\"echo hi > $out\",]"), // trailing comma
        ("Derive(", "derive("),
        ("],[],[],", "],[],[],,"),
        ("(\"builder\"", "(\"builder\" "),
    ];
    for (from, to) in cases {
        assert!(
            matches!(parse_edited(from, to), Err(Error::Unexpected { .. })),
            "{to}: {:?}",
            parse_edited(from, to)
        );
    }
    assert!(matches!(
        Derivation::parse(b""),
        Err(Error::UnexpectedEnd { offset: 0, .. })
    ));
}

#[test]
fn unsorted_or_repeated_keys_are_errors() {
    // env out of order
    let text = HELLO.replacen(
        r#"("builder","/bin/sh"),("name","hello")"#,
        r#"("name","hello"),("builder","/bin/sh")"#,
        1,
    );
    assert_eq!(
        Derivation::parse(text.as_bytes()),
        Err(Error::NotSorted {
            offset: text.find(r#""builder""#).unwrap(),
            what: "environment variable",
            key: "builder".into()
        })
    );
    // env repeated
    let text = HELLO.replacen(
        r#"("name","hello")"#,
        r#"("name","hello"),("name","hello")"#,
        1,
    );
    assert!(matches!(
        Derivation::parse(text.as_bytes()),
        Err(Error::NotSorted {
            what: "environment variable",
            ..
        })
    ));

    let two = |a: &str, b: &str| format!(r#"Derive([],[],[{a},{b}],"s","b",[],[])"#);
    assert!(matches!(
        Derivation::parse(two(r#""/b""#, r#""/a""#).as_bytes()),
        Err(Error::NotSorted {
            what: "input source",
            offset: 19,
            ..
        })
    ));
    assert!(Derivation::parse(two(r#""/a""#, r#""/b""#).as_bytes()).is_ok());

    let outs = r#"Derive([("out","","",""),("dev","","","")],[],[],"s","b",[],[])"#;
    assert!(matches!(
        Derivation::parse(outs.as_bytes()),
        Err(Error::NotSorted {
            what: "output name",
            ..
        })
    ));
    let inputs = r#"Derive([],[("/x.drv",["out","dev"])],[],"s","b",[],[])"#;
    assert!(matches!(
        Derivation::parse(inputs.as_bytes()),
        Err(Error::NotSorted {
            what: "input derivation output",
            ..
        })
    ));
    let inputs = r#"Derive([],[("/y.drv",[]),("/x.drv",[])],[],"s","b",[],[])"#;
    assert!(matches!(
        Derivation::parse(inputs.as_bytes()),
        Err(Error::NotSorted {
            what: "input derivation",
            ..
        })
    ));
}

#[test]
fn relative_paths_are_errors() {
    let src = r#"Derive([],[],["x"],"s","b",[],[])"#;
    assert_eq!(
        Derivation::parse(src.as_bytes()),
        Err(Error::NotAbsolute {
            offset: 14,
            what: "input source path",
            path: "x".into()
        })
    );
    let input = r#"Derive([],[("",[])],[],"s","b",[],[])"#;
    assert!(matches!(
        Derivation::parse(input.as_bytes()),
        Err(Error::NotAbsolute {
            what: "input derivation path",
            ..
        })
    ));
    let out = r#"Derive([("out","nix/store/x","","")],[],[],"s","b",[],[])"#;
    assert!(matches!(
        Derivation::parse(out.as_bytes()),
        Err(Error::NotAbsolute {
            what: "output path",
            ..
        })
    ));
    // An empty output path (deferred or floating output) is fine.
    let deferred = r#"Derive([("out","","r:sha256","")],[],[],"s","b",[],[])"#;
    let drv = Derivation::parse(deferred.as_bytes()).unwrap();
    assert_eq!(
        drv.outputs["out"],
        Output {
            path: String::new(),
            hash_algo: "r:sha256".into(),
            hash: String::new()
        }
    );
    assert_eq!(drv.to_aterm(), deferred.as_bytes());
}

#[test]
fn non_utf8_is_an_error() {
    let mut text = HELLO.as_bytes().to_vec();
    let at = offset_of("echo hi");
    text[at] = 0xff;
    assert_eq!(
        Derivation::parse(&text),
        Err(Error::NotUtf8 {
            offset: at - 1,
            field: "argument"
        })
    );
}

#[test]
fn limits() {
    let long = vec![b'D'; MAX_DRV_LEN + 1];
    assert_eq!(
        Derivation::parse(&long),
        Err(Error::TooLong {
            len: MAX_DRV_LEN + 1
        })
    );

    let mut drv = Derivation::default();
    for i in 0..=MAX_OUTPUTS {
        drv.outputs.insert(format!("o{i:05}"), Output::default());
    }
    assert!(matches!(
        Derivation::parse(&drv.to_aterm()),
        Err(Error::TooMany {
            what: "outputs",
            limit: MAX_OUTPUTS,
            ..
        })
    ));
    drv.outputs.pop_last();
    assert_eq!(Derivation::parse(&drv.to_aterm()).unwrap(), drv);
}

#[test]
fn empty_derivation_prints_minimal_form() {
    let drv = Derivation::default();
    assert_eq!(drv.to_aterm(), br#"Derive([],[],[],"","",[],[])"#);
    assert_eq!(Derivation::parse(&drv.to_aterm()).unwrap(), drv);
}

// Strings for fields Nix escapes: anything, with the special bytes common.
fn escaped_string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => prop::sample::select(vec!['"', '\\', '\n', '\r', '\t', ' ', ',', '(', ')', '[', ']', 'a', 'é']),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..10).prop_map(String::from_iter)
}

// Strings for fields Nix writes unescaped: anything but `"` and `\`.
fn raw_string() -> impl Strategy<Value = String> {
    escaped_string().prop_map(|s| s.replace(['"', '\\'], "_"))
}

fn path() -> impl Strategy<Value = String> {
    raw_string().prop_map(|s| format!("/{s}"))
}

fn derivation() -> impl Strategy<Value = Derivation> {
    let output = (
        prop_oneof![Just(String::new()), path()],
        raw_string(),
        raw_string(),
    )
        .prop_map(|(path, hash_algo, hash)| Output {
            path,
            hash_algo,
            hash,
        });
    (
        prop::collection::btree_map(raw_string(), output, 0..4),
        prop::collection::btree_map(
            path(),
            prop::collection::btree_set(raw_string(), 0..3),
            0..3,
        ),
        prop::collection::btree_set(path(), 0..3),
        raw_string(),
        escaped_string(),
        prop::collection::vec(escaped_string(), 0..4),
        prop::collection::btree_map(escaped_string(), escaped_string(), 0..5),
    )
        .prop_map(
            |(outputs, input_drvs, input_srcs, system, builder, args, env)| Derivation {
                outputs,
                input_drvs,
                input_srcs,
                system,
                builder,
                args,
                env,
            },
        )
}

proptest! {
    #[test]
    fn round_trip(drv in derivation()) {
        let text = drv.to_aterm();
        let parsed = Derivation::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &drv);
        prop_assert_eq!(parsed.to_aterm(), text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(drv) = Derivation::parse(&bytes) {
            prop_assert_eq!(drv.to_aterm(), bytes);
        }
    }

    #[test]
    fn mutated_golden_files_never_panic(
        index in 0..GOLDEN.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = GOLDEN[index].1.to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(drv) = Derivation::parse(&bytes) {
            prop_assert_eq!(drv.to_aterm(), bytes);
        }
    }
}
