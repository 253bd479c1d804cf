use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Error, Event, Limits, NarReader, NarWriter};
use crate::wire::write_bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tree {
    File { executable: bool, contents: Vec<u8> },
    Link(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Self>),
}

fn write_tree(w: &mut NarWriter<&mut Vec<u8>>, name: Option<&[u8]>, tree: &Tree) {
    match tree {
        Tree::File {
            executable,
            contents,
        } => {
            w.regular(
                name,
                *executable,
                contents.len() as u64,
                &mut contents.as_slice(),
            )
            .unwrap();
        }
        Tree::Link(target) => w.symlink(name, target).unwrap(),
        Tree::Dir(entries) => {
            w.start_directory(name).unwrap();
            for (n, t) in entries {
                write_tree(w, Some(n), t);
            }
            w.end_directory().unwrap();
        }
    }
}

fn encode(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = NarWriter::new(&mut out).unwrap();
    write_tree(&mut w, None, tree);
    w.finish().unwrap();
    out
}

/// Directories being read: each with its entry name and entries so far.
type Open = Vec<(Option<Vec<u8>>, BTreeMap<Vec<u8>, Tree>)>;

/// Read a whole NAR back into a tree, reading contents in odd-sized pieces.
fn decode(nar: &[u8], limits: Limits) -> Result<(Tree, usize), Error> {
    let mut input = nar;
    let mut r = NarReader::new(&mut input, limits);
    let mut stack: Open = Vec::new();
    let mut root = None;
    let mut place =
        |stack: &mut Open, name: Option<Vec<u8>>, t: Tree| match (stack.last_mut(), name) {
            (Some((_, entries)), Some(n)) => {
                entries.insert(n, t);
            }
            _ => root = Some(t),
        };
    while let Some(event) = r.next_event()? {
        match event {
            Event::Regular {
                name,
                executable,
                size,
            } => {
                let mut contents = Vec::new();
                let mut buf = [0u8; 7];
                loop {
                    let n = r.contents(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    contents.extend_from_slice(&buf[..n]);
                }
                assert_eq!(contents.len() as u64, size);
                place(
                    &mut stack,
                    name,
                    Tree::File {
                        executable,
                        contents,
                    },
                );
            }
            Event::Symlink { name, target } => place(&mut stack, name, Tree::Link(target)),
            Event::Directory { name } => stack.push((name, BTreeMap::new())),
            Event::EndDirectory => {
                let (name, entries) = stack.pop().unwrap();
                place(&mut stack, name, Tree::Dir(entries));
            }
        }
    }
    drop(r);
    Ok((root.unwrap(), nar.len() - input.len()))
}

fn arb_name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'a'),
            Just(b'B'),
            Just(b'.'),
            Just(b'-'),
            Just(0xc3u8),
            Just(b' '),
            Just(b'0')
        ],
        1..6,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(executable, contents)| Tree::File {
                executable,
                contents
            }
        ),
        prop::collection::vec(1u8..=255, 1..20).prop_map(Tree::Link),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop::collection::btree_map(arb_name(), inner, 0..5).prop_map(Tree::Dir)
    })
}

