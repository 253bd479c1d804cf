//! The Guix dialect against transcripts built from the spec
//! (`guix-offload.md` §6.7: framing, handshake, stderr codes, opcodes), and
//! the framing's limits against hostile daemons. A scripted peer on an
//! in-memory pipe checks every byte the client sends and answers with the
//! bytes a Guix daemon sends.

use tokio::io::DuplexStream;

use super::transcript::*;
use super::*;
use offload_core::store_path::StorePath;

/// Run `f` on a client handshaken with a peer that plays `steps`.
async fn with_guix<F, T>(steps: Vec<Step>, f: F) -> T
where
    F: AsyncFnOnce(&mut DaemonClient<DuplexStream>) -> T,
{
    let (client_end, peer) = tokio::io::duplex(1 << 16);
    let mut all = guix_handshake();
    all.extend(steps);
    let server = tokio::spawn(play(peer, all));
    let mut client = DaemonClient::handshake(client_end, Some(Dialect::Guix))
        .await
        .expect("handshake");
    assert_eq!(client.dialect(), Dialect::Guix);
    assert_eq!(client.daemon_release(), None);
    let out = f(&mut client).await;
    server.await.expect("the transcript played to its end");
    out
}

const ITEM: &str = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello";
const DEP: &str = "/gnu/store/zyxwvsrqpnmlkjihgfdcba9876543210-dep";
const DRV: &str = "/gnu/store/1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s-hello.drv";

