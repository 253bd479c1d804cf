//! The embedded store's derivation builder against the real Nix 2.8
//! (Debian's `nix-bin`): the same `.drv` files, made by `nix-instantiate`,
//! are built by a `nix-daemon` (or a Nix chroot store) and by
//! `offload_store::embedded::build::build`, and must give the same output
//! paths, NAR hashes and sizes, references and derivers.
//!
//! Two set-ups, both sandboxed (every build runs in namespaces here):
//! * **namespace**: the embedded store's logical directory is the isolated
//!   Nix store's, its real directory another one, so the sandbox shows
//!   the store at the logical path; also with logical `/gnu/store`, which
//!   must never appear on the host;
//! * **direct**: logical = real directory (the name of the set-up where
//!   builders used to run directly, without sandbox).
//!
//! The sandbox tests give builders hostile scripts (writing into inputs
//! and the store, reading a secret at a host path, reaching a loopback
//! listener of the host, leaving their process group) and then re-hash
//! every item of the store against its registration.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use offload_core::export::Limits;
use offload_core::nixbase32;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::daemon::{self, BuildMode, Connection, DaemonClient, Dialect, Options};
use offload_store::embedded::EmbeddedStore;
use offload_store::embedded::build::{
    self, BuildEvent, BuildOptions, BuildResult, BuildStatus, Exit,
};
use offload_store::local::Signatures;
use offload_tests::nixd::IsolatedNix;
use offload_tests::{nix_store_url, run_ok};
use sha2::{Digest, Sha256};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn path(p: &str) -> StorePath {
    StorePath::parse(p).unwrap_or_else(|e| panic!("store path {p:?}: {e}"))
}

/// A `/bin/sh -c SCRIPT` derivation with extra attributes.
fn sh(name: &str, script: &str, extra: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [\"-c\" {script:?}]; {extra} }}"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Build options for the tests: one core, as the Nix daemon is told.
fn opts() -> BuildOptions {
    BuildOptions {
        cores: 1,
        max_jobs: 2,
        ..BuildOptions::default()
    }
}

/// Import the closure of `drv` from a Nix store (`store_args`: how to
/// name it to `nix-store`) into `store`.
fn import_closure(nix: &IsolatedNix, store_args: &[&str], store: &EmbeddedStore, drv: &str) {
    let closure = nix.run("nix-store", &[store_args, &["-qR", drv]].concat());
    let mut export = nix.command("nix-store");
    export
        .args(store_args)
        .arg("--export")
        .args(closure.lines());
    let stream = run_ok(&mut export, b"");
    store
        .local()
        .import(
            &stream[..],
            Signatures::Ignore,
            Limits::default(),
            &mut |_| {},
        )
        .expect("import the .drv closure into the embedded store");
}

/// Run `build` and collect its events.
fn build_all(
    store: &EmbeddedStore,
    drvs: &[&str],
    opts: &BuildOptions,
) -> (Vec<BuildResult>, Vec<BuildEvent>) {
    let drvs: Vec<StorePath> = drvs.iter().map(|d| path(d)).collect();
    let mut events = Vec::new();
    let results = rt()
        .block_on(build::build(store, &drvs, opts, &mut |e| events.push(e)))
        .expect("build");
    (results, events)
}

/// The log lines of `drv` among `events`.
fn log_lines(events: &[BuildEvent], drv: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Log { drv: d, line } if d.to_string() == drv => {
                Some(String::from_utf8_lossy(line).into_owned())
            }
            _ => None,
        })
        .collect()
}

async fn connect(nix: &IsolatedNix) -> DaemonClient<Connection> {
    let conn = daemon::connect_unix(&nix.socket()).await.expect("connect");
    let mut client = DaemonClient::handshake(conn, Some(Dialect::Nix))
        .await
        .expect("handshake");
    client
        .set_options(&Options {
            build_cores: 1,
            ..Options::default()
        })
        .await
        .expect("set-options");
    client
}

/// An embedded store whose logical directory is `nix`'s store directory
/// (so its builders run in a namespace), with `drvs` imported.
fn namespace_store(nix: &IsolatedNix, drvs: &[&str]) -> EmbeddedStore {
    let dir = StoreDir::new(nix.store_dir().to_str().expect("UTF-8 path")).expect("store dir");
    let store = EmbeddedStore::open(&nix.root().join("embedded"), dir).expect("open");
    for drv in drvs {
        import_closure(nix, &[], &store, drv);
    }
    store
}

/// An embedded store under `nix`'s directory whose logical directory is
/// its real one (builders run directly), and a `nix-instantiate` for it.
struct Direct<'a> {
    nix: &'a IsolatedNix,
    store: EmbeddedStore,
}

impl<'a> Direct<'a> {
    fn new(nix: &'a IsolatedNix) -> Self {
        let root = nix.root().join("direct");
        let real = root.join("store");
        std::fs::create_dir_all(&real).expect("mkdir");
        let dir = StoreDir::new(real.to_str().expect("UTF-8 path")).expect("store dir");
        let store = EmbeddedStore::open(&root, dir).expect("open");
        Self { nix, store }
    }

    /// Nix confined to a second state directory, with this store's
    /// directory as its store.
    fn nix(&self, program: &str) -> std::process::Command {
        let mut cmd = self.nix.command(program);
        cmd.env("NIX_STORE_DIR", self.store.local().real_dir())
            .env("NIX_STATE_DIR", self.nix.root().join("direct-nix"));
        cmd
    }

    /// Instantiate `expr` and import its `.drv` closure.
    fn instantiate(&mut self, expr: &str) -> String {
        let out = run_ok(self.nix("nix-instantiate").args(["--expr", expr]), b"");
        let drv = String::from_utf8_lossy(&out).trim().to_owned();
        let closure = run_ok(self.nix("nix-store").args(["-qR", &drv]), b"");
        let closure = String::from_utf8_lossy(&closure).into_owned();
        let stream = run_ok(
            self.nix("nix-store").arg("--export").args(closure.lines()),
            b"",
        );
        self.store
            .local()
            .import(
                &stream[..],
                Signatures::Ignore,
                Limits::default(),
                &mut |_| {},
            )
            .expect("import");
        drv
    }
}

