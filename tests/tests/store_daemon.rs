//! The worker-protocol client against a real Nix 2.8 daemon (Debian's
//! `nix-bin`) on an isolated store: over its socket and over
//! `nix-daemon --stdio`.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};

use offload_core::store_path::StorePath;
use offload_store::daemon::{
    self, BuildMode, Connection, DaemonClient, Dialect, LogEvent, Options,
};
use offload_tests::nixd::IsolatedNix;
use offload_tests::{require_program, run_ok};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(nix: &IsolatedNix) -> DaemonClient<Connection> {
    let conn = daemon::connect_unix(&nix.socket()).await.expect("connect");
    DaemonClient::handshake(conn, Some(Dialect::Nix))
        .await
        .expect("handshake")
}

fn path(p: &str) -> StorePath {
    StorePath::parse(p).expect("store path")
}

/// Collects everything the daemon logs.
fn capture(client: &mut DaemonClient<Connection>) -> Arc<Mutex<Vec<LogEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    client.set_logger(move |e| sink.lock().expect("log lock").push(e));
    events
}

#[test]
fn handshake_over_stdio_reports_nix_2_8() {
    let nix = IsolatedNix::new();
    let env: Vec<(&str, std::ffi::OsString)> = nix.env();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    rt().block_on(async {
        let conn =
            daemon::spawn_stdio(&require_program("nix-daemon", "nix-bin"), ["--stdio"], &env)
                .expect("spawn");
        let mut client = DaemonClient::handshake(conn, None)
            .await
            .expect("handshake");
        assert_eq!(client.dialect(), Dialect::Nix);
        assert_eq!(client.daemon_version(), 0x122);
        assert_eq!(client.daemon_release(), Some("2.8.0"));
        let missing = format!("{}/{}-x", nix.store_dir().display(), "0".repeat(32));
        assert!(!client.is_valid_path(&missing).await.expect("valid?"));
    });
}

#[test]
fn guix_dialect_is_refused_when_nix_answers() {
    let nix = IsolatedNix::new();
    let _d = nix.start_daemon();
    rt().block_on(async {
        let conn = daemon::connect_unix(&nix.socket()).await.expect("connect");
        let err = DaemonClient::handshake(conn, Some(Dialect::Guix))
            .await
            .err()
            .expect("a Nix daemon is not a Guix daemon");
        assert!(err.to_string().contains("expected a guix-daemon"), "{err}");
    });
}

#[test]
fn queries_match_nix_store() {
    let nix = IsolatedNix::new();
    let a = nix.instantiate(&IsolatedNix::sh_derivation(
        "step-a",
        "echo a-content > $out",
    ));
    let a_out = nix.run("nix-store", &["--realise", &a]);
    let b_expr = format!(
        "let a = {}; in {}",
        IsolatedNix::sh_derivation("step-a", "echo a-content > $out"),
        "derivation { name = \"step-b\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [\"-c\" \"read x < ${a}; echo \\\"b got $x from ${a}\\\" > $out\"]; }"
    );
    let b = nix.instantiate(&b_expr);
    let b_out = nix.run("nix-store", &["--realise", &b]);
    let _d = nix.start_daemon();
    rt().block_on(async {
        let mut client = connect(&nix).await;
        client
            .set_options(&Options::default())
            .await
            .expect("set-options");
        assert!(client.is_valid_path(&b_out).await.expect("valid?"));
        let bogus = format!("{}/{}-nothing", nix.store_dir().display(), "1".repeat(32));
        assert!(!client.is_valid_path(&bogus).await.expect("valid?"));
        let valid = client
            .query_valid_paths(&[&a_out, &bogus, &b_out])
            .await
            .expect("valid paths");
        assert_eq!(valid.len(), 2, "{valid:?}");
        assert!(valid.contains(&a_out) && valid.contains(&b_out));

        let info = client
            .query_path_info(&path(&b_out))
            .await
            .expect("path info")
            .expect("b is valid");
        assert_eq!(info.references, vec![path(&a_out)]);
        assert_eq!(info.deriver, Some(path(&b)));
        let hash = nix.run("nix-store", &["--query", "--hash", &b_out]);
        assert_eq!(
            format!("sha256:{}", offload_core::nixbase32::encode(&info.nar_hash)),
            hash
        );
        let nar = run_ok(nix.command("nix-store").args(["--dump", &b_out]), b"");
        assert_eq!(info.nar_size, nar.len() as u64);
        assert!(info.registration_time > 1_600_000_000);
        assert_eq!(
            client.query_path_info(&path(&bogus)).await.expect("info"),
            None
        );

        // A malformed request fails with the daemon's message. Nix ends the
        // connection after errors raised before it starts work, so ask again
        // on a new one.
        let err = client
            .is_valid_path("/not/in/the/store")
            .await
            .expect_err("an error");
        assert!(
            matches!(err, daemon::Error::Daemon { .. })
                && err.to_string().contains("not in the Nix store"),
            "{err}"
        );
        let mut client = connect(&nix).await;
        assert!(
            client
                .is_valid_path(&a_out)
                .await
                .expect("a new connection")
        );
    });
}

