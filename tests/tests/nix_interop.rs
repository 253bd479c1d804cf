//! Our archive code against the real Nix 2.8 (`nix-store` from Debian's `nix-bin`).
//!
//! Every test runs the real `offload-master` binary next to the real
//! `nix-store` and compares bytes:
//! * NAR: `archive dump` equals `nix-store --dump` (generated trees full of
//!   corner cases, non-directory roots, the golden NARs of `vectors/nix/`);
//!   `nix-store --restore` reads our NARs and `archive restore` reads Nix's,
//!   the latter canonicalised as Guix does.
//! * Export streams: `nix-store --import` accepts our signed streams (into
//!   chroot stores with logical store `/gnu/store` or `/nix/store`), records
//!   the references we found and re-exports the same item bytes; our reader
//!   parses Nix's unsigned streams and refuses to import them; our signed
//!   streams import with `archive import` only when the signer is in the ACL.
//!
//! Nix never writes outside the test's temporary directory (`nix_env`).

use std::path::{Path, PathBuf};
use std::process::Command;

use offload_tests::{
    assert_bytes_eq, assert_trees_equal, make_symlink, make_tree_writable, nix_dump, nix_store,
    nix_store_url, offload, run_ok, run_with_input, tree_path, walk_tree, write_file_mode,
    write_test_tree,
};
use tempfile::TempDir;

/// Golden files made by Nix 2.8 (`nix-daemon.md` §4).
const NIX_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/core/vectors/nix");

/// The nix-base32 alphabet: what a store path's hash part is made of.
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// Hash parts of the synthetic store items (any valid nix-base32 string will
/// do: nothing checks that a hash matches the content).
const HASH_A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const HASH_B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";
const HASH_C: &str = "1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s";
/// Hash part of the (absent) deriver recorded by the Nix-made stream of test 5.
const HASH_DRV: &str = "ffffffffffffffffffffffffffffffff";

fn tempdir() -> TempDir {
    TempDir::new().expect("create a temporary directory")
}

fn master() -> Command {
    offload("offload-master")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `offload-master archive dump PATH`.
fn our_dump(path: &Path) -> Vec<u8> {
    run_ok(master().args(["archive", "dump"]).arg(path), b"")
}

/// `offload-master archive restore DIR < nar`.
fn our_restore(nar: &[u8], dir: &Path) {
    run_ok(master().args(["archive", "restore"]).arg(dir), nar);
}

/// `nix-store --restore DIR < nar`.
fn nix_restore(tmp: &Path, nar: &[u8], dir: &Path) {
    run_ok(nix_store(tmp).arg("--restore").arg(dir), nar);
}

/// Roots that are not directories: regular files (plain, empty, executable,
/// large) and symlinks (relative, absolute, dangling).
fn write_single_roots(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir(dir).expect("mkdir single roots");
    let roots = [
        ("file", &b"hi\n"[..], 0o644),
        ("empty-file", &b""[..], 0o644),
        ("exec-file", &b"#!/bin/sh\nexit 0\n"[..], 0o755),
        ("eight-bytes", &b"12345678"[..], 0o600),
    ];
    let mut out = Vec::new();
    for (name, contents, mode) in roots {
        let path = dir.join(name);
        write_file_mode(&path, contents, mode);
        out.push(path);
    }
    let big: Vec<u8> = (0..(1u32 << 20) + 5).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join("big-file");
    write_file_mode(&path, &big, 0o644);
    out.push(path);
    for (name, target) in [
        ("symlink-rel", &b"file"[..]),
        ("symlink-abs", &b"/usr/bin/env"[..]),
        ("symlink-dangling", &b"../no/such/thing"[..]),
    ] {
        let path = dir.join(name);
        make_symlink(target, &path);
        out.push(path);
    }
    out
}

/// The trees of the golden NARs in `vectors/nix/` (`nix-daemon.md` §4.2, §4.3).
fn write_golden_trees(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir(dir).expect("mkdir golden");
    let hello = dir.join("hello");
    write_file_mode(&hello, b"hi\n", 0o644);
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).expect("mkdir tree");
    write_file_mode(&tree.join("a.txt"), b"abc", 0o644);
    write_file_mode(&tree.join("empty"), b"", 0o644);
    make_symlink(b"a.txt", &tree.join("link"));
    std::fs::create_dir(tree.join("sub")).expect("mkdir tree/sub");
    write_file_mode(&tree.join("sub/run.sh"), b"#!/bin/sh\necho x\n", 0o755);
    (hello, tree)
}

