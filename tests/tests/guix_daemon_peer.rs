//! Against the real guix-daemon (`../shared/peers/guix-daemon`, built from
//! Guix's own source): a Guile client from the peer's sources asks the
//! daemon — its `GUIX` pointing at `deploy/guix-dispatcher` — to build a
//! DAG of five derivations (one with outputs `out` and `lib`) with
//! offloading on and no local build slot; our hook sends them to two
//! agents on a namespace LAN; the daemon reports every one built, `guix gc
//! --verify=contents` is clean, and each output lands under its name.
//! And our worker-protocol client against the same daemon (rather than
//! transcripts written with the client's own encoder): signed imports
//! checked by the real `guix authenticate`, a refused item named with the
//! items kept before it, a two-output derivation's outputs under their
//! names.
//!
//! Needs `../shared` (not in a fresh clone): run by `.ci/run` after the
//! README's test command, as `OFFLOAD_GUIX_PEER=../shared/peers/guix-daemon
//! cargo nextest run --profile peers`. The default profiles leave this
//! binary out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use offload_tests::agents::lan_agent;
use offload_tests::bin;
use offload_tests::guix_host::GuixHost;
use offload_tests::lan::Lan;

/// The peer, built once into `target/guix-peer`.
fn peer() -> PathBuf {
    let dir = std::env::var_os("OFFLOAD_GUIX_PEER")
        .map(PathBuf::from)
        .expect(
            "OFFLOAD_GUIX_PEER must name ../shared/peers/guix-daemon (this test runs from .ci/run)",
        );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guix-peer");
    let status = std::process::Command::new(dir.join("build"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run the peer's build script");
    assert!(status.success(), "building the guix-daemon peer failed");
    out
}

const CLIENT: &str = r#"
(use-modules (guix store) (guix derivations) (ice-9 format))
(define (sh store name script inputs outputs)
  (derivation store name "/bin/sh" (list "-c" script)
              #:inputs (map derivation-input inputs)
              #:outputs outputs))
(with-store s
  (set-build-options s #:offload? #t #:max-build-jobs 0 #:print-build-trace #t)
  (let* ((base (sh s "e2e-base" "echo base > $out" '() '("out")))
         (base-out (derivation->output-path base))
         (two (sh s "e2e-two"
                  (string-append "echo lib > $lib; echo out > $out; echo " base-out " >> $out")
                  (list base) '("out" "lib")))
         (a (sh s "e2e-a" (string-append "/bin/cat " base-out " > $out; echo a >> $out")
                (list base) '("out")))
         (b (sh s "e2e-b" (string-append "/bin/sleep 1; /bin/cat " base-out " > $out; echo b >> $out")
                (list base) '("out")))
         (top (sh s "e2e-top"
                  (string-append "/bin/cat " (derivation->output-path a) " "
                                 (derivation->output-path b) " "
                                 (derivation->output-path two "lib") " > $out")
                  (list a b two) '("out")))
         (all (list base two a b top)))
    (build-things s (map derivation-file-name all))
    (for-each (lambda (d)
                (for-each (lambda (o)
                            (format #t "~a ~a ~a~%" (derivation-file-name d) (car o)
                                    (derivation-output-path (cdr o))))
                          (derivation-outputs d)))
              all)))
"#;

#[test]
fn the_real_guix_daemon_offloads_a_dag_through_our_hook_to_two_agents() {
    let peer = peer();
    let lan = Lan::new(3);
    let mut host = GuixHost::new(&lan, 0);
    // guix-daemon makes its own database.
    for entry in std::fs::read_dir(host.dir().join("var/db"))
        .unwrap()
        .flatten()
    {
        std::fs::remove_file(entry.path()).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let masters = work.path().join("masters-acl");
    offload_tests::authorize_key(&masters, &host.etc().join("signing-key.pub"));
    let mut agents = Vec::new();
    for (i, name) in ["peer-a", "peer-b"].into_iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, work.path());
        cmd.args(["--systems", "x86_64-linux", "--parallel-builds", "1"]);
        host.authorize(&[&keys.join("signing-key.pub")]);
        agents.push((name, lan.spawn(cmd)));
    }
    let serve = host.serve_command(&lan, 0);
    lan.spawn(serve);
    let real_guix = peer.join("bin/guix");
    host.set_env("OFFLOAD_REAL_GUIX", &real_guix.display().to_string());
    let socket = host.dir().join("daemon.sock");
    host.set_env("GUIX_DAEMON_SOCKET", &socket.display().to_string());
    // The daemon, detached, with only fds 0-2 open.
    let mut daemon = host.command(peer.join("bin/guix-daemon"));
    daemon
        .args(["--disable-chroot", "--no-substitutes"])
        .arg(format!("--listen={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.path().join("daemon.log")).unwrap())
        .stderr(std::fs::File::create(work.path().join("daemon.err")).unwrap());
    let daemon_pid = lan.spawn(daemon);
    assert!(
        offload_tests::agents::wait_for(Duration::from_secs(20), || socket.exists()),
        "guix-daemon did not listen"
    );
    // serve links to both agents before the client asks.
    let linked = offload_tests::agents::wait_linked(&host.socket(), 2);
    assert!(linked, "serve did not link to both agents");
    let script = work.path().join("client.scm");
    std::fs::write(&script, CLIENT).unwrap();
    let out = host
        .command("guile-3.0")
        .env("GUILE_LOAD_PATH", peer.join("src"))
        .args(["--no-auto-compile"])
        .arg(&script)
        .output()
        .expect("guile-3.0");
    let daemon_err = std::fs::read_to_string(work.path().join("daemon.err")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the client's build failed:\n{}\n{}\ndaemon:\n{daemon_err}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((w.next()?.into(), w.next()?.into(), w.next()?.into()))
        })
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    // Every output valid, under the right name, with the right contents.
    for (drv, name, path) in &lines {
        assert!(host.has(path), "{drv}: {name} {path} not valid");
        let base = offload_core::store_path::StorePath::parse(path).unwrap();
        let text = std::fs::read_to_string(host.dir().join("store").join(base.base())).unwrap();
        if drv.ends_with("-e2e-two.drv") {
            assert_eq!(
                name == "lib",
                path.ends_with("-e2e-two-lib"),
                "{name} {path}"
            );
            assert_eq!(text.starts_with("lib"), name == "lib", "{name}: {text:?}");
        }
    }
    // Built remotely, by both agents (the client allowed no local build).
    for (name, _) in &agents {
        let built = lines.iter().any(|(_, _, p)| {
            let db =
                offload_store::db::Db::open(&work.path().join(name).join("store/var/db/db.sqlite"))
                    .unwrap();
            db.is_valid(&offload_core::store_path::StorePath::parse(p).unwrap())
                .unwrap()
        });
        assert!(built, "{name} built nothing:\n{stderr}");
    }
    assert!(stderr.contains("@ build-remote"), "{stderr}");
    // The daemon's own verification.
    let verify = host
        .command(&real_guix)
        .args(["gc", "--verify=contents"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "guix gc --verify=contents: {text}");
    assert!(
        !text.contains("corrupt") && !text.contains("invalid"),
        "{text}"
    );
    lan.signal(daemon_pid, "KILL");
    let _ = bin("offload-master");
}

/// A daemon host with the real guix-daemon running (its own database),
/// trusting its own key; the daemon's socket.
fn daemon_host(lan: &Lan, i: usize, peer: &Path, work: &Path) -> (GuixHost, PathBuf) {
    let mut host = GuixHost::new(lan, i);
    for entry in std::fs::read_dir(host.dir().join("var/db"))
        .unwrap()
        .flatten()
    {
        std::fs::remove_file(entry.path()).unwrap();
    }
    host.authorize(&[&host.etc().join("signing-key.pub")]);
    host.set_env(
        "OFFLOAD_REAL_GUIX",
        &peer.join("bin/guix").display().to_string(),
    );
    let socket = host.dir().join("daemon.sock");
    host.set_env("GUIX_DAEMON_SOCKET", &socket.display().to_string());
    let mut daemon = host.command(peer.join("bin/guix-daemon"));
    daemon
        .args(["--disable-chroot", "--no-substitutes"])
        .arg(format!("--listen={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("daemon.err")).unwrap());
    lan.spawn(daemon);
    assert!(
        // (Its socket is in the host's network namespace: /proc/net/unix
        // here would not show it; a connection does.)
        offload_tests::agents::wait_for(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "guix-daemon did not listen"
    );
    (host, socket)
}

/// Derivations made here, as a signed export stream of their `.drv` files.
fn drv_stream(
    rt: &tokio::runtime::Runtime,
    recipes: Vec<offload_store::drv_maker::Recipe>,
    key: &offload_core::keys::SecretKey,
) -> (Vec<offload_store::drv_maker::Written>, Vec<u8>) {
    use offload_core::store_path::StoreDir;
    let scratch = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = offload_store::store::Store::open(
            &offload_store::spec::StoreSpec::Embedded(scratch.path().to_owned()),
            StoreDir::default(),
        )
        .await
        .unwrap();
        let mut maker = offload_store::drv_maker::Maker::new(StoreDir::default());
        let mut written = Vec::new();
        for r in recipes {
            let w = maker.make(r).unwrap();
            store
                .embedded()
                .unwrap()
                .local()
                .add_text(&w.path, &w.text, &w.references)
                .unwrap();
            written.push(w);
        }
        let paths: Vec<_> = written.iter().map(|w| w.path.clone()).collect();
        let mut store = store;
        let mut out = Vec::new();
        store.export(&paths, key, &mut out).await.unwrap();
        (written, out)
    })
}

/// `offload-master archive import --store STORE` of `stream` on the host.
fn import(host: &GuixHost, store: &str, stream: &[u8]) -> std::process::Output {
    host.command(bin("offload-master"))
        .args(["archive", "import", "--store", store, "--acl"])
        .arg(host.etc().join("acl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(stream)?;
            c.wait_with_output()
        })
        .unwrap()
}

fn recipe(name: &str, script: &str, outputs: &[&str]) -> offload_store::drv_maker::Recipe {
    offload_store::drv_maker::Recipe {
        name: name.into(),
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn our_worker_protocol_client_against_the_real_guix_daemon() {
    let peer = peer();
    let rt = offload_tests::agents::runtime();
    let lan = Lan::new(1);
    let work = tempfile::tempdir().unwrap();
    let (host, socket) = daemon_host(&lan, 0, &peer, work.path());
    let store = format!("guix-daemon:{}", socket.display());
    // Signed .drv files imported through the daemon (it checks them with
    // the real `guix authenticate`); each registered item printed.
    let (written, stream) = drv_stream(
        &rt,
        vec![
            recipe("peer-plain", "echo plain > $out", &["out"]),
            // Sorted names (lib, out) and sorted paths need not agree.
            recipe(
                "peer-two",
                "echo lib > $lib; echo out > $out",
                &["out", "lib"],
            ),
        ],
        &host.key,
    );
    let out = import(&host, &store, &stream);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for w in &written {
        assert!(printed.contains(&w.path.to_string()), "{printed}");
        assert!(host.has(&w.path.to_string()));
    }
    // Built through the daemon: each output printed under its own name.
    let two = &written[1];
    let built = host
        .command(bin("offload-agent"))
        .args(["build", "--store", &store])
        .arg(two.path.to_string())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let text = String::from_utf8_lossy(&built.stdout);
    for (name, path) in &two.outputs {
        assert!(
            text.lines().any(|l| l == format!("{name} {path}")),
            "{name} {path} not in {text}"
        );
    }
    // A stream whose second item is signed by a stranger: the first is
    // kept and printed, the error names the second and what was kept.
    let (first, good) = drv_stream(
        &rt,
        vec![recipe("peer-kept", "echo kept > $out", &["out"])],
        &host.key,
    );
    let stranger = offload_core::keys::SecretKey::from_random(&[42; 32]);
    let (second, bad) = drv_stream(
        &rt,
        vec![recipe("peer-refused", "echo no > $out", &["out"])],
        &stranger,
    );
    let mut mixed = good[..good.len() - 8].to_vec();
    mixed.extend_from_slice(&bad);
    let out = import(&host, &store, &mixed);
    let (kept, refused) = (first[0].path.to_string(), second[0].path.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&kept));
    assert!(
        err.contains(&refused) && err.contains(&format!("kept: {kept}")),
        "{err}"
    );
    assert!(host.has(&kept) && !host.has(&refused));
}

#[test]
fn a_guix_machine_without_an_agent_is_used_through_its_daemon_over_ssh() {
    offload_tests::require_program("socat", "socat");
    let peer = peer();
    let rt = offload_tests::agents::runtime();
    let lan = Lan::new(2);
    let work = tempfile::tempdir().unwrap();
    // Host 0: the daemon host our hook serves (the harness). Host 1: the
    // real guix-daemon, sshd and socat, no agent; it trusts our key, as a
    // build machine of Guix's own offload must.
    let mut master = GuixHost::new(&lan, 0);
    let (far, far_socket) = daemon_host(&lan, 1, &peer, work.path());
    far.authorize(&[&master.etc().join("signing-key.pub")]);
    let sshd =
        offload_tests::sshd::Sshd::start_via(&lan, 1, &work.path().join("sshd"), &|script| {
            let mut cmd = far.command("/bin/sh");
            cmd.args(["-c", script]);
            cmd
        });
    master.set_env(
        "OFFLOAD_REMOTE_GUIX_DAEMON",
        &format!("socat - UNIX-CONNECT:{}", far_socket.display()),
    );
    master.set_env("OFFLOAD_DISCOVER_MS", "200");
    std::fs::write(
        master.etc().join("machines.scm"),
        format!(
            r#"(list (build-machine (name "{}") (port {}) (systems (list "x86_64-linux")) (user "root") (private-key "{}") (host-key "{}")))"#,
            lan.hosts()[1].ip,
            offload_tests::sshd::PORT,
            sshd.client_key.display(),
            sshd.host_key.trim()
        ),
    )
    .unwrap();
    let drvs = offload_tests::agents::Drvs::new();
    let drv = drvs.sh(
        "bare-guix",
        "echo built by a bare guix-daemon; echo ok > $out",
    );
    let closure = drvs.closure(&[&drv]);
    rt.block_on(async {
        let stream = drvs.signed_export(&closure, &master.key).await;
        master.seed(&stream).await;
    });
    // The daemon has no local slot: the hook must find a machine.
    let mut hook = master.spawn_hook(["x86_64-linux", "0", "1", "0"]);
    let line = offload_tests::guix_host::request_line(false, "x86_64-linux", &drv, &[]);
    assert_eq!(
        hook.ask_until_accepted(&line, Duration::from_secs(60)),
        "accept",
        "{:?}",
        hook.chatter
    );
    let (inputs, outputs) = rt.block_on(master.accept_lines(&drv));
    hook.send_paths(&inputs, &outputs);
    let end = hook.finish();
    assert_eq!(end.code(), Some(0), "{end:#?}");
    let out = master.outputs_of(&drv)["out"].clone();
    assert!(master.has(&out), "not registered here");
    assert!(far.has(&out), "not built by the far daemon");
    let chatter = end.chatter.join("\n");
    assert!(
        chatter.contains("over SSH (the machine's daemon)"),
        "{chatter}"
    );
    assert!(String::from_utf8_lossy(&end.log).contains("bare guix-daemon"));
}