/// Our registration of every output of `result` equals the daemon's.
async fn assert_same_as_daemon(
    client: &mut DaemonClient<Connection>,
    store: &EmbeddedStore,
    result: &BuildResult,
) {
    assert_eq!(result.status, BuildStatus::Built, "{result:?}");
    assert!(!result.outputs.is_empty());
    for (name, out) in &result.outputs {
        let theirs = client
            .query_path_info(out)
            .await
            .expect("path info")
            .unwrap_or_else(|| panic!("Nix did not build {out}"));
        let ours = store
            .local()
            .db()
            .path_info(out)
            .expect("path info")
            .unwrap_or_else(|| panic!("{out} is not registered"));
        let real = store.local().real_path(out);
        assert_eq!(
            (ours.nar_hash, ours.nar_size),
            (theirs.nar_hash, theirs.nar_size),
            "NAR of output {name} {out}; ours: {}",
            describe(&real)
        );
        assert_eq!(ours.references, theirs.references, "references of {out}");
        assert_eq!(ours.deriver, Some(result.drv.clone()), "deriver of {out}");
        assert_eq!(theirs.deriver, Some(result.drv.clone()));
    }
}

/// A file's contents or a directory's listing, for failure messages.
fn describe(p: &Path) -> String {
    if p.is_dir() {
        format!("directory {:?}", std::fs::read_dir(p).map(|d| d.count()))
    } else {
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
    }
}