fn read_vector(name: &str) -> Vec<u8> {
    let path = Path::new(NIX_VECTORS).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read golden file {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// 1. `archive dump` equals `nix-store --dump`.

#[test]
fn dump_of_generated_trees_equals_nix_store_dump() {
    let tmp = tempdir();
    for seed in [1, 2, 3] {
        let root = tmp.path().join(format!("tree-{seed}"));
        write_test_tree(&root, seed);
        let theirs = nix_dump(tmp.path(), &root);
        let ours = our_dump(&root);
        assert_bytes_eq(
            &format!(
                "`offload-master archive dump` vs `nix-store --dump` of the generated tree (seed {seed})"
            ),
            &ours,
            &theirs,
        );
    }
}

#[test]
fn dump_of_file_and_symlink_roots_equals_nix_store_dump() {
    let tmp = tempdir();
    for root in write_single_roots(&tmp.path().join("roots")) {
        let theirs = nix_dump(tmp.path(), &root);
        let ours = our_dump(&root);
        assert_bytes_eq(
            &format!(
                "`offload-master archive dump {}` vs `nix-store --dump`",
                root.display()
            ),
            &ours,
            &theirs,
        );
    }
}

#[test]
fn dump_equals_golden_nix_nars() {
    let tmp = tempdir();
    let (hello, tree) = write_golden_trees(&tmp.path().join("golden"));
    for (path, vector) in [(hello, "hello-hi.nar"), (tree, "tree.nar")] {
        let golden = read_vector(vector);
        // The recreated tree must be the one Nix dumped: otherwise a mismatch
        // below would say nothing about our code.
        assert_bytes_eq(
            &format!("`nix-store --dump` of the recreated tree vs golden {vector}"),
            &nix_dump(tmp.path(), &path),
            &golden,
        );
        assert_bytes_eq(
            &format!("`offload-master archive dump` of the recreated tree vs golden {vector}"),
            &our_dump(&path),
            &golden,
        );
    }
}

// ---------------------------------------------------------------------------
// 2. `nix-store --restore` reads our NARs.

#[test]
fn nix_store_restore_of_our_dump_reproduces_the_tree() {
    let tmp = tempdir();
    let mut originals: Vec<PathBuf> = [1, 2]
        .into_iter()
        .map(|seed| {
            let root = tmp.path().join(format!("tree-{seed}"));
            write_test_tree(&root, seed);
            root
        })
        .collect();
    originals.extend(write_single_roots(&tmp.path().join("roots")));
    for (i, original) in originals.iter().enumerate() {
        let ours = our_dump(original);
        let restored = tmp.path().join(format!("restored-{i}"));
        nix_restore(tmp.path(), &ours, &restored);
        assert_bytes_eq(
            &format!(
                "`nix-store --dump` of `nix-store --restore` of our NAR of {} vs `nix-store --dump` of the original",
                original.display()
            ),
            &nix_dump(tmp.path(), &restored),
            &nix_dump(tmp.path(), original),
        );
        // Direct checks: names, contents, owner execute bits, symlink targets.
        assert_trees_equal(original, &restored);
    }
}

// ---------------------------------------------------------------------------
// 3. `archive restore` reads Nix's NARs and canonicalises like Guix.

/// Assert that the restored tree at `restored` is canonical: regular files
/// 0444 (0555 when `original`'s file is owner-executable), directories 0555,
/// mtime 1 on every node, symlinks included.
fn assert_canonical(original: &Path, restored: &Path) {
    use std::os::unix::fs::MetadataExt;
    for rel in walk_tree(restored) {
        let path = tree_path(restored, &rel);
        let meta = std::fs::symlink_metadata(&path).expect("lstat restored");
        assert_eq!(
            meta.mtime(),
            1,
            "mtime of restored {} (type {:?}) should be 1",
            path.display(),
            meta.file_type()
        );
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(
                mode,
                0o555,
                "mode of restored directory {} is {mode:o}",
                path.display()
            );
        } else if meta.is_file() {
            let source =
                std::fs::symlink_metadata(tree_path(original, &rel)).expect("lstat original");
            let expected = if source.mode() & 0o100 != 0 {
                0o555
            } else {
                0o444
            };
            assert_eq!(
                mode,
                expected,
                "mode of restored file {} is {mode:o}, expected {expected:o} (original mode {:o})",
                path.display(),
                source.mode() & 0o7777
            );
        }
    }
}

#[test]
fn our_restore_of_nix_store_dump_reproduces_the_tree_canonically() {
    let tmp = tempdir();
    let mut originals: Vec<PathBuf> = [1, 4]
        .into_iter()
        .map(|seed| {
            let root = tmp.path().join(format!("tree-{seed}"));
            write_test_tree(&root, seed);
            root
        })
        .collect();
    originals.extend(write_single_roots(&tmp.path().join("roots")));
    let out = tmp.path().join("restored");
    std::fs::create_dir(&out).expect("mkdir restored");
    for (i, original) in originals.iter().enumerate() {
        let theirs = nix_dump(tmp.path(), original);
        let restored = out.join(format!("r{i}"));
        our_restore(&theirs, &restored);
        assert_bytes_eq(
            &format!(
                "`nix-store --dump` of `offload-master archive restore` of the Nix NAR of {} vs the original's",
                original.display()
            ),
            &nix_dump(tmp.path(), &restored),
            &theirs,
        );
        assert_trees_equal(original, &restored);
        assert_canonical(original, &restored);
    }
    make_tree_writable(&out);
}

// ---------------------------------------------------------------------------
// Store items and export streams.

/// A synthetic store item written by `write_store_items`.
struct StoreItem {
    /// `<hash>-<name>`: the entry in the items directory and the store path's basename.
    name: String,
    /// Basenames of the items it references, sorted.
    refs: Vec<String>,
}

/// Write three store items under `parent` (created), in topological order:
/// A (a directory, no references), B (a directory whose script and symlink
/// name A's store path), C (a regular file naming A and B). The contents
/// name the items with the full store path in `store_dir`.
fn write_store_items(parent: &Path, store_dir: &str) -> Vec<StoreItem> {
    for hash in [HASH_A, HASH_B, HASH_C, HASH_DRV] {
        assert_eq!(hash.len(), 32, "hash part {hash}");
        assert!(
            hash.chars().all(|c| NIX_BASE32.contains(c)),
            "{hash} is not nix-base32"
        );
    }
    let a = format!("{HASH_A}-libfoo-1.0");
    let b = format!("{HASH_B}-bar-2.1");
    let c = format!("{HASH_C}-profile.txt");
    let mkdir =
        |p: &Path| std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    mkdir(parent);

    let pa = parent.join(&a);
    mkdir(&pa);
    mkdir(&pa.join("lib"));
    mkdir(&pa.join("etc"));
    mkdir(&pa.join("share"));
    let lib: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 256) as u8).collect();
    write_file_mode(&pa.join("lib/libfoo.so"), &lib, 0o755);
    write_file_mode(
        &pa.join("share/README"),
        b"libfoo: no references here\n",
        0o644,
    );

    let pb = parent.join(&b);
    mkdir(&pb);
    mkdir(&pb.join("bin"));
    write_file_mode(
        &pb.join("bin/bar"),
        format!("#!/bin/sh\nexec {store_dir}/{a}/lib/libfoo.so \"$@\"\n").as_bytes(),
        0o755,
    );
    make_symlink(format!("{store_dir}/{a}/lib").as_bytes(), &pb.join("lib"));

    write_file_mode(
        &parent.join(&c),
        format!("bar is {store_dir}/{b}/bin/bar\nlibfoo is {store_dir}/{a}\n").as_bytes(),
        0o644,
    );

    let mut c_refs = vec![a.clone(), b.clone()];
    c_refs.sort();
    vec![
        StoreItem {
            name: a.clone(),
            refs: vec![],
        },
        StoreItem {
            name: b,
            refs: vec![a],
        },
        StoreItem {
            name: c,
            refs: c_refs,
        },
    ]
}

