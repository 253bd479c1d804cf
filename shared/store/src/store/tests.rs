//! The store interface over a Guix daemon, against a scripted guix-daemon
//! on a real Unix socket: exports come back re-signed with our key, and
//! builds report the daemon's statuses and stream its log lines.

use offload_core::acl::Acl;
use offload_core::export::{self, ExportReader};
use offload_core::keys::SecretKey;
use offload_core::nar::NarWriter;
use offload_core::store_path::{StoreDir, StorePath};

use super::*;
use crate::daemon::transcript::*;
use crate::embedded::build::{BuildEvent, BuildOptions, BuildStatus, Exit};
use crate::spec::StoreSpec;

const ITEM: &str = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello";
const DRV: &str = "/gnu/store/1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s-hello.drv";
const OUT: &str = "/gnu/store/zyxwvsrqpnmlkjihgfdcba9876543210-hello";

/// Serve one connection on a socket in a fresh directory with `steps`
/// (after the handshake); the store opened on it, and the server task.
async fn guix_store(steps: Vec<Step>) -> (Store, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("socket");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.expect("accept");
        let mut all = guix_handshake();
        all.extend(steps);
        play(conn, all).await;
    });
    let store = Store::open(
        &StoreSpec::GuixDaemon(socket),
        StoreDir::new("/gnu/store").expect("store dir"),
    )
    .await
    .expect("open");
    (store, server, dir)
}

/// An unsigned item as the Guix daemon's export-path writes it: NAR,
/// magic, path, references, deriver, no signature.
fn unsigned_item(contents: &[u8]) -> Vec<u8> {
    unsigned_item_at(ITEM, contents)
}

/// [`unsigned_item`] for `path`.
fn unsigned_item_at(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut item = Vec::new();
    let mut nar = NarWriter::new(&mut item).expect("nar");
    nar.regular(None, false, contents.len() as u64, &mut &contents[..])
        .expect("regular");
    nar.finish().expect("nar end");
    let mut trailer = Vec::new();
    {
        let mut r = Request::default();
        r.u64(export::EXPORT_MAGIC).str(path).u64(0).str("").u64(0);
        trailer.extend_from_slice(&r.0);
    }
    item.extend_from_slice(&trailer);
    item
}

#[tokio::test]
async fn guix_exports_are_resigned_with_our_key() {
    let item = unsigned_item(b"Hello, Guix!\n");
    let (first, second) = item.split_at(100);
    let steps = vec![
        // export-path without the daemon's signature; the item arrives in
        // WRITE frames of any size.
        expect(|r| {
            r.u64(16).str(ITEM).u64(0);
        }),
        send(|r| {
            r.u64(WRITE)
                .bytes(first)
                .u64(WRITE)
                .bytes(second)
                .u64(LAST)
                .u64(1);
        }),
    ];
    let (mut store, server, _dir) = guix_store(steps).await;
    let key = SecretKey::from_random(&[7; 32]);
    let mut stream = Vec::new();
    let path = StorePath::parse(ITEM).expect("path");
    store
        .export(std::slice::from_ref(&path), &key, &mut stream)
        .await
        .expect("export");
    server.await.expect("transcript played");

    let mut acl = Acl::default();
    acl.authorize(key.public_key());
    let mut reader = ExportReader::new(&stream[..], Default::default());
    let mut it = reader.next_item().expect("item").expect("one item");
    while it.nar().next_event().expect("nar").is_some() {}
    let trailer = it.finish().expect("trailer");
    assert_eq!(trailer.path, path);
    let check = export::check_item(&trailer, &acl);
    assert!(check.is_valid(), "{}", check.word());
    assert!(reader.next_item().expect("end").is_none());
    // Everything before the signature slot is the daemon's bytes.
    assert_eq!(&stream[8..8 + item.len() - 8], &item[..item.len() - 8]);
}

