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

mod embedded_kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use offload_core::export::Limits;
use offload_core::nixbase32;
use offload_core::store_path::StoreDir;
use offload_store::daemon::BuildMode;
use offload_store::embedded::EmbeddedStore;
use offload_store::embedded::build::{
    self, BuildEvent, BuildOptions, BuildResult, BuildStatus, Exit,
};
use offload_store::local::Signatures;
use offload_tests::nixd::IsolatedNix;
use offload_tests::{nix_store_url, run_ok};
use sha2::{Digest, Sha256};

use embedded_kit::*;

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