/// `offload-master key generate --dir DIR`; returns DIR.
fn generate_key(dir: &Path) -> PathBuf {
    run_ok(master().args(["key", "generate", "--dir"]).arg(dir), b"");
    dir.to_path_buf()
}

/// `offload-master key authorize --acl ACL < KEYDIR/signing-key.pub`.
fn authorize(acl: &Path, key_dir: &Path) {
    let public = std::fs::read(key_dir.join("signing-key.pub")).expect("read signing-key.pub");
    run_ok(
        master().args(["key", "authorize", "--acl"]).arg(acl),
        &public,
    );
}

/// `offload-master archive export --key KEYDIR/signing-key.sec [--store-dir D] PATH...`.
fn our_export(key_dir: &Path, store_dir: Option<&str>, paths: &[PathBuf]) -> Vec<u8> {
    let mut cmd = master();
    cmd.args(["archive", "export", "--key"])
        .arg(key_dir.join("signing-key.sec"));
    if let Some(dir) = store_dir {
        cmd.args(["--store-dir", dir]);
    }
    run_ok(cmd.args(paths), b"")
}

/// Split command output into its lines.
fn lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8(stdout.to_vec())
        .expect("output is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// One line of `archive verify`: (verdict, store path, signer).
fn verdicts(stdout: &[u8]) -> Vec<(String, String, String)> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                [verdict, path, signer] => (verdict.to_owned(), path.to_owned(), signer.to_owned()),
                _ => panic!("`archive verify` line {line:?} is not VERDICT<TAB>STORE_PATH<TAB>SIGNER; whole output:\n{text}"),
            }
        })
        .collect()
}