#[tokio::test]
async fn guix_builds_stream_the_log_and_map_statuses() {
    let options = |r: &mut Request| {
        r.u64(19)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(3)
            .str("build-max-jobs")
            .str("1")
            .str("build-max-silent-time")
            .str("0")
            .str("build-cores")
            .str("0");
    };
    let steps = vec![
        expect(options),
        send(|r| {
            r.u64(LAST);
        }),
        // The outputs, from the daemon's DerivationOutputs.
        expect(|r| {
            r.u64(22).str(DRV);
        }),
        send(|r| {
            r.u64(LAST).strings(&[OUT]);
        }),
        expect(|r| {
            r.u64(28).str(DRV);
        }),
        send(|r| {
            r.u64(LAST).strings(&["out"]);
        }),
        // Not valid yet: build it.
        expect(|r| {
            r.u64(31).strings(&[OUT]);
        }),
        send(|r| {
            r.u64(LAST).strings::<&str>(&[]);
        }),
        expect(|r| {
            r.u64(9).strings(&[DRV]).u64(0);
        }),
        send(|r| {
            r.u64(NEXT)
                .str("configuring\n")
                .u64(NEXT)
                .str("compiling\n")
                .u64(ERROR)
                .str("build of `/gnu/store/…-hello.drv' failed")
                .u64(100);
        }),
    ];
    let (mut store, server, _dir) = guix_store(steps).await;
    let mut events = Vec::new();
    let drv = StorePath::parse(DRV).expect("drv");
    let results = store
        .build(
            std::slice::from_ref(&drv),
            &BuildOptions::default(),
            &mut |e| events.push(e),
        )
        .await
        .expect("build");
    server.await.expect("transcript played");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, BuildStatus::Failed(Exit::Unknown));
    assert_eq!(
        results[0]
            .outputs
            .get("out")
            .map(ToString::to_string)
            .as_deref(),
        Some(OUT)
    );
    let lines: Vec<&[u8]> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Log { line, .. } => Some(line.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, [&b"configuring"[..], &b"compiling"[..]]);
    assert!(matches!(events.first(), Some(BuildEvent::Started { .. })));
    assert!(
        matches!(events.last(), Some(BuildEvent::Failed { message, .. }) if message.contains("failed"))
    );
}

/// A one-item export stream: marker, item, end marker.
fn single(item: &[u8]) -> Vec<u8> {
    let mut out = 1u64.to_le_bytes().to_vec();
    out.extend_from_slice(item);
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

#[tokio::test]
async fn guix_imports_go_item_by_item_naming_the_refused_one_and_what_was_kept() {
    let (first, second) = (
        unsigned_item_at(ITEM, b"first\n"),
        unsigned_item_at(OUT, b"second\n"),
    );
    let steps = vec![
        expect(|r| {
            r.u64(27);
        }),
        send(|r| {
            r.u64(READ).u64(1 << 20);
        }),
        expect(|r| {
            r.bytes(&single(&first));
        }),
        send(|r| {
            r.u64(LAST).strings(&[ITEM]);
        }),
        expect(|r| {
            r.u64(27);
        }),
        send(|r| {
            r.u64(READ).u64(1 << 20);
        }),
        expect(|r| {
            r.bytes(&single(&second));
        }),
        send(|r| {
            r.u64(ERROR)
                .str("signed hash doesn't match actual contents of imported archive")
                .u64(1);
        }),
    ];
    let (mut store, server, _dir) = guix_store(steps).await;
    let mut stream = 1u64.to_le_bytes().to_vec();
    stream.extend_from_slice(&first);
    stream.extend_from_slice(&1u64.to_le_bytes());
    stream.extend_from_slice(&second);
    stream.extend_from_slice(&0u64.to_le_bytes());
    let acl = Acl::default();
    let mut registered = Vec::new();
    let err = store
        .import(&stream[..], Signatures::Check(&acl), &mut |i| {
            registered.push(i.path.to_string())
        })
        .await
        .expect_err("the second item is refused");
    server.await.expect("transcript played");
    assert_eq!(registered, [ITEM]);
    let text = err.to_string();
    assert!(text.contains(OUT), "{text}");
    assert!(text.contains("signed hash doesn't match"), "{text}");
    assert!(text.contains(&format!("kept: {ITEM}")), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_guix_daemon_that_never_finishes_an_import_is_given_up_on() {
    let item = unsigned_item_at(ITEM, b"stuck\n");
    let steps = vec![
        expect(|r| {
            r.u64(27);
        }),
        send(|r| {
            r.u64(READ).u64(1 << 20);
        }),
        expect(|r| {
            r.bytes(&single(&item));
        }),
        // As a daemon does whose build hook imports the outputs it holds
        // the locks of.
        Step::Stall,
    ];
    let (mut store, server, _dir) = guix_store(steps).await;
    let acl = Acl::default();
    let err = store
        .import(&single(&item)[..], Signatures::Check(&acl), &mut |_| {})
        .await
        .expect_err("given up");
    let text = err.to_string();
    assert!(
        text.contains(ITEM) && text.contains("did not finish importing it within 60 s"),
        "{text}"
    );
    assert!(text.contains("nothing was registered"), "{text}");
    server.abort();
}