#[test]
fn outputs_match_the_nix_daemon() {
    let nix = IsolatedNix::new();
    let fixed_flat = hex(&Sha256::digest(b"fixed\n"));
    let fixed_tree = {
        let tree = nix.root().join("fixed-tree");
        std::fs::create_dir(&tree).expect("mkdir");
        std::fs::write(tree.join("f"), b"r\n").expect("write");
        let nar = offload_files::dump::dump_path(&tree, Vec::new()).expect("dump");
        hex(&Sha256::digest(&nar))
    };
    let step_a = sh("step-a", "echo a-content > $out", "");
    let exprs = [
        // The whole environment, build directory masked.
        sh(
            "env-dump",
            "/usr/bin/env | /usr/bin/sed \"s|$NIX_BUILD_TOP|BUILD|g\" | /usr/bin/sort > $out; \
             umask >> $out; /usr/bin/cat $textPath >> $out; [ \"$PWD\" = \"$(pwd)\" ] && echo cwd-ok >> $out",
            "passAsFile = [\"text\"]; text = \"passed as a file\\n\"; extra = \"x y\";",
        ),
        sh(
            "multi",
            "/usr/bin/mkdir $out $dev; echo lib > $out/lib; echo \"see $out\" > $dev/ref",
            "outputs = [\"out\" \"dev\"];",
        ),
        format!(
            "let a = {step_a}; in {}",
            sh(
                "step-b",
                "read x < ${a}; echo \"b got $x from ${a}\" > $out",
                ""
            )
        ),
        sh(
            "self-ref",
            "/usr/bin/mkdir -p $out/bin; echo $out > $out/self; /usr/bin/ln -s $out/self $out/link; \
             printf '#!/bin/sh\\necho hi\\n' > $out/bin/x; /usr/bin/chmod 755 $out/bin/x",
            "allowedReferences = [\"out\"]; allowedRequisites = [\"out\"];",
        ),
        sh(
            "fixed-flat",
            "echo fixed > $out",
            &format!(
                "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{fixed_flat}\";"
            ),
        ),
        sh(
            "fixed-tree",
            "/usr/bin/mkdir $out; echo r > $out/f",
            &format!(
                "outputHashAlgo = \"sha256\"; outputHashMode = \"recursive\"; outputHash = \"{fixed_tree}\";"
            ),
        ),
    ];
    let drvs: Vec<String> = exprs.iter().map(|e| nix.instantiate(e)).collect();
    let drv_refs: Vec<&str> = drvs.iter().map(String::as_str).collect();
    let step_a_drv = nix.instantiate(&step_a);

    let store = namespace_store(&nix, &drv_refs);
    let (results, events) = build_all(&store, &drv_refs, &opts());
    for r in &results {
        assert_eq!(r.status, BuildStatus::Built, "{r:?}\nevents: {events:?}");
    }
    // step-a was built first, as a dependency of step-b.
    let position = |want: &BuildEvent| events.iter().position(|e| e == want);
    let a_built = events
        .iter()
        .position(|e| matches!(e, BuildEvent::Built { drv, .. } if drv.to_string() == step_a_drv))
        .expect("step-a built");
    let b_started = position(&BuildEvent::Started {
        drv: path(&drvs[2]),
    })
    .expect("step-b started");
    assert!(a_built < b_started, "{events:?}");
    // Build logs are kept as Nix keeps them (uncompressed here).
    for drv in &drvs {
        let base = path(drv).base().to_owned();
        let log = store
            .root()
            .join("var/log/drvs")
            .join(&base[..2])
            .join(&base[2..]);
        assert!(log.is_file(), "no log {}", log.display());
    }
    // Build directories are gone.
    let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");

    let _daemon = nix.start_daemon();
    rt().block_on(async {
        let mut client = connect(&nix).await;
        client
            .build_paths(&drv_refs, BuildMode::Normal)
            .await
            .expect("nix-daemon builds the same derivations");
        for r in &results {
            assert_same_as_daemon(&mut client, &store, r).await;
        }
        let a_out = results[2].outputs["out"].clone();
        let info = store.local().db().path_info(&results[2].outputs["out"]);
        let info = info.expect("info").expect("step-b valid");
        assert_eq!(info.references.len(), 1);
        assert_ne!(info.references[0], a_out);
        let self_ref = &results[3].outputs["out"];
        let info = store.local().db().path_info(self_ref).expect("info");
        assert_eq!(info.expect("valid").references, vec![self_ref.clone()]);
        let dev = &results[1].outputs["dev"];
        let info = store.local().db().path_info(dev).expect("info");
        assert_eq!(
            info.expect("valid").references,
            vec![results[1].outputs["out"].clone()]
        );
    });
    let env_dump = std::fs::read_to_string(store.local().real_path(&results[0].outputs["out"]))
        .expect("read the environment dump");
    for line in [
        "PATH=/path-not-set",
        "HOME=/homeless-shelter",
        "NIX_BUILD_CORES=1",
        "NIX_LOG_FD=2",
        "TERM=xterm-256color",
        "TMPDIR=BUILD",
        "extra=x y",
        "0022",
        "passed as a file",
        "cwd-ok",
    ] {
        assert!(
            env_dump.lines().any(|l| l == line),
            "{line:?} in\n{env_dump}"
        );
    }
    assert!(!env_dump.contains("\ntext="), "{env_dump}");

    // Everything is valid now: nothing runs again.
    let (again, events) = build_all(&store, &drv_refs, &opts());
    assert!(
        again.iter().all(|r| r.status == BuildStatus::AlreadyValid),
        "{again:?}"
    );
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn failures_are_reported_like_nix_and_leave_nothing() {
    let nix = IsolatedNix::new();
    let failing = sh(
        "failing",
        "echo one; echo two >&2; echo partial > $out; exit 3",
        "",
    );
    let failing_drv = nix.instantiate(&failing);
    let dependent_drv = nix.instantiate(&format!(
        "let f = {failing}; in {}",
        sh("dependent", "cat ${f} > $out", "")
    ));
    let wrong_hash_drv = nix.instantiate(&sh(
        "wrong-hash",
        "echo not-what-was-promised > $out",
        &format!(
            "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{}\";",
            hex(&Sha256::digest(b"promised\n"))
        ),
    ));
    let quiet_drv = nix.instantiate(&sh("quiet", "echo start; /usr/bin/sleep 30", ""));
    let structured_drv = nix.instantiate(&sh("structured", "true", "__structuredAttrs = true;"));
    let refused_drv = nix.instantiate(&sh(
        "refs-refused",
        "echo $out > $out",
        "allowedReferences = [];",
    ));
    let cycle_drv = nix.instantiate(&sh(
        "cycle",
        "/usr/bin/mkdir $out $dev; echo $dev > $out/d; echo $out > $dev/o",
        "outputs = [\"out\" \"dev\"];",
    ));
    let all = [
        failing_drv.as_str(),
        dependent_drv.as_str(),
        wrong_hash_drv.as_str(),
        quiet_drv.as_str(),
        cycle_drv.as_str(),
        refused_drv.as_str(),
        structured_drv.as_str(),
    ];
    let store = namespace_store(&nix, &all);

    let first = [
        failing_drv.as_str(),
        dependent_drv.as_str(),
        wrong_hash_drv.as_str(),
        cycle_drv.as_str(),
        refused_drv.as_str(),
    ];
    let (mut results, mut events) = build_all(&store, &first, &opts());
    // Only the silent one runs with a silence limit (the others are
    // silent too while they start).
    let (quiet_results, quiet_events) = build_all(
        &store,
        &[&quiet_drv],
        &BuildOptions {
            max_silent_time: Some(Duration::from_secs(1)),
            ..opts()
        },
    );
    results.insert(3, quiet_results[0].clone());
    events.extend(quiet_events);
    let [failing, dependent, wrong_hash, quiet, cycle, refused] = &results[..] else {
        panic!("{results:?}");
    };
    assert_eq!(failing.status, BuildStatus::Failed(Exit::Code(3)));
    let failing_message = format!("builder for '{failing_drv}' failed with exit code 3");
    assert_eq!(failing.message.as_deref(), Some(failing_message.as_str()));
    assert_eq!(log_lines(&events, &failing_drv), ["one", "two"]);
    assert!(events.contains(&BuildEvent::Failed {
        drv: path(&failing_drv),
        message: failing_message.clone(),
    }));
    assert_eq!(dependent.status, BuildStatus::DependencyFailed);
    assert_eq!(
        dependent.message.as_deref(),
        Some(format!("1 dependencies of derivation '{dependent_drv}' failed to build").as_str())
    );
    assert_eq!(wrong_hash.status, BuildStatus::OutputRejected);
    let mismatch = wrong_hash.message.clone().unwrap_or_default();
    assert!(
        mismatch.starts_with(&format!(
            "hash mismatch in fixed-output derivation '{wrong_hash_drv}':\n  specified: sha256-"
        )),
        "{mismatch}"
    );
    assert_eq!(quiet.status, BuildStatus::TimedOut);
    let quiet_message =
        format!("building of '{quiet_drv}!*' from .drv file timed out after 1 seconds of silence");
    assert_eq!(quiet.message.as_deref(), Some(quiet_message.as_str()));
    assert_eq!(log_lines(&events, &quiet_drv), ["start"]);
    assert_eq!(refused.status, BuildStatus::OutputRejected);
    let refused_out = &refused.outputs["out"];
    assert_eq!(
        refused.message.as_deref(),
        Some(
            format!("output '{refused_out}' is not allowed to refer to the following paths:\n  {refused_out}")
                .as_str()
        )
    );
    assert_eq!(cycle.status, BuildStatus::OutputRejected);
    let cycle_message = cycle.message.clone().unwrap_or_default();
    assert!(
        cycle_message.starts_with(&format!(
            "cycle detected in build of '{cycle_drv}' in the references of output '"
        )),
        "{cycle_message}"
    );

    // Nothing registered, nothing left in the store or in tmp.
    for r in &results {
        for out in r.outputs.values() {
            assert!(!store.local().db().is_valid(out).expect("valid?"), "{out}");
            assert!(!store.local().real_path(out).exists(), "{out} left on disk");
        }
    }
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
    let base = path(&failing_drv).base().to_owned();
    let log = store
        .root()
        .join("var/log/drvs")
        .join(&base[..2])
        .join(&base[2..]);
    assert_eq!(std::fs::read(log).expect("log"), b"one\ntwo\n");

    // Structured attributes are refused before anything runs.
    let err = rt()
        .block_on(build::build(
            &store,
            &[path(&structured_drv)],
            &opts(),
            &mut |_| {},
        ))
        .expect_err("structured attributes are refused");
    assert!(err.to_string().contains("structured attributes"), "{err}");

    // keep_failed keeps the build directory, readable.
    let keep = BuildOptions {
        keep_failed: true,
        ..opts()
    };
    let (kept, _) = build_all(&store, &[&failing_drv], &keep);
    let dir = kept[0]
        .kept_build_dir
        .clone()
        .expect("kept build directory");
    assert!(
        dir.starts_with(store.root().join("tmp")),
        "{}",
        dir.display()
    );
    assert!(
        dir.file_name().is_some_and(
            |n| n.to_string_lossy() == format!("nix-build-{}-0", path(&failing_drv).name())
        ),
        "{}",
        dir.display()
    );
    let mode = std::fs::metadata(&dir).expect("kept").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);

    // Nix says the same.
    let _daemon = nix.start_daemon();
    rt().block_on(async {
        for (drv, ours) in [
            (&failing_drv, failing_message.as_str()),
            (&wrong_hash_drv, mismatch.as_str()),
            (
                &cycle_drv,
                &format!("cycle detected in build of '{cycle_drv}'"),
            ),
        ] {
            let mut client = connect(&nix).await;
            let err = client
                .build_paths(&[drv], BuildMode::Normal)
                .await
                .expect_err("Nix fails too");
            let theirs = err.to_string();
            let first_two: Vec<&str> = ours.lines().take(2).collect();
            for line in first_two {
                assert!(
                    theirs.contains(line.trim_end_matches(';')),
                    "{line:?} in {theirs:?}"
                );
            }
        }
    });
    let out = nix
        .command("nix-store")
        .args(["--realise", "--option", "max-silent-time", "1", &quiet_drv])
        .output()
        .expect("nix-store --realise");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: {quiet_message}")),
        "{stderr}"
    );
}

