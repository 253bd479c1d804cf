use proptest::prelude::*;

use super::{Error, MAX_DEPTH, Sexp};

fn atom(bytes: &[u8]) -> Sexp {
    Sexp::Atom(bytes.to_vec())
}

/// Print a one-atom list and return the atom's text.
fn printed_atom(bytes: &[u8]) -> String {
    let text = Sexp::List(vec![atom(b"x"), atom(bytes)]).to_advanced();
    let text = String::from_utf8_lossy(&text).into_owned();
    text.strip_prefix("(x ")
        .and_then(|t| t.strip_suffix(")\n"))
        .unwrap()
        .to_owned()
}

#[test]
fn atom_encoding_follows_libgcrypt() {
    let cases: &[(&[u8], &str)] = &[
        (b"Ed25519", "Ed25519"),
        (b"sha256", "sha256"),
        (b"a-./_:*+=z", "a-./_:*+=z"),
        (b"", "\"\""),
        (b"2abc", "\"2abc\""),
        (b"hello world", "\"hello world\""),
        (b"tab\there", "\"tab\\there\""),
        (b"q\"'\\", "\"q\\\"\\'\\\\\""),
        (b"a\x00b", "a\x00b"),
        (b"....\x00**", "....\x00**"),
        (b"a \x00", "\"a \\x00\""),
        (b"\x00abc", "#00616263#"),
        (b"\x80", "#80#"),
        (b"a\x7f", "#617F#"),
        (b"a\xa0", "#61A0#"),
        (b"a\x01", "#6101#"),
        (b"\x08\x0b\x0c\r\n", "\"\\b\\v\\f\\r\\n\""),
    ];
    for (bytes, expected) in cases {
        assert_eq!(printed_atom(bytes), *expected, "{bytes:02x?}");
    }
    // Bytes 0xA1..=0xFF after the first byte are printed raw.
    let raw = Sexp::List(vec![atom(b"x"), atom(b"a\xa1\xff")]).to_advanced();
    assert_eq!(raw, b"(x \"a\xa1\xff\")\n");
}

#[test]
fn layout_matches_libgcrypt() {
    let sexp = Sexp::parse(b"(public-key (ecc (curve Ed25519) (q #0102#)))").unwrap();
    assert_eq!(
        sexp.to_advanced(),
        b"(public-key \n (ecc \n  (curve Ed25519)\n  (q #0102#)\n  )\n )\n"
    );
    assert_eq!(Sexp::parse(b"(acl)").unwrap().to_advanced(), b"(acl)\n");
    assert_eq!(
        Sexp::parse(b"(a (b) c)").unwrap().to_advanced(),
        b"(a \n (b)\n c)\n"
    );
    assert_eq!(
        Sexp::parse(b"((a) (b))").unwrap().to_advanced(),
        b"(\n (a)\n (b)\n )\n"
    );
    assert_eq!(
        sexp.to_canonical(),
        b"(10:public-key(3:ecc(5:curve7:Ed25519)(1:q2:\x01\x02)))"
    );
}

#[test]
fn parses_every_atom_syntax() {
    let check = |text: &[u8], expected: &[u8]| {
        let parsed =
            Sexp::parse(text).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(text)));
        assert_eq!(
            parsed,
            Sexp::List(vec![atom(b"x"), atom(expected)]),
            "{}",
            String::from_utf8_lossy(text)
        );
    };
    check(b"(x abc)", b"abc");
    check(b"(x \"a\\nb\\x41\\101\\t\")", b"a\nbAA\t");
    check(b"(x \"line\\\ncontinued\")", b"linecontinued");
    check(b"(x \"raw \xe9\")", b"raw \xe9");
    check(b"(x #01 02\n0A#)", b"\x01\x02\x0a");
    check(b"(x #abcdef#)", b"\xab\xcd\xef");
    check(b"(x |aGVs bG8=|)", b"hello");
    check(b"(x 3:a)b)", b"a)b");
    check(b"(x 3\"abc\")", b"abc");
    check(b"(x 2#0102#)", b"\x01\x02");
    check(b"  \t\n(x\x0bq)\r\n\x0c", b"q");
    // libgcrypt prints an interior NUL raw inside a token, and reads it back.
    check(b"(x a\x00b)", b"a\x00b");
}

#[test]
fn rejects_malformed_input() {
    let check = |text: &[u8], expected: Error| {
        assert_eq!(
            Sexp::parse(text),
            Err(expected),
            "{}",
            String::from_utf8_lossy(text)
        )
    };
    check(b"", Error::NotAList);
    check(b"abc", Error::NotAList);
    check(b"(a", Error::Incomplete);
    check(b"(a \"b)", Error::Incomplete);
    check(b"(a) (b)", Error::Trailing(4));
    check(b"(a))", Error::Trailing(3));
    check(b"(a [hint]b)", Error::DisplayHint(3));
    check(
        b"(a #123#)",
        Error::BadAtom {
            what: "hex atom",
            offset: 3,
        },
    );
    check(
        b"(a |!!|)",
        Error::BadAtom {
            what: "base64 atom",
            offset: 3,
        },
    );
    check(
        b"(a \"\\q\")",
        Error::BadAtom {
            what: "quoted string",
            offset: 3,
        },
    );
    check(b"(a 5:ab)", Error::Incomplete);
    check(
        b"(a 3\"ab\")",
        Error::BadAtom {
            what: "length prefix",
            offset: 3,
        },
    );
    check(
        b"(a 99999999999999999999999:x)",
        Error::BadAtom {
            what: "length prefix",
            offset: 3,
        },
    );
    check(
        b"(a {)",
        Error::Unexpected {
            byte: b'{',
            offset: 3,
        },
    );
    let deep = format!("{}{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    check(deep.as_bytes(), Error::TooDeep);
    let ok = format!("{}{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(Sexp::parse(ok.as_bytes()).is_ok());
}

#[test]
fn find_token_searches_depth_first() {
    let sexp =
        Sexp::parse(b"(signature (data (hash sha256 #01#)) (x (public-key (ecc))))").unwrap();
    assert_eq!(
        sexp.find_token("public-key").unwrap().to_canonical(),
        b"(10:public-key(3:ecc))"
    );
    assert_eq!(sexp.find_token("data").unwrap().child_atom("hash"), None);
    assert!(sexp.find_token("absent").is_none());
}

fn arb_sexp() -> impl Strategy<Value = Sexp> {
    let leaf = prop::collection::vec(any::<u8>(), 0..12).prop_map(Sexp::Atom);
    let list = prop::collection::vec(leaf.clone(), 0..4).prop_map(Sexp::List);
    list.prop_recursive(5, 48, 6, |inner| {
        prop::collection::vec(
            prop_oneof![
                inner,
                prop::collection::vec(any::<u8>(), 0..12).prop_map(Sexp::Atom)
            ],
            0..6,
        )
        .prop_map(Sexp::List)
    })
}

proptest! {
    #[test]
    fn advanced_and_canonical_round_trip(sexp in arb_sexp()) {
        prop_assert_eq!(Sexp::parse(&sexp.to_advanced()).unwrap(), sexp.clone());
        prop_assert_eq!(Sexp::parse(&sexp.to_canonical()).unwrap(), sexp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Sexp::parse(&bytes);
    }
}