fn read_u64(bytes: &[u8], off: usize, what: &str) -> u64 {
    let field = bytes.get(off..off + 8).unwrap_or_else(|| {
        panic!(
            "stream of {} bytes ends at offset {off} while reading {what}",
            bytes.len()
        )
    });
    u64::from_le_bytes(field.try_into().expect("8 bytes"))
}

/// The item bytes (NAR through deriver) of a one-item `nix-store --export`
/// stream, which is `u64 1 ‖ item ‖ u64 0 (no signature) ‖ u64 0 (end)`.
fn nix_export_item<'a>(stream: &'a [u8], path: &str) -> &'a [u8] {
    assert!(
        stream.len() > 24,
        "`nix-store --export {path}` wrote only {} bytes",
        stream.len()
    );
    assert_eq!(
        read_u64(stream, 0, "item marker"),
        1,
        "`nix-store --export {path}` item marker"
    );
    let end = stream.len() - 16;
    assert_eq!(
        stream[end..],
        [0u8; 16],
        "`nix-store --export {path}` should end with has_sig 0 and the end marker 0"
    );
    &stream[8..end]
}

/// Walk our signed export stream: every item must be exactly one of
/// `expected` (store path, item bytes up to and including the deriver, as
/// `nix-store --export` writes them) followed by `has_sig = 1` and a
/// signature string. Returns the store paths in stream order.
fn match_signed_stream(stream: &[u8], expected: &[(String, Vec<u8>)]) -> Vec<String> {
    let common = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut order = Vec::new();
    let mut off = 0;
    loop {
        match read_u64(stream, off, "item marker") {
            0 => {
                assert_eq!(
                    off + 8,
                    stream.len(),
                    "bytes after the end marker at offset {off}"
                );
                return order;
            }
            1 => off += 8,
            other => panic!("item marker {other} at offset {off} of our export stream"),
        }
        let rest = &stream[off..];
        let (path, item) = expected
            .iter()
            .max_by_key(|(_, item)| common(rest, item))
            .expect("at least one expected item");
        assert_bytes_eq(
            &format!(
                "our export stream's item at offset {off} vs `nix-store --export {path}` (offsets relative to the item)"
            ),
            &rest[..item.len().min(rest.len())],
            item,
        );
        assert!(
            !order.contains(path),
            "{path} appears twice in our export stream"
        );
        order.push(path.clone());
        off += item.len();
        assert_eq!(
            read_u64(stream, off, "has_sig"),
            1,
            "has_sig of {path} at offset {off}"
        );
        off += 8;
        let sig_len = usize::try_from(read_u64(stream, off, "signature length")).expect("length");
        off += 8;
        let sig = stream
            .get(off..off + sig_len)
            .unwrap_or_else(|| panic!("signature of {path} runs past the end of the stream"));
        assert!(
            sig.starts_with(b"(signature"),
            "signature of {path} does not start with `(signature`: {:?}",
            String::from_utf8_lossy(&sig[..sig.len().min(40)])
        );
        off += sig_len.div_ceil(8) * 8;
    }
}