#[test]
fn builds_stream_their_log_and_failures_carry_the_message() {
    let nix = IsolatedNix::new();
    let ok = nix.instantiate(&IsolatedNix::sh_derivation(
        "logs",
        "echo line-one; echo line-two >&2; echo done > $out",
    ));
    let bad = nix.instantiate(&IsolatedNix::sh_derivation(
        "broken",
        "echo about-to-fail; exit 3",
    ));
    let _d = nix.start_daemon();
    rt().block_on(async {
        let mut client = connect(&nix).await;
        let events = capture(&mut client);
        client
            .set_options(&Options::default())
            .await
            .expect("set-options");
        client
            .build_paths(&[&ok], BuildMode::Normal)
            .await
            .expect("build");
        let lines: Vec<String> = events
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|e| match e {
                LogEvent::BuildLine(l) => Some(String::from_utf8_lossy(l).into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(lines, ["line-one", "line-two"]);
        let out = nix.run("nix-store", &["--query", "--outputs", &ok]);
        assert!(client.is_valid_path(&out).await.expect("valid?"));

        let err = client
            .build_paths(&[&bad], BuildMode::Normal)
            .await
            .expect_err("the build fails");
        let text = err.to_string();
        assert!(text.contains("failed with exit code 3"), "{text}");
        assert!(client.is_valid_path(&out).await.expect("still usable"));
    });
}

#[test]
fn export_equals_nix_store_export_and_imports_elsewhere() {
    let from = IsolatedNix::new();
    let drv = from.instantiate(&IsolatedNix::sh_derivation(
        "exported",
        "echo exported > $out",
    ));
    let out = from.run("nix-store", &["--realise", &drv]);
    let nix_export = run_ok(from.command("nix-store").args(["--export", &out]), b"");
    let _d = from.start_daemon();
    let item = rt().block_on(async {
        let mut client = connect(&from).await;
        let mut item = Vec::new();
        client
            .export_path(&out, false, &mut item)
            .await
            .expect("export");
        item
    });
    // `nix-store --export` frames the one item: u64 1 ‖ item ‖ u64 0.
    let mut framed = 1u64.to_le_bytes().to_vec();
    framed.extend_from_slice(&item);
    framed.extend_from_slice(&0u64.to_le_bytes());
    offload_tests::assert_bytes_eq("exported item", &framed, &nix_export);

    // Delete the item, then import Nix's own stream back through the daemon.
    from.run("nix-store", &["--delete", &out]);
    rt().block_on(async {
        let mut client = connect(&from).await;
        assert!(!client.is_valid_path(&out).await.expect("valid?"));
        let mut source: &[u8] = &nix_export;
        let imported = client.import_paths(&mut source).await.expect("import");
        assert_eq!(imported, std::slice::from_ref(&out));
        assert!(client.is_valid_path(&out).await.expect("valid?"));
    });
    from.assert_verify_clean();
}

#[test]
fn derivation_outputs_come_from_the_daemon() {
    let nix = IsolatedNix::new();
    let drv = nix.instantiate(
        "derivation { name = \"multi\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         outputs = [\"out\" \"dev\"]; args = [\"-c\" \"echo > $out; echo > $dev\"]; }",
    );
    let expected: Vec<String> = nix
        .run("nix-store", &["--query", "--outputs", &drv])
        .lines()
        .map(str::to_owned)
        .collect();
    let _d = nix.start_daemon();
    rt().block_on(async {
        let mut client = connect(&nix).await;
        let map = client
            .query_derivation_outputs(&drv)
            .await
            .expect("outputs");
        assert_eq!(map.keys().collect::<Vec<_>>(), ["dev", "out"]);
        let mut paths: Vec<String> = map.into_values().map(|p| p.expect("known path")).collect();
        paths.sort();
        let mut expected = expected.clone();
        expected.sort();
        assert_eq!(paths, expected);
    });
}