#[test]
fn direct_builds_run_in_parallel_and_time_limits_kill_the_group() {
    let nix = IsolatedNix::new();
    let mut direct = Direct::new(&nix);
    let stamp = "/usr/bin/date +%s%N > $out; /usr/bin/sleep 1; /usr/bin/date +%s%N >> $out";
    let parallel: Vec<String> = ["p1", "p2"]
        .iter()
        .map(|n| direct.instantiate(&sh(n, stamp, "")))
        .collect();
    let serial: Vec<String> = ["s1", "s2"]
        .iter()
        .map(|n| direct.instantiate(&sh(n, stamp, "")))
        .collect();
    // The background writer must die with the builder.
    let quiet = direct.instantiate(&sh(
        "quiet",
        "echo start; (/usr/bin/sleep 2.0417; echo late > $out) & /usr/bin/sleep 30",
        "",
    ));
    // Waits for a file that the test creates when it hears `ready`: the
    // build can only finish if its log is streamed while it runs.
    let streamed = direct.instantiate(&sh(
        "streamed",
        "echo ready; while [ ! -e go ]; do /usr/bin/sleep 0.05; done; echo got-go; echo ok > $out",
        "",
    ));
    let ticking = direct.instantiate(&sh(
        "ticking",
        "while :; do echo tick; /usr/bin/sleep 0.2; done",
        "",
    ));

    // Each builder writes when it started and ended; build a pair with
    // `max_jobs` and return both intervals.
    let intervals = |store: &EmbeddedStore, pair: &[String], max_jobs: usize| {
        let (results, _) = build_all(
            store,
            &[pair[0].as_str(), pair[1].as_str()],
            &BuildOptions { max_jobs, ..opts() },
        );
        let interval = |r: &BuildResult| -> (u128, u128) {
            assert_eq!(r.status, BuildStatus::Built, "{r:?}");
            let text = std::fs::read_to_string(store.local().real_path(&r.outputs["out"]))
                .expect("timestamps");
            let t: Vec<u128> = text
                .lines()
                .map(|l| l.parse().expect("nanoseconds"))
                .collect();
            (t[0], t[1])
        };
        (interval(&results[0]), interval(&results[1]))
    };
    let (a, b) = intervals(&direct.store, &parallel, 2);
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "max_jobs 2: {a:?} and {b:?} do not overlap"
    );
    let (a, b) = intervals(&direct.store, &serial, 1);
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "max_jobs 1: {a:?} and {b:?} overlap"
    );

    let go = direct
        .store
        .root()
        .join(format!("tmp/nix-build-{}-0/go", path(&streamed).name()));
    let mut events = Vec::new();
    let results = rt()
        .block_on(build::build(
            &direct.store,
            &[path(&streamed)],
            &BuildOptions {
                timeout: Some(Duration::from_secs(20)),
                ..opts()
            },
            &mut |e| {
                if matches!(&e, BuildEvent::Log { line, .. } if line == b"ready") {
                    std::fs::write(&go, b"").expect("create go");
                }
                events.push(e);
            },
        ))
        .expect("build");
    assert_eq!(results[0].status, BuildStatus::Built, "{results:?}");
    assert_eq!(log_lines(&events, &streamed), ["ready", "got-go"]);

    let (results, events) = build_all(
        &direct.store,
        &[&quiet, &ticking],
        &BuildOptions {
            max_silent_time: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_secs(2)),
            ..opts()
        },
    );
    assert_eq!(results[0].status, BuildStatus::TimedOut);
    assert_eq!(
        results[0].message.as_deref(),
        Some(
            format!("building of '{quiet}!*' from .drv file timed out after 1 seconds of silence")
                .as_str()
        )
    );
    assert_eq!(results[1].status, BuildStatus::TimedOut);
    assert_eq!(
        results[1].message.as_deref(),
        Some(
            format!("building of '{ticking}!*' from .drv file timed out after 2 seconds").as_str()
        )
    );
    let ticks = log_lines(&events, &ticking);
    assert!(
        ticks.len() >= 3 && ticks.iter().all(|t| t == "tick"),
        "{ticks:?}"
    );
    // No process of the killed builder is left to write its output late
    // (the build returned once they were gone): nothing to wait for.
    assert_eq!(
        offload_tests::processes_with("2.0417"),
        Vec::<String>::new()
    );
    let late = direct.store.local().real_path(&results[0].outputs["out"]);
    assert!(
        !late.exists(),
        "a process of the killed builder wrote {}",
        late.display()
    );
}