/// Import our signed export of the three items into a fresh Nix chroot store
/// with logical store directory `store_dir`, then check what Nix recorded.
fn check_nix_imports_our_export(store_dir: &str, export_store_dir_flag: Option<&str>) {
    let tmp = tempdir();
    let w = tmp.path();
    let gnu_existed = Path::new("/gnu").exists();
    let items = write_store_items(&w.join("items"), store_dir);
    let key = generate_key(&w.join("key"));
    // Reverse topological order on the command line: the export must sort.
    let args: Vec<PathBuf> = items
        .iter()
        .rev()
        .map(|i| w.join("items").join(&i.name))
        .collect();
    let stream = our_export(&key, export_store_dir_flag, &args);

    let url = nix_store_url(&w.join("chroot"), store_dir);
    let store_path = |name: &str| format!("{store_dir}/{name}");
    let imported = run_ok(nix_store(w).args(["--store", &url, "--import"]), &stream);
    assert_eq!(
        sorted(lines(&imported)),
        sorted(items.iter().map(|i| store_path(&i.name)).collect()),
        "paths printed by `nix-store --store {url} --import` of our export stream"
    );

    let mut nix_items = Vec::new();
    for item in &items {
        let path = store_path(&item.name);
        assert!(
            w.join("chroot/nix/store").join(&item.name).exists(),
            "{path} was not written to the chroot store's real directory"
        );
        let refs = run_ok(
            nix_store(w).args(["--store", &url, "-q", "--references", &path]),
            b"",
        );
        assert_eq!(
            sorted(lines(&refs)),
            item.refs.iter().map(|r| store_path(r)).collect::<Vec<_>>(),
            "`nix-store -q --references {path}` after importing our stream"
        );
        let exported = run_ok(nix_store(w).args(["--store", &url, "--export", &path]), b"");
        nix_items.push((path.clone(), nix_export_item(&exported, &path).to_vec()));
    }
    let order = match_signed_stream(&stream, &nix_items);
    assert_eq!(
        order,
        items
            .iter()
            .map(|i| store_path(&i.name))
            .collect::<Vec<_>>(),
        "items of our export stream should be in topological order (dependencies first)"
    );

    for item in &items {
        let leaked = Path::new("/gnu/store").join(&item.name);
        assert!(
            !leaked.exists(),
            "{} was created outside the chroot store",
            leaked.display()
        );
    }
    if !gnu_existed {
        assert!(!Path::new("/gnu").exists(), "/gnu was created by the test");
    }
}

// ---------------------------------------------------------------------------
// 4. `nix-store --import` accepts our signed export streams.

#[test]
fn nix_store_imports_our_export_into_a_gnu_store_chroot() {
    check_nix_imports_our_export("/gnu/store", None);
}

#[test]
fn nix_store_imports_our_export_with_store_dir_nix_store() {
    check_nix_imports_our_export("/nix/store", Some("/nix/store"));
}

// ---------------------------------------------------------------------------
// 5. Our reader parses Nix's (unsigned) export streams and refuses to import them.

fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

/// An unsigned export stream (`nix-daemon.md` §4.4) written by the test
/// itself, as a way to give Nix items with references and a deriver:
/// (NAR, store path, sorted references, deriver) per item.
fn unsigned_stream(items: &[(Vec<u8>, String, Vec<String>, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (nar, path, refs, deriver) in items {
        put_u64(&mut out, 1);
        out.extend_from_slice(nar);
        put_u64(&mut out, 0x4558_494e);
        put_str(&mut out, path.as_bytes());
        put_u64(&mut out, refs.len() as u64);
        for r in refs {
            put_str(&mut out, r.as_bytes());
        }
        put_str(&mut out, deriver.as_bytes());
        put_u64(&mut out, 0);
    }
    put_u64(&mut out, 0);
    out
}

/// A key directory and an ACL file that authorises it.
fn key_and_acl(w: &Path) -> (PathBuf, PathBuf) {
    let key = generate_key(&w.join("key"));
    let acl = w.join("acl");
    authorize(&acl, &key);
    (key, acl)
}

fn assert_empty_dir(dir: &Path, context: &str) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "{context}: {} should stay empty but has {entries:?}",
        dir.display()
    );
}

