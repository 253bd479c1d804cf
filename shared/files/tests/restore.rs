//! Dump and restore on a real filesystem: canonical metadata, exact bytes,
//! and nothing left behind when a NAR is bad.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use offload_core::nar::NarReader;
use offload_files::{dump, restore};

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/empty-dir")).unwrap();
    fs::write(root.join("a.txt"), b"abc").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("sub/run.sh"), b"#!/bin/sh\necho x\n").unwrap();
    fs::set_permissions(root.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
}

fn dump_bytes(path: &Path) -> Vec<u8> {
    dump::dump_path(path, Vec::new()).unwrap()
}

#[test]
fn golden_tree_nar_from_a_real_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a.txt"), b"abc").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/run.sh"), b"#!/bin/sh\necho x\n").unwrap();
    fs::set_permissions(root.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let golden = include_bytes!("../../core/vectors/nix/tree.nar");
    assert_eq!(dump_bytes(&root), golden);
}

#[test]
fn restore_is_canonical_and_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let nar = dump_bytes(&src);
    let dest = tmp.path().join("dest");
    restore::restore_atomically(
        &mut NarReader::new(nar.as_slice(), Default::default()),
        &dest,
    )
    .unwrap();
    let mode = |p: &str| {
        fs::symlink_metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o555);
    assert_eq!(mode("a.txt"), 0o444);
    assert_eq!(mode("sub/run.sh"), 0o555);
    assert_eq!(mode("sub"), 0o555);
    assert_eq!(mode("sub/empty-dir"), 0o555);
    for p in [
        "",
        "a.txt",
        "empty",
        "sub",
        "sub/run.sh",
        "sub/empty-dir",
        "link",
        "dangling",
    ] {
        let meta = fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!((meta.mtime(), meta.atime()), (1, 1), "{p}: atime and mtime");
    }
    assert_eq!(
        fs::read_link(dest.join("dangling")).unwrap(),
        Path::new("/nonexistent/target")
    );
    // Reading updates atimes (relatime), so compare contents last.
    assert_eq!(dump_bytes(&dest), nar);
    // Nothing but `dest` was created next to it.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn failed_restore_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let nar = dump_bytes(&src);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    for cut in [0, 8, 100, nar.len() / 2, nar.len() - 1] {
        let dest = out.join("dest");
        let err = restore::restore_atomically(
            &mut NarReader::new(&nar[..cut], Default::default()),
            &dest,
        );
        assert!(err.is_err(), "truncated at {cut}");
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "left-overs after a NAR cut at {cut}"
        );
    }
}

#[test]
fn restore_refuses_an_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let nar = dump_bytes(Path::new("/etc/hostname"));
    let dest = tmp.path().join("x");
    fs::write(&dest, b"keep me").unwrap();
    let err = restore::restore_atomically(
        &mut NarReader::new(nar.as_slice(), Default::default()),
        &dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(&dest).unwrap(), b"keep me");
}

#[test]
fn dump_refuses_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = dump::dump_path(&sock, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("socket, FIFO or device"), "{err}");
}