proptest! {
    #[test]
    fn round_trip(tree in arb_tree()) {
        let nar = encode(&tree);
        let (back, consumed) = decode(&nar, Limits::default()).unwrap();
        prop_assert_eq!(consumed, nar.len());
        prop_assert_eq!(back, tree);
    }

    #[test]
    fn truncation_is_always_an_error(tree in arb_tree(), cut in any::<prop::sample::Index>()) {
        let nar = encode(&tree);
        let cut = cut.index(nar.len());
        prop_assert!(decode(&nar[..cut], Limits::default()).is_err());
    }

    #[test]
    fn flipped_bytes_never_panic_and_stay_bounded(tree in arb_tree(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut nar = encode(&tree);
        let at = at.index(nar.len());
        nar[at] ^= 1 << bit;
        // Either an error, or a NAR that is still valid (a flip inside file contents).
        if let Ok((tree2, consumed)) = decode(&nar, Limits::default()) {
            prop_assert_eq!(consumed, nar.len());
            prop_assert_eq!(encode(&tree2), nar);
        }
    }

    #[test]
    fn trailing_bytes_are_left_unread(tree in arb_tree(), extra in prop::collection::vec(any::<u8>(), 1..30)) {
        let nar = encode(&tree);
        let mut extended = nar.clone();
        extended.extend_from_slice(&extra);
        let (_, consumed) = decode(&extended, Limits::default()).unwrap();
        prop_assert_eq!(consumed, nar.len());
    }
}

/// A NAR built token by token, for malformed cases.
fn toks(tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tokens {
        write_bytes(&mut out, t).unwrap();
    }
    out
}

fn entry(name: &[u8]) -> Vec<&[u8]> {
    vec![
        b"entry", b"(", b"name", name, b"node", b"(", b"type", b"symlink", b"target", b"x", b")",
        b")",
    ]
}

fn dir_of(names: &[&'static [u8]]) -> Vec<u8> {
    let mut t: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
    for n in names {
        t.extend(entry(n));
    }
    t.push(b")");
    toks(&t)
}

fn check_err(nar: &[u8], expected: &str) {
    let err = decode(nar, Limits::default())
        .err()
        .unwrap_or_else(|| panic!("accepted; expected {expected}"));
    let text = err.to_string();
    assert!(
        text.contains(expected),
        "error `{text}` does not mention `{expected}`"
    );
}

#[test]
fn rejects_bad_entry_names_and_order() {
    assert!(decode(&dir_of(&[b"a", b"b"]), Limits::default()).is_ok());
    check_err(&dir_of(&[b"b", b"a"]), "does not sort after");
    check_err(&dir_of(&[b"a", b"a"]), "does not sort after");
    check_err(&dir_of(&[b""]), "empty");
    check_err(&dir_of(&[b"."]), "`.` and `..`");
    check_err(&dir_of(&[b".."]), "`.` and `..`");
    check_err(&dir_of(&[b"a/b"]), "contains `/`");
    check_err(&dir_of(&[b"a\0b"]), "contains NUL");
    let long: &'static [u8] = Box::leak(vec![b'x'; 256].into_boxed_slice());
    check_err(&dir_of(&[long]), "entry name is 256 bytes");
}

#[test]
fn rejects_bad_structure() {
    check_err(&toks(&[b"nix-archive-2"]), "expected \"nix-archive-1\"");
    check_err(
        &toks(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]),
        "unknown node type",
    );
    check_err(
        &toks(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"",
            b")",
        ]),
        "empty",
    );
    check_err(
        &toks(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"x",
        ]),
        "executable",
    );
    check_err(
        &toks(&[b"nix-archive-1", b"(", b"type", b"directory", b"bogus"]),
        "entry or )",
    );
    // A 20-byte token where at most 16 are expected.
    check_err(
        &toks(&[b"nix-archive-1", b"(", b"type", b"regularregularregul"]),
        "NAR token is 19 bytes",
    );
    // Non-zero padding after a short token.
    let mut bad_pad = toks(&[b"nix-archive-1"]);
    let last = bad_pad.len() - 1;
    bad_pad[last] = 1;
    check_err(&bad_pad, "non-zero padding");
}

#[test]
fn enforces_size_and_depth_limits() {
    let big = Tree::File {
        executable: false,
        contents: vec![7; 100],
    };
    let small = Limits {
        max_file_size: 99,
        ..Limits::default()
    };
    check_err_with(
        &encode(&big),
        small,
        "file of 100 bytes exceeds the limit of 99",
    );
    let total = Limits {
        max_total_size: 150,
        ..Limits::default()
    };
    let two = Tree::Dir([(b"a".to_vec(), big.clone()), (b"b".to_vec(), big)].into());
    check_err_with(&encode(&two), total, "total contents of 200 bytes");
    let mut deep = Tree::Link(b"x".to_vec());
    for _ in 0..5 {
        deep = Tree::Dir([(b"d".to_vec(), deep)].into());
    }
    check_err_with(
        &encode(&deep),
        Limits {
            max_depth: 4,
            ..Limits::default()
        },
        "nested deeper than 4",
    );
    assert!(
        decode(
            &encode(&deep),
            Limits {
                max_depth: 5,
                ..Limits::default()
            }
        )
        .is_ok()
    );
}

fn check_err_with(nar: &[u8], limits: Limits, expected: &str) {
    let text = decode(nar, limits)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains(expected),
        "error `{text}` does not mention `{expected}`"
    );
}

#[test]
fn writer_refuses_what_the_reader_would_reject() {
    let mut out = Vec::new();
    let mut w = NarWriter::new(&mut out).unwrap();
    w.start_directory(None).unwrap();
    w.symlink(Some(b"b"), b"x").unwrap();
    assert!(w.symlink(Some(b"a"), b"x").is_err(), "unsorted");
    assert!(w.symlink(Some(b".."), b"x").is_err(), "dot-dot");
    assert!(w.symlink(None, b"x").is_err(), "nameless entry");
    let mut short: &[u8] = b"abc";
    assert!(
        w.regular(Some(b"c"), false, 4, &mut short).is_err(),
        "file shrank"
    );
}