#[test]
fn nix_store_export_is_read_as_unsigned() {
    let tmp = tempdir();
    let w = tmp.path();
    let url = nix_store_url(&w.join("chroot"), "/gnu/store");

    // Items added by Nix itself.
    std::fs::create_dir(w.join("src")).expect("mkdir src");
    write_file_mode(
        &w.join("src/hello.txt"),
        b"hello from nix-store --add\n",
        0o644,
    );
    write_test_tree(&w.join("src/tree"), 5);
    let added = run_ok(
        nix_store(w)
            .args(["--store", &url, "--add"])
            .arg(w.join("src/hello.txt"))
            .arg(w.join("src/tree")),
        b"",
    );
    let mut paths = lines(&added);
    assert_eq!(paths.len(), 2, "`nix-store --add` printed {paths:?}");

    // Items with references and a deriver, imported from a stream the test
    // writes itself (independent of our export code).
    let items = write_store_items(&w.join("items"), "/gnu/store");
    let synthetic: Vec<_> = items
        .iter()
        .map(|i| {
            (
                nix_dump(w, &w.join("items").join(&i.name)),
                format!("/gnu/store/{}", i.name),
                i.refs.iter().map(|r| format!("/gnu/store/{r}")).collect(),
                format!(
                    "/gnu/store/{HASH_DRV}-{}.drv",
                    i.name.split_once('-').expect("dash").1
                ),
            )
        })
        .collect();
    run_ok(
        nix_store(w).args(["--store", &url, "--import"]),
        &unsigned_stream(&synthetic),
    );
    paths.extend(synthetic.iter().map(|s| s.1.clone()));

    let stream = run_ok(
        nix_store(w)
            .args(["--store", &url, "--export"])
            .args(&paths),
        b"",
    );
    let (_key, acl) = key_and_acl(w);

    let out = run_with_input(
        master().args(["archive", "verify", "--acl"]).arg(&acl),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive verify` of an unsigned Nix export should exit non-zero"
    );
    let got = verdicts(&out.stdout);
    assert_eq!(
        sorted(got.iter().map(|v| v.1.clone()).collect()),
        sorted(paths.clone()),
        "store paths listed by `archive verify` of `nix-store --export`; stderr:\n{}",
        stderr_of(&out)
    );
    for (verdict, path, signer) in &got {
        assert_eq!(
            (verdict.as_str(), signer.as_str()),
            ("unsigned", "-"),
            "verdict and signer of {path} from `archive verify` of a Nix export"
        );
    }

    let into = w.join("imported");
    std::fs::create_dir(&into).expect("mkdir imported");
    let out = run_with_input(
        master()
            .args(["archive", "import", "--acl"])
            .arg(&acl)
            .arg("--to")
            .arg(&into),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive import` of an unsigned Nix export should exit non-zero"
    );
    assert!(
        lines(&out.stdout).is_empty(),
        "`archive import` of an unsigned stream printed imported paths: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_empty_dir(&into, "`archive import` of an unsigned Nix export");
}

#[test]
fn golden_nix_export_is_read_as_unsigned() {
    let tmp = tempdir();
    let w = tmp.path();
    let stream = read_vector("hello.export");
    let (_key, acl) = key_and_acl(w);

    let out = run_with_input(
        master().args(["archive", "verify", "--acl"]).arg(&acl),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive verify` of hello.export should exit non-zero"
    );
    assert_eq!(
        verdicts(&out.stdout),
        vec![(
            "unsigned".to_owned(),
            "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello".to_owned(),
            "-".to_owned()
        )],
        "`archive verify` of the golden hello.export; stderr:\n{}",
        stderr_of(&out)
    );

    let into = w.join("imported");
    std::fs::create_dir(&into).expect("mkdir imported");
    let out = run_with_input(
        master()
            .args(["archive", "import", "--acl"])
            .arg(&acl)
            .arg("--to")
            .arg(&into),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive import` of hello.export should exit non-zero"
    );
    assert_empty_dir(&into, "`archive import` of the golden hello.export");
}

// ---------------------------------------------------------------------------
// 6. Our signed exports import with `archive import` only when authorised.

/// Items, a signing key, and our signed export of the items (in reverse
/// topological order on the command line).
fn signed_items(w: &Path) -> (Vec<StoreItem>, PathBuf, Vec<u8>) {
    let items = write_store_items(&w.join("items"), "/gnu/store");
    let key = generate_key(&w.join("key"));
    let args: Vec<PathBuf> = items
        .iter()
        .rev()
        .map(|i| w.join("items").join(&i.name))
        .collect();
    let stream = our_export(&key, None, &args);
    (items, key, stream)
}

#[test]
fn signed_export_imports_with_authorized_key() {
    let tmp = tempdir();
    let w = tmp.path();
    let (items, key, stream) = signed_items(w);
    let acl = w.join("acl");
    authorize(&acl, &key);
    let expected: Vec<String> = items
        .iter()
        .map(|i| format!("/gnu/store/{}", i.name))
        .collect();

    let out = run_with_input(
        master().args(["archive", "verify", "--acl"]).arg(&acl),
        &stream,
    );
    let got = verdicts(&out.stdout);
    assert_eq!(
        sorted(got.iter().map(|v| v.1.clone()).collect()),
        sorted(expected.clone()),
        "store paths listed by `archive verify`; stderr:\n{}",
        stderr_of(&out)
    );
    for (verdict, path, signer) in &got {
        assert_eq!(
            verdict, "valid",
            "verdict for {path} signed by an authorised key"
        );
        assert_ne!(signer, "-", "signer of {path}");
        assert_eq!(signer, &got[0].2, "all items have the same signer");
    }
    assert!(
        out.status.success(),
        "`archive verify` exits 0 when all items are valid; stderr:\n{}",
        stderr_of(&out)
    );

    let into = w.join("imported");
    std::fs::create_dir(&into).expect("mkdir imported");
    let printed = run_ok(
        master()
            .args(["archive", "import", "--acl"])
            .arg(&acl)
            .arg("--to")
            .arg(&into),
        &stream,
    );
    assert_eq!(
        sorted(lines(&printed)),
        sorted(expected),
        "store paths printed by `archive import`"
    );
    for item in &items {
        let original = w.join("items").join(&item.name);
        let restored = into.join(&item.name);
        assert_bytes_eq(
            &format!(
                "`nix-store --dump` of imported {} vs of the original",
                item.name
            ),
            &nix_dump(w, &restored),
            &nix_dump(w, &original),
        );
        assert_canonical(&original, &restored);
    }
    make_tree_writable(&into);
}

#[test]
fn signed_export_is_refused_without_authorization() {
    let tmp = tempdir();
    let w = tmp.path();
    let (items, _key, stream) = signed_items(w);
    // The ACL holds some other key only.
    let other = generate_key(&w.join("other-key"));
    let acl = w.join("acl");
    authorize(&acl, &other);
    let expected: Vec<String> = items
        .iter()
        .map(|i| format!("/gnu/store/{}", i.name))
        .collect();

    let out = run_with_input(
        master().args(["archive", "verify", "--acl"]).arg(&acl),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive verify` with the signer missing from the ACL should exit non-zero"
    );
    let got = verdicts(&out.stdout);
    assert_eq!(
        sorted(got.iter().map(|v| v.1.clone()).collect()),
        sorted(expected),
        "store paths listed by `archive verify`; stderr:\n{}",
        stderr_of(&out)
    );
    for (verdict, path, signer) in &got {
        assert_eq!(
            verdict, "unauthorized",
            "verdict for {path} signed by a key not in the ACL"
        );
        assert_ne!(signer, "-", "signer of {path} should still be reported");
    }

    let into = w.join("imported");
    std::fs::create_dir(&into).expect("mkdir imported");
    let out = run_with_input(
        master()
            .args(["archive", "import", "--acl"])
            .arg(&acl)
            .arg("--to")
            .arg(&into),
        &stream,
    );
    assert!(
        !out.status.success(),
        "`archive import` with the signer missing from the ACL should exit non-zero"
    );
    assert!(
        lines(&out.stdout).is_empty(),
        "`archive import` printed imported paths: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_empty_dir(&into, "`archive import` with an ACL lacking the signer");
}