#[tokio::test]
async fn guix_valid_paths_and_path_info() {
    let hash = "ab".repeat(32);
    let steps = vec![
        expect(|r| {
            r.u64(1).str(ITEM);
        }),
        send(|r| {
            r.u64(LAST).u64(1);
        }),
        // query-valid-paths: no substitute flag in the Guix dialect.
        expect(|r| {
            r.u64(31).strings(&[ITEM, DEP]);
        }),
        send(|r| {
            r.u64(LAST).strings(&[DEP]);
        }),
        // query-path-info: Guix has no validity flag, so the client asks
        // valid-path? first; then deriver, base16 hash, references,
        // registration time, NAR size, and nothing Nix-specific after it.
        expect(|r| {
            r.u64(1).str(ITEM);
        }),
        send(|r| {
            r.u64(LAST).u64(1);
        }),
        expect(|r| {
            r.u64(26).str(ITEM);
        }),
        send(|r| {
            r.u64(LAST)
                .str(DRV)
                .str(&hash)
                .strings(&[DEP, ITEM])
                .u64(1_700_000_000)
                .u64(1234);
        }),
        expect(|r| {
            r.u64(1).str(DEP);
        }),
        send(|r| {
            r.u64(LAST).u64(0);
        }),
    ];
    with_guix(steps, async |c| {
        assert!(c.is_valid_path(ITEM).await.expect("valid?"));
        assert_eq!(
            c.query_valid_paths(&[ITEM, DEP])
                .await
                .expect("valid paths"),
            [DEP]
        );
        let info = c
            .query_path_info(&StorePath::parse(ITEM).expect("path"))
            .await
            .expect("info")
            .expect("valid");
        assert_eq!(info.nar_hash, [0xab; 32]);
        assert_eq!(info.deriver.expect("deriver").to_string(), DRV);
        let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
        assert_eq!(refs, [ITEM, DEP], "sorted");
        assert_eq!(
            (info.registration_time, info.nar_size),
            (1_700_000_000, 1234)
        );
        assert_eq!(
            c.query_path_info(&StorePath::parse(DEP).expect("path"))
                .await
                .expect("info"),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn guix_set_options_carry_jobs_silence_and_cores_as_pairs() {
    let steps = vec![
        expect(|r| {
            r.u64(19)
                .u64(0) // keep failed
                .u64(0) // keep going
                .u64(0) // fallback
                .u64(0) // verbosity
                .u64(1) // use build hook
                .u64(0) // build verbosity
                .u64(0) // log type
                .u64(1) // print build trace
                .u64(1) // use substitutes
                .u64(5)
                .str("build-max-jobs")
                .str("1")
                .str("build-max-silent-time")
                .str("3600")
                .str("build-cores")
                .str("0")
                .str("build-timeout")
                .str("7200")
                .str("user-name")
                .str("alice");
        }),
        send(|r| {
            r.u64(LAST);
        }),
    ];
    with_guix(steps, async |c| {
        let options = Options {
            max_silent_time: 3600,
            use_build_hook: true,
            print_build_trace: true,
            use_substitutes: true,
            overrides: vec![
                ("build-timeout".into(), "7200".into()),
                ("user-name".into(), "alice".into()),
            ],
            ..Options::default()
        };
        c.set_options(&options).await.expect("set-options");
    })
    .await;
}

#[tokio::test]
async fn guix_build_streams_log_and_reports_failure_status() {
    let steps = vec![
        // build-things: plain .drv paths (no `!outputs`), mode 0.
        expect(|r| {
            r.u64(9).strings(&[DRV]).u64(0);
        }),
        send(|r| {
            r.u64(NEXT)
                .str("building /gnu/store/…-hello.drv\n")
                .u64(NEXT)
                .bytes(b"raw \xff log\n")
                .u64(LAST)
                .u64(1);
        }),
        expect(|r| {
            r.u64(9).strings(&[DRV]).u64(0);
        }),
        send(|r| {
            r.u64(NEXT)
                .str("oops\n")
                .u64(ERROR)
                .str("build of `/gnu/store/…-hello.drv' failed")
                .u64(100);
        }),
        // The connection is still usable after an error.
        expect(|r| {
            r.u64(11).str(DRV);
        }),
        send(|r| {
            r.u64(LAST).u64(1);
        }),
    ];
    with_guix(steps, async |c| {
        let (tx, rx) = std::sync::mpsc::channel();
        c.set_logger(move |e| tx.send(e).expect("log"));
        c.build_paths(&[DRV], BuildMode::Normal)
            .await
            .expect("build");
        let err = c
            .build_paths(&[DRV], BuildMode::Normal)
            .await
            .expect_err("failure");
        match err {
            Error::Daemon { message, status } => {
                assert_eq!(status, 100);
                assert!(message.contains("failed"), "{message}");
            }
            other => panic!("{other}"),
        }
        c.add_temp_root(DRV).await.expect("temp root");
        let log: Vec<LogEvent> = rx.try_iter().collect();
        assert_eq!(
            log,
            [
                LogEvent::Message(b"building /gnu/store/\xe2\x80\xa6-hello.drv".to_vec()),
                LogEvent::Message(b"raw \xff log".to_vec()),
                LogEvent::Message(b"oops".to_vec()),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn guix_import_serves_read_requests_and_export_collects_writes() {
    let stream: Vec<u8> = (0..100u8).collect();
    let steps = vec![
        expect(|r| {
            r.u64(27);
        }),
        send(|r| {
            r.u64(READ).u64(64);
        }),
        expect(|r| {
            r.bytes(&(0..64u8).collect::<Vec<_>>());
        }),
        send(|r| {
            r.u64(READ).u64(64);
        }),
        expect(|r| {
            r.bytes(&(64..100u8).collect::<Vec<_>>());
        }),
        send(|r| {
            r.u64(READ).u64(64);
        }),
        expect(|r| {
            r.bytes(b"");
        }),
        send(|r| {
            r.u64(LAST).strings(&[ITEM]);
        }),
        // export-path with sign = 1: data in WRITE frames, then u64 1.
        expect(|r| {
            r.u64(16).str(ITEM).u64(1);
        }),
        send(|r| {
            r.u64(WRITE)
                .bytes(b"first ")
                .u64(WRITE)
                .bytes(b"second")
                .u64(LAST)
                .u64(1);
        }),
    ];
    with_guix(steps, async |c| {
        let mut source: &[u8] = &stream;
        let imported = c.import_paths(&mut source).await.expect("import");
        assert_eq!(imported, [ITEM]);
        let mut out = Vec::new();
        c.export_path(ITEM, true, &mut out).await.expect("export");
        assert_eq!(out, b"first second");
        let nar: &mut (dyn tokio::io::AsyncRead + Unpin + Send) = &mut &b""[..];
        let info = crate::info::PathInfo {
            path: StorePath::parse(ITEM).expect("path"),
            deriver: None,
            nar_hash: [0; 32],
            references: vec![],
            registration_time: 0,
            nar_size: 0,
        };
        assert!(matches!(
            c.add_to_store_nar(&info, nar).await,
            Err(Error::Unsupported(Dialect::Guix, _))
        ));
    })
    .await;
}

#[tokio::test]
async fn guix_derivation_outputs_pair_names_with_paths() {
    let out = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello";
    let doc = "/gnu/store/zyxwvsrqpnmlkjihgfdcba9876543210-hello-doc";
    let steps = vec![
        // query-derivation-outputs (22), then query-derivation-output-names (28).
        expect(|r| {
            r.u64(22).str(DRV);
        }),
        // As guix-daemon sends them: each a separately sorted set, so
        // the sorted names (doc, out) and the sorted paths (out's, doc's)
        // do not line up.
        send(|r| {
            r.u64(LAST).strings(&[out, doc]);
        }),
        expect(|r| {
            r.u64(28).str(DRV);
        }),
        send(|r| {
            r.u64(LAST).strings(&["doc", "out"]);
        }),
    ];
    with_guix(steps, async |c| {
        let map = c.query_derivation_outputs(DRV).await.expect("outputs");
        assert_eq!(map.get("out"), Some(&Some(out.to_owned())));
        assert_eq!(map.get("doc"), Some(&Some(doc.to_owned())));
        assert_eq!(map.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn hostile_daemons_are_refused_with_clear_errors() {
    // Not a daemon at all.
    let (client_end, peer) = tokio::io::duplex(1 << 12);
    let server = tokio::spawn(play(
        peer,
        vec![
            expect(|r| {
                r.u64(0x6e69_7863);
            }),
            send(|r| {
                r.u64(0x4854_5450);
            }),
        ],
    ));
    let err = DaemonClient::handshake(client_end, None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a store daemon"), "{err}");
    server.await.expect("peer");

    // A log line longer than the limit, an unknown stderr code, and data
    // for a request that takes none each end the request with an error.
    for reply in [
        bytes(|r| {
            r.u64(NEXT).u64(1 << 40);
        }),
        bytes(|r| {
            r.u64(0x1234);
        }),
        bytes(|r| {
            r.u64(WRITE).bytes(b"unasked");
        }),
        bytes(|r| {
            r.u64(LAST).u64(7);
        }),
    ] {
        let steps = vec![
            expect(|r| {
                r.u64(1).str(ITEM);
            }),
            Step::Send(reply),
        ];
        let err = with_guix(steps, async |c| c.is_valid_path(ITEM).await)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }
}