#[test]
fn gnu_store_builds_match_nix_and_create_nothing_under_gnu() {
    let gnu_existed = Path::new("/gnu").exists();
    let nix = IsolatedNix::new();
    let chroot = nix.root().join("gnu-chroot");
    let url = nix_store_url(&chroot, "/gnu/store");
    let store_args = ["--store", url.as_str()];
    let a = sh("step-a", "echo a-content > $out", "");
    let expr = format!(
        "let a = {a}; in {}",
        sh(
            "step-b",
            "read x < ${a}; /usr/bin/mkdir $out; echo \"b got $x from ${a}\" > $out/b; echo $out > $out/self",
            "outputs = [\"out\" \"doc\"];"
        )
    );
    let drv = nix.run(
        "nix-instantiate",
        &[&store_args[..], &["--expr", expr.as_str()]].concat(),
    );
    assert!(drv.starts_with("/gnu/store/"), "{drv}");

    let store =
        EmbeddedStore::open(&nix.root().join("embedded"), StoreDir::default()).expect("open");
    import_closure(&nix, &store_args, &store, &drv);
    let (results, events) = build_all(&store, &[&drv], &opts());
    let result = &results[0];
    // `doc` is never written: the build is refused.
    assert_eq!(result.status, BuildStatus::OutputRejected, "{events:?}");
    let message = result.message.clone().unwrap_or_default();
    assert!(
        message.contains("failed to produce output path for output 'doc'"),
        "{message}"
    );

    // A derivation that writes both outputs.
    let expr = expr.replace(
        "echo $out > $out/self",
        "echo $out > $out/self; echo d > $doc",
    );
    let drv = nix.run(
        "nix-instantiate",
        &[&store_args[..], &["--expr", expr.as_str()]].concat(),
    );
    import_closure(&nix, &store_args, &store, &drv);
    let (results, events) = build_all(&store, &[&drv], &opts());
    let result = &results[0];
    assert_eq!(result.status, BuildStatus::Built, "{result:?} {events:?}");

    let sandbox_paths = ["--option", "sandbox-paths", "/bin /lib /lib64 /usr"];
    let realised = nix.run(
        "nix-store",
        &[
            &store_args[..],
            &sandbox_paths,
            &["--realise", drv.as_str()],
        ]
        .concat(),
    );
    let realised: Vec<&str> = realised.lines().collect();
    let ours: Vec<String> = result.outputs.values().map(ToString::to_string).collect();
    assert_eq!(realised, ours);
    for out in result.outputs.values() {
        let printed = out.to_string();
        let q = |what: &str| {
            nix.run(
                "nix-store",
                &[&store_args[..], &["--query", what, printed.as_str()]].concat(),
            )
        };
        let info = store
            .local()
            .db()
            .path_info(out)
            .expect("info")
            .expect("registered");
        assert_eq!(
            format!("sha256:{}", nixbase32::encode(&info.nar_hash)),
            q("--hash")
        );
        let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
        let theirs = q("--references");
        let mut theirs: Vec<&str> = theirs.lines().collect();
        theirs.sort_unstable();
        assert_eq!(refs, theirs, "references of {out}");
        assert_eq!(q("--deriver"), drv);
        assert_eq!(info.deriver.map(|d| d.to_string()), Some(drv.clone()));
    }

    // Guix's environment (the default profile for /gnu/store) and build
    // directory.
    let env_expr = sh(
        "guix-env",
        "/usr/bin/env > $out; /usr/bin/pwd >> $out",
        "passAsFile = [\"text\"]; text = \"verbatim\";",
    );
    let env_drv = nix.run(
        "nix-instantiate",
        &[&store_args[..], &["--expr", env_expr.as_str()]].concat(),
    );
    import_closure(&nix, &store_args, &store, &env_drv);
    let (results, events) = build_all(&store, &[&env_drv], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    let dump = std::fs::read_to_string(store.local().real_path(&results[0].outputs["out"]))
        .expect("the environment dump");
    for line in [
        "NIX_BUILD_TOP=/tmp/guix-build-guix-env.drv-0",
        "TMPDIR=/tmp/guix-build-guix-env.drv-0",
        "NIX_STORE=/gnu/store",
        "passAsFile=text",
        "text=verbatim",
        "/tmp/guix-build-guix-env.drv-0",
    ] {
        assert!(dump.lines().any(|l| l == line), "{line:?} in\n{dump}");
    }
    for var in ["NIX_LOG_FD=", "TERM=", "textPath=", "NIX_OUTPUT_CHECKED="] {
        assert!(
            !dump.lines().any(|l| l.starts_with(var)),
            "{var} in\n{dump}"
        );
    }
    if !gnu_existed {
        assert!(!Path::new("/gnu").exists(), "/gnu was created on the host");
    }
}

#[test]
fn inconsistent_derivations_are_refused() {
    let nix = IsolatedNix::new();
    let good = nix.instantiate(&sh("honest", "echo hi > $out", ""));
    let out = nix.run("nix-store", &["--query", "--outputs", &good]);
    // Another output path (same length, one character changed), written
    // into the .drv inside Nix's export stream (the stream carries no hash).
    let forged_out = {
        let base = out.rsplit('/').next().expect("basename");
        let c = if base.starts_with('0') { '1' } else { '0' };
        format!("{}/{c}{}", nix.store_dir().display(), &base[1..])
    };
    let stream = run_ok(nix.command("nix-store").args(["--export", &good]), b"");
    let forged = String::from_utf8_lossy(&stream)
        .replace(&out, &forged_out)
        .into_bytes();
    assert_eq!(forged.len(), stream.len());
    let dir = StoreDir::new(nix.store_dir().to_str().expect("UTF-8 path")).expect("store dir");
    let store = EmbeddedStore::open(&nix.root().join("embedded"), dir).expect("open");
    store
        .local()
        .import(
            &forged[..],
            Signatures::Ignore,
            Limits::default(),
            &mut |_| {},
        )
        .expect("import");
    let err = rt()
        .block_on(build::build(&store, &[path(&good)], &opts(), &mut |_| {}))
        .expect_err("a forged output path is refused");
    assert_eq!(
        err.to_string(),
        format!("derivation '{good}' has incorrect output '{forged_out}', should be '{out}'")
    );
    // Nothing ran.
    assert!(!store.local().real_path(&path(&forged_out)).exists());
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

// --- The sandbox -----------------------------------------------------------

/// Every item in the store's directory (but dot files) is registered and its files still
/// hash to the registered NAR hash and size; the names of the items.
fn assert_store_intact(store: &EmbeddedStore) -> Vec<String> {
    let local = store.local();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(local.real_dir()).expect("read the store") {
        let name = entry.expect("entry").file_name();
        let name = name.to_str().expect("UTF-8 name").to_owned();
        if name.starts_with('.') {
            // Nix's own `.links` (the direct store shares its directory).
            continue;
        }
        let item = StorePath::from_base(local.store_dir().clone(), &name)
            .unwrap_or_else(|e| panic!("{name} in the store: {e}"));
        let info = local
            .db()
            .path_info(&item)
            .expect("path info")
            .unwrap_or_else(|| panic!("{item} is in the store but not registered"));
        let nar = offload_files::dump::dump_path(&local.real_path(&item), Vec::new())
            .expect("dump an item");
        assert_eq!(
            (<[u8; 32]>::from(Sha256::digest(&nar)), nar.len() as u64),
            (info.nar_hash, info.nar_size),
            "{item} was modified"
        );
        names.push(name);
    }
    names.sort();
    names
}

/// A derivation depending on a directory and a file that tries to damage
/// them and the store, read `secret`, reach `port` on the host's loopback
/// and regain privileges; it writes what it managed into `$out`.
fn attacker(secret: &Path, port: u16) -> String {
    let dir = sh(
        "victim-dir",
        "/usr/bin/mkdir $out; echo original > $out/file",
        "",
    );
    let file = sh("victim-file", "echo original > $out", "");
    let script = format!(
        "try() {{ if \"$@\" > /dev/null 2>&1; then echo \"ESCAPED: $*\"; else echo \"denied: $1\"; fi; }}; {{ \
         try /bin/sh -c 'echo x >> ${{f}}'; \
         try /bin/sh -c 'echo x > ${{d}}/file'; \
         try /usr/bin/touch ${{d}}/new; \
         try /usr/bin/chmod u+w ${{d}} ${{f}}; \
         try /usr/bin/rm -rf ${{d}}; \
         try /usr/bin/mv ${{f}} $NIX_STORE/moved; \
         try /usr/bin/mount -o remount,rw ${{d}}; \
         try /usr/bin/cat /etc/shadow; \
         try /usr/bin/cat {secret}; \
         try /usr/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'; \
         try /usr/bin/unshare --user --map-root-user /bin/sh -c :; \
         echo escaped > $NIX_STORE/00000000000000000000000000000000-evil; \
         /usr/bin/mkdir $NIX_STORE/11111111111111111111111111111111-evil-dir; \
         echo uid=$(/usr/bin/id -u); /usr/bin/hostname; /usr/bin/cat /etc/passwd; echo done; \
         }} > $out",
        secret = secret.display()
    );
    format!(
        "let d = {dir}; f = {file}; in {}",
        sh("attacker", &script, "")
    )
}

/// What the attacker wrote: nothing escaped, every attempt is listed.
fn check_attacker_output(out: &str, root: bool) {
    assert!(!out.contains("ESCAPED"), "{out}");
    assert!(!out.contains("SECRET-KEY-MATERIAL"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("denied: ")).count(),
        11,
        "{out}"
    );
    let uid = if root { "uid=30001" } else { "uid=0" };
    for line in [uid, "localhost", "done"] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }
    assert!(out.contains("nixbld:x:"), "{out}");
}

/// A loopback listener of the host, and whether anyone connected to it.
struct Listener(std::net::TcpListener);

impl Listener {
    fn new() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        l.set_nonblocking(true).expect("non-blocking");
        Self(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("address").port()
    }

    fn was_reached(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn builders_can_damage_nothing_read_no_secret_and_reach_no_network() {
    let nix = IsolatedNix::new();
    // World-readable, at a host path: invisible rather than unreadable.
    let secret = nix.root().join("signing-key.sec");
    std::fs::write(&secret, "SECRET-KEY-MATERIAL\n").expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let listener = Listener::new();
    let expr = attacker(&secret, listener.port());

    // The store at another real directory, and at its logical one.
    let drv = nix.instantiate(&expr);
    let store = namespace_store(&nix, &[&drv]);
    let mut direct = Direct::new(&nix);
    let direct_drv = direct.instantiate(&expr);
    for (store, drv) in [(&store, drv.as_str()), (&direct.store, &direct_drv)] {
        let before = assert_store_intact(store);
        let (results, events) = build_all(store, &[drv], &opts());
        let result = &results[0];
        assert_eq!(result.status, BuildStatus::Built, "{result:?} {events:?}");
        let out = std::fs::read_to_string(store.local().real_path(&result.outputs["out"]))
            .expect("the attacker's report");
        check_attacker_output(&out, offload_tests::running_as_root());
        // The victims were built as inputs; besides them only the outputs
        // appeared, and every item is intact.
        let after = assert_store_intact(store);
        let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        assert_eq!(new.len(), 3, "{new:?}");
        assert!(
            new.iter().all(|n| n.ends_with("-victim-dir")
                || n.ends_with("-victim-file")
                || n.ends_with("-attacker")),
            "{new:?}"
        );
        let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .collect();
        assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
    }
    assert!(
        !listener.was_reached(),
        "a builder reached the host's loopback"
    );
    assert!(std::fs::read_to_string(&secret).is_ok_and(|s| s == "SECRET-KEY-MATERIAL\n"));
}

#[test]
fn fixed_output_derivations_keep_the_network() {
    let nix = IsolatedNix::new();
    let listener = Listener::new();
    let connect = format!(
        "if /usr/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{}'; then echo connected; else echo isolated; fi > $out",
        listener.port()
    );
    let plain = nix.instantiate(&sh("plain", &connect, ""));
    let fixed = nix.instantiate(&sh(
        "fixed",
        &connect,
        &format!(
            "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{}\";",
            hex(&Sha256::digest(b"connected\n"))
        ),
    ));
    let store = namespace_store(&nix, &[&plain, &fixed]);
    let (results, events) = build_all(&store, &[&plain], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    let out = std::fs::read_to_string(store.local().real_path(&results[0].outputs["out"]))
        .expect("output");
    assert_eq!(out, "isolated\n");
    assert!(!listener.was_reached());

    let (results, events) = build_all(&store, &[&fixed], &opts());
    assert_eq!(
        results[0].status,
        BuildStatus::Built,
        "{results:?} {events:?}"
    );
    assert!(
        listener.was_reached(),
        "the fixed-output derivation had no network"
    );
    assert_store_intact(&store);
}

#[test]
fn processes_that_leave_the_process_group_die_with_the_build() {
    let nix = IsolatedNix::new();
    // Leaves its session and group, then writes into the (kept) build
    // directory after the builder failed.
    let late = nix.instantiate(&sh(
        "escapes-then-fails",
        "/usr/bin/setsid /bin/sh -c '/usr/bin/sleep 1.0419; echo alive > $NIX_BUILD_TOP/late' > /dev/null 2>&1 & exit 1",
        "",
    ));
    // Two children leave the session (process 1 leads its own already, so
    // `setsid` forks for it); killed at the timeout.
    let stuck = nix.instantiate(&sh(
        "escapes-and-hangs",
        "/usr/bin/setsid /usr/bin/sleep 29.4837 & exec /usr/bin/setsid --wait /usr/bin/sleep 29.4838",
        "",
    ));
    let store = namespace_store(&nix, &[&late, &stuck]);
    let (results, _) = build_all(
        &store,
        &[&late],
        &BuildOptions {
            keep_failed: true,
            ..opts()
        },
    );
    assert_eq!(results[0].status, BuildStatus::Failed(Exit::Code(1)));
    let kept = results[0].kept_build_dir.clone().expect("kept");
    let (results, _) = build_all(
        &store,
        &[&stuck],
        &BuildOptions {
            timeout: Some(Duration::from_secs(1)),
            ..opts()
        },
    );
    assert_eq!(results[0].status, BuildStatus::TimedOut, "{results:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !offload_tests::processes_with("29.483").is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        offload_tests::processes_with("29.483"),
        Vec::<String>::new()
    );
    // The escaped writer is gone with its namespace: it can never write.
    assert_eq!(
        offload_tests::processes_with("1.0419"),
        Vec::<String>::new()
    );
    assert!(
        !kept.join("late").exists(),
        "a process of the failed builder outlived it"
    );
    assert_store_intact(&store);
}

// --- Hardening: cleanup, outputs, terminal, fixed outputs, root ------------

/// The processes (their `stat` lines) of the PID namespace `ns` (as
/// `readlink /proc/PID/ns/pid` shows it) that are not dead yet (zombies
/// hold nothing).
fn live_processes_in(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(link) = std::fs::read_link(entry.path().join("ns/pid")) else {
            continue;
        };
        if link.to_string_lossy() != ns {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if !matches!(state, Some("Z" | "X") | None) {
            found.push(stat);
        }
    }
    found
}

/// The value of `KEY=…` among the log lines of `drv`.
fn logged(events: &[BuildEvent], drv: &str, key: &str) -> String {
    log_lines(events, drv)
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key}= in the log: {events:?}"))
}

#[test]
fn a_killed_build_s_namespace_is_gone_before_its_directories_are_touched() {
    let nix = IsolatedNix::new();
    // Slow to die: many processes that left the session, one of them with
    // a large address space to free.
    let drv = nix.instantiate(&sh(
        "slow-to-die",
        "echo ns=$(/usr/bin/readlink /proc/self/ns/pid); i=0; \
         while [ $i -lt 64 ]; do /usr/bin/setsid /usr/bin/sleep 31.4159 & i=$((i+1)); done; \
         /usr/bin/setsid /usr/bin/perl -e '$x = \"a\" x (1 << 28); print STDERR \"big\\n\"; sleep 60' & \
         exec /usr/bin/sleep 60",
        "",
    ));
    let store = namespace_store(&nix, &[&drv]);
    let (results, events) = build_all(
        &store,
        &[&drv],
        &BuildOptions {
            timeout: Some(Duration::from_secs(4)),
            ..opts()
        },
    );
    let live = live_processes_in(&logged(&events, &drv, "ns"));
    assert_eq!(results[0].status, BuildStatus::TimedOut, "{results:?}");
    assert!(
        log_lines(&events, &drv).iter().any(|l| l == "big"),
        "{events:?}"
    );
    assert_eq!(live, Vec::<String>::new(), "alive after the build returned");
    let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
}

/// Watches `path` from another thread until dropped: whether it ever
/// existed, and what `judge` said of it each time it did.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(bool, Vec<String>)>>,
}

impl Watch {
    fn new(path: std::path::PathBuf, judge: fn(&Path) -> Option<String>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut bad) = (false, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::symlink_metadata(&path).is_ok() {
                    seen = true;
                    if let Some(why) = judge(&path)
                        && !bad.contains(&why)
                    {
                        bad.push(why);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (seen, bad)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (bool, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("watcher")
    }
}

#[test]
fn outputs_reach_the_store_only_checked_and_canonical() {
    use std::os::unix::fs::MetadataExt;
    let nix = IsolatedNix::new();
    // Many files, so that checking takes a while; a world-writable
    // directory and a setuid file, as the builder left them.
    let make = "/usr/bin/mkdir $out; cd $out; i=0; while [ $i -lt 20000 ]; do : > f$i; i=$((i+1)); done; \
                echo $out > self; echo x > s; /usr/bin/chmod 4755 s; /usr/bin/mkdir w; /usr/bin/chmod 777 w";
    let rejected = nix.instantiate(&sh("rejected", make, "allowedReferences = [];"));
    let accepted = nix.instantiate(&sh("accepted", make, ""));
    let out_of = |drv: &str| nix.run("nix-store", &["--query", "--outputs", drv]);
    let store = namespace_store(&nix, &[&rejected, &accepted]);

    let real = store.local().real_path(&path(&out_of(&rejected)));
    let watch = Watch::new(real.clone(), |_| None);
    let (results, _) = build_all(&store, &[&rejected], &opts());
    let (seen, _) = watch.finish();
    assert_eq!(
        results[0].status,
        BuildStatus::OutputRejected,
        "{results:?}"
    );
    assert!(!seen, "the rejected output appeared in the store");
    assert!(!real.exists());

    let real = store.local().real_path(&path(&out_of(&accepted)));
    let watch = Watch::new(real, |p| {
        let top = std::fs::symlink_metadata(p).ok()?;
        let mode =
            |name: &str| std::fs::symlink_metadata(p.join(name)).map_or(0, |m| m.mode() & 0o7777);
        match (top.mode() & 0o7777, mode("s"), mode("w")) {
            (0o555, 0o555, 0o555) if top.mtime() == 1 => None,
            (top, s, w) => Some(format!("top {top:o}, s {s:o}, w {w:o}")),
        }
    });
    let (results, _) = build_all(&store, &[&accepted], &opts());
    let (seen, bad) = watch.finish();
    assert_eq!(results[0].status, BuildStatus::Built, "{results:?}");
    assert!(seen);
    assert_eq!(
        bad,
        Vec::<String>::new(),
        "seen in the store before canonical"
    );
    assert_store_intact(&store);
}

#[test]
fn builders_have_no_terminal_and_a_session_of_their_own() {
    let nix = IsolatedNix::new();
    let drv = nix.instantiate(&sh(
        "no-tty",
        "if [ -e /dev/tty ]; then echo tty=present; else echo tty=absent; fi; \
         read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo sid=$sid; echo pid=$pid; \
         echo ok > $out",
        "",
    ));
    let store = namespace_store(&nix, &[&drv]);
    let (results, events) = build_all(&store, &[&drv], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    assert_eq!(logged(&events, &drv, "tty"), "absent");
    // Its own session: led by itself, not ours (outside its namespace,
    // which would show as 0).
    assert_eq!(logged(&events, &drv, "sid"), logged(&events, &drv, "pid"));
}

/// A process of the host that receives file descriptors on the abstract
/// Unix socket `name`, then, told to, writes through them.
struct FdCatcher(std::process::Child);

impl FdCatcher {
    const SCRIPT: &str = "import os, socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.bind('\\0' + sys.argv[1]); s.listen(1)\n\
        print('listening', flush=True)\n\
        c, _ = s.accept()\n\
        _, fds, _, _ = socket.recv_fds(c, 16, 4)\n\
        c.send(b'k')\n\
        print('got', len(fds), flush=True)\n\
        sys.stdin.readline()\n\
        for fd in fds: os.pwrite(fd, b'EVIL!\\n', 0)\n\
        print('wrote', flush=True)\n";

    fn new(name: &str) -> Self {
        let child = std::process::Command::new("python3")
            .args(["-c", Self::SCRIPT, name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut this = Self(child);
        assert_eq!(this.line(), "listening");
        this
    }

    fn line(&mut self) -> String {
        use std::io::Read;
        let mut line = Vec::new();
        let out = self.0.stdout.as_mut().expect("stdout");
        let mut byte = [0u8];
        while out.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    fn write_through_them(&mut self) -> String {
        use std::io::Write;
        self.0
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("tell");
        self.line()
    }
}

impl Drop for FdCatcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fixed_outputs_are_out_of_reach_of_descriptors_their_builder_handed_out() {
    let nix = IsolatedNix::new();
    let name = format!("offload-test-fd-{}", std::process::id());
    let mut catcher = FdCatcher::new(&name);
    // The builder keeps its output open for writing and hands the
    // descriptor to the host process before it exits.
    let fixed = nix.instantiate(&sh(
        "hands-out",
        &format!(
            "/usr/bin/python3 -c 'import os, socket\n\
             fd = os.open(os.environ[\"out\"], os.O_RDWR | os.O_CREAT, 0o644)\n\
             os.write(fd, b\"fixed\\n\")\n\
             s = socket.socket(socket.AF_UNIX); s.connect(\"\\0{name}\")\n\
             socket.send_fds(s, [b\"x\"], [fd]); s.recv(1)'"
        ),
        &format!(
            "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{}\";",
            hex(&Sha256::digest(b"fixed\n"))
        ),
    ));
    let store = namespace_store(&nix, &[&fixed]);
    let (results, events) = build_all(&store, &[&fixed], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    assert_eq!(catcher.line(), "got 1");
    assert_eq!(catcher.write_through_them(), "wrote");
    let out = store.local().real_path(&results[0].outputs["out"]);
    assert_eq!(std::fs::read(&out).expect("output"), b"fixed\n");
    assert_store_intact(&store);
}

#[test]
fn root_refuses_to_build_without_a_sandbox() {
    // Root is what this is about; CI runs the suite as root. Elsewhere it
    // fails with the reason rather than passing without testing.
    assert!(
        offload_tests::running_as_root(),
        "this test needs root (it checks what root refuses to do); run the suite as root, as CI does"
    );
    let nix = IsolatedNix::new();
    let marker = nix.root().join("ran-as-root");
    let mut direct = Direct::new(&nix);
    let drv = direct.instantiate(&sh(
        "needs-a-sandbox",
        &format!("echo ran > {}; echo x > $out", marker.display()),
        "",
    ));
    let root = direct.store.root().to_owned();
    let store_dir = direct.store.local().store_dir().to_string();
    drop(direct);
    // Root without CAP_SYS_ADMIN: no namespace can be made.
    let out = std::process::Command::new(offload_tests::require_program("setpriv", "util-linux"))
        .args(["--inh-caps=-all", "--bounding-set=-sys_admin", "--"])
        .arg(offload_tests::bin("offload-agent"))
        .args(["build", "--store"])
        .arg(format!("embedded:{}", root.display()))
        .args(["--store-dir", &store_dir, &drv])
        .env("RUST_LOG", "warn")
        .output()
        .expect("offload-agent build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to run builders as root without a sandbox")
            && err.contains("cannot create the namespaces"),
        "{err}"
    );
    assert!(!marker.exists(), "the builder ran as root");
}
