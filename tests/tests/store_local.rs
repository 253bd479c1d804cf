//! Direct registration (`archive import --store local:…`, what the hook does
//! with outputs) into a real Nix 2.8 store while its daemon runs, and
//! `archive export --store nix-daemon:…` re-signing the daemon's exports.
//!
//! Items are built by Nix, exported through its daemon with our key,
//! deleted, and imported back by writing the store and its SQLite database
//! directly. Nix must then agree: `nix-store --verify --check-contents` is
//! clean and `--references`, `--deriver` and `--hash` match what Nix had
//! registered itself. Crash injection aborts the import at every step of
//! registering an item; each item is then either fully registered or not at
//! all, and importing again completes.

use std::path::Path;
use std::process::{Command, Output};

use offload_tests::nixd::IsolatedNix;
use offload_tests::{offload, run_ok, run_with_input};
use tempfile::TempDir;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Two built items, b referring to a, exported (closure, signed by our key)
/// and then deleted from the store.
struct Fixture {
    nix: IsolatedNix,
    keys: TempDir,
    stream: Vec<u8>,
    a: String,
    b: String,
    b_drv: String,
    /// What Nix registered: (path, references, deriver, hash).
    before: Vec<(String, String, String, String)>,
}

fn step_a() -> String {
    IsolatedNix::sh_derivation("step-a", "echo a-content > $out")
}

fn fixture() -> Fixture {
    let nix = IsolatedNix::new();
    let a_drv = nix.instantiate(&step_a());
    let a = nix.run("nix-store", &["--realise", &a_drv]);
    let b_drv = nix.instantiate(&format!(
        "let a = {}; in derivation {{ name = \"step-b\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [\"-c\" \"/bin/mkdir $out; read x < ${{a}}; \
         echo \\\"b got $x from ${{a}}\\\" > $out/msg; /bin/ln -s msg $out/link; echo $out > $out/self\"]; }}",
        step_a()
    ));
    let b = nix.run("nix-store", &["--realise", &b_drv]);
    let keys = TempDir::new().expect("tempdir");
    offload_tests::key_and_acl(keys.path(), &keys.path().join("acl"));
    let before = [&a, &b].iter().map(|p| query(&nix, p)).collect();
    let stream = {
        let _daemon = nix.start_daemon();
        run_ok(
            &mut export_cmd(&nix, keys.path(), &daemon_spec(&nix), &["-r", &b]),
            b"",
        )
    };
    nix.run("nix-store", &["--delete", &b, &a]);
    Fixture {
        nix,
        keys,
        stream,
        a,
        b,
        b_drv,
        before,
    }
}

fn daemon_spec(nix: &IsolatedNix) -> String {
    format!("nix-daemon:{}", s(&nix.socket()))
}

fn local_spec(nix: &IsolatedNix) -> String {
    format!("local:{}", s(&nix.state_dir()))
}

/// `archive export --store STORE --store-dir <nix's> --key <ours> ARGS…`.
fn export_cmd(nix: &IsolatedNix, keys: &Path, store: &str, args: &[&str]) -> Command {
    let mut cmd = offload("offload-master");
    cmd.args([
        "archive",
        "export",
        "--store",
        store,
        "--store-dir",
        s(&nix.store_dir()),
    ])
    .args(["--key", s(&keys.join("signing-key.sec"))])
    .args(args);
    cmd
}

/// `archive import --store STORE --store-dir <nix's> ARGS…`, with our ACL
/// unless ARGS choose.
fn import_cmd(nix: &IsolatedNix, keys: &Path, store: &str, args: &[&str]) -> Command {
    let mut cmd = offload("offload-master");
    cmd.args([
        "archive",
        "import",
        "--store",
        store,
        "--store-dir",
        s(&nix.store_dir()),
    ])
    .args(args);
    if !args.contains(&"--no-check-sigs") && !args.contains(&"--acl") {
        cmd.args(["--acl", s(&keys.join("acl"))]);
    }
    cmd
}

/// Start an import of `stream` with `cmd` and return once it says it waits
/// for the garbage collector; the child and the thread feeding its stdin.
/// The caller waits for the child it gets back.
#[allow(clippy::zombie_processes)]
fn import_until_waiting(
    cmd: &mut Command,
    stream: &[u8],
) -> (std::process::Child, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("import");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = stream.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).expect("stderr") == 0 {
            let status = child.wait();
            panic!("the import ended without waiting for the collector: {status:?}");
        }
        if line.contains("waiting for the garbage collector") {
            return (child, writer);
        }
    }
}

fn query(nix: &IsolatedNix, p: &str) -> (String, String, String, String) {
    (
        p.to_owned(),
        nix.run("nix-store", &["--query", "--references", p]),
        nix.run("nix-store", &["--query", "--deriver", p]),
        nix.run("nix-store", &["--query", "--hash", p]),
    )
}

impl Fixture {
    fn import(&self, crash_at: Option<&str>, extra: &[&str]) -> Output {
        let mut cmd = import_cmd(&self.nix, self.keys.path(), &local_spec(&self.nix), extra);
        if let Some(point) = crash_at {
            cmd.env("OFFLOAD_TEST_CRASH_AT", point);
        }
        run_with_input(&mut cmd, &self.stream)
    }

    fn valid(&self, p: &str) -> bool {
        self.nix
            .command("nix-store")
            .args(["--check-validity", p])
            .output()
            .expect("nix-store")
            .status
            .success()
    }

    fn assert_as_nix_had_them(&self) {
        for (p, refs, deriver, hash) in &self.before {
            assert_eq!(
                &query(&self.nix, p),
                &(p.clone(), refs.clone(), deriver.clone(), hash.clone())
            );
        }
        self.nix.assert_verify_clean();
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.nix.store_dir())
            .expect("store dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".offload-import-"))
            .collect()
    }
}

#[test]
fn import_registers_what_nix_had_while_the_daemon_runs() {
    let f = fixture();
    assert!(!f.valid(&f.a) && !f.valid(&f.b));
    let _daemon = f.nix.start_daemon();
    let out = f.import(None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n{}\n", f.a, f.b)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("found valid signature for '{}'", f.b))
    );
    f.assert_as_nix_had_them();
    // The daemon sees them too, and builds on them without rebuilding.
    assert_eq!(f.nix.run("nix-store", &["--realise", &f.b_drv]), f.b);
    // Importing again changes nothing.
    let again = f.import(None, &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    f.assert_as_nix_had_them();
    // NULL, not '', for a missing deriver; the Nix schema's extra columns stay NULL.
    let db = rusqlite::Connection::open(f.nix.db()).expect("open db");
    let row: (Option<String>, Option<i64>, Option<String>) = db
        .query_row(
            "select deriver, ultimate, sigs from ValidPaths where path = ?1",
            [&f.b],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    assert_eq!(row, (Some(f.before[1].2.clone()), None, None));
}

#[test]
fn import_refuses_bad_items_and_keeps_nothing_of_them() {
    let f = fixture();
    // No ACL entry for the signer: refused, nothing registered or left behind.
    let other = TempDir::new().expect("tempdir");
    std::fs::write(other.path().join("acl"), b"(acl)").expect("acl");
    let out = f.import(None, &["--acl", s(&other.path().join("acl"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&f.a) && err.contains("not in the ACL"),
        "{err}"
    );
    assert!(!f.valid(&f.a) && !f.valid(&f.b));
    assert!(f.leftovers().is_empty());
    // Only b, without its reference a: refused with what to do.
    let mut only_b = Vec::new();
    {
        let mut r = offload_core::export::ExportReader::new(&f.stream[..], Default::default());
        let mut first = r.next_item().expect("item").expect("a");
        while first.nar().next_event().expect("nar").is_some() {}
        first.finish().expect("trailer");
        let start = f.stream.len() - r.into_inner().len();
        only_b.extend_from_slice(&f.stream[start..]);
    }
    let mut cmd = import_cmd(&f.nix, f.keys.path(), &local_spec(&f.nix), &[]);
    let out = run_with_input(&mut cmd, &only_b);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not valid (register the closure first)"),
        "{err}"
    );
    assert!(!f.valid(&f.b) && f.leftovers().is_empty());
    // Truncated in the middle of b: a is registered, b is not.
    let cut = &f.stream[..f.stream.len() - 100];
    let out = run_with_input(&mut cmd, cut);
    assert!(!out.status.success());
    assert!(f.valid(&f.a) && !f.valid(&f.b));
    f.nix.assert_verify_clean();
}

#[test]
fn a_crash_at_any_step_leaves_each_item_whole_or_absent() {
    let points = [
        "after-restore",
        "before-rename",
        "after-rename",
        "before-commit",
        "after-commit",
        "after-restore@2",
        "after-rename@2",
        "before-commit@2",
        "after-commit@2",
    ];
    let f = fixture();
    let _daemon = f.nix.start_daemon();
    for point in points {
        // Start from nothing registered each time.
        let present: Vec<&String> = [&f.b, &f.a].into_iter().filter(|p| f.valid(p)).collect();
        if !present.is_empty() {
            let args: Vec<&str> = ["--delete"]
                .into_iter()
                .chain(present.iter().map(|p| p.as_str()))
                .collect();
            f.nix.run("nix-store", &args);
        }
        let out = f.import(Some(point), &[]);
        assert!(
            !out.status.success(),
            "{point}: the import should have been killed"
        );
        let (name, nth) = point.split_once('@').unwrap_or((point, "1"));
        let committed = usize::from(name == "after-commit") + nth.parse::<usize>().expect("n") - 1;
        assert_eq!(f.valid(&f.a), committed >= 1, "{point}: a");
        assert_eq!(f.valid(&f.b), committed >= 2, "{point}: b");
        // Whatever is registered is whole; an invalid leftover is harmless.
        f.nix.assert_verify_clean();
        // Importing again completes, and sweeps the dead import's temporaries.
        let out = f.import(None, &[]);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(f.leftovers().is_empty(), "{point}: {:?}", f.leftovers());
        f.assert_as_nix_had_them();
    }
}

#[test]
fn import_through_the_nix_daemon_checks_signatures_here_first() {
    let f = fixture();
    let _daemon = f.nix.start_daemon();
    let import = |extra: &[&str]| {
        run_with_input(
            &mut import_cmd(&f.nix, f.keys.path(), &daemon_spec(&f.nix), extra),
            &f.stream,
        )
    };
    // Signed by a key outside this ACL: refused before the daemon sees it.
    let other = TempDir::new().expect("tempdir");
    std::fs::write(other.path().join("acl"), b"(acl)").expect("acl");
    let out = import(&["--acl", s(&other.path().join("acl"))]);
    assert!(!out.status.success());
    assert!(!f.valid(&f.a));
    // Authorized: both items go in with add-to-store-nar, and Nix agrees.
    let out = import(&["--acl", s(&f.keys.path().join("acl"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n{}\n", f.a, f.b)
    );
    f.assert_as_nix_had_them();
}

#[test]
fn export_from_a_local_store_equals_the_daemons_export() {
    let f = fixture();
    let out = f.import(None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Signatures are deterministic (RFC 6979): the same key, items and
    // order give the same bytes whether read from the daemon or directly.
    let direct = run_ok(
        &mut export_cmd(&f.nix, f.keys.path(), &local_spec(&f.nix), &["-r", &f.b]),
        b"",
    );
    offload_tests::assert_bytes_eq("export via local", &direct, &f.stream);
}

#[test]
fn export_refuses_an_item_modified_since_it_was_registered() {
    let f = fixture();
    let out = f.import(None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tamper with b's file behind the store's back.
    let msg = std::path::Path::new(&f.b).join("msg");
    let dir = std::path::Path::new(&f.b);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&msg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&msg, b"tampered\n").expect("tamper");
    let out = export_cmd(&f.nix, f.keys.path(), &local_spec(&f.nix), &[&f.b])
        .output()
        .expect("export");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was modified since it was registered"),
        "{err}"
    );
    // What was written is not a stream anyone can import.
    let verify = run_with_input(
        offload("offload-master").args([
            "archive",
            "verify",
            "--acl",
            s(&f.keys.path().join("acl")),
        ]),
        &out.stdout,
    );
    assert!(!verify.status.success());
}

#[test]
fn derivations_get_the_derivation_outputs_rows_nix_writes() {
    let f = fixture();
    let rows = |nix: &IsolatedNix, drv: &str| -> Vec<(String, String)> {
        let db = rusqlite::Connection::open(nix.db()).expect("db");
        let mut stmt = db
            .prepare(
                "select d.id, d.path from DerivationOutputs d join ValidPaths v on d.drv = v.id \
                 where v.path = ?1 order by d.id",
            )
            .expect("query");
        stmt.query_map([drv], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let before = rows(&f.nix, &f.b_drv);
    assert_eq!(before, [("out".to_owned(), f.b.clone())]);
    let a_drv = f.before[0].2.clone();
    let stream = {
        let _daemon = f.nix.start_daemon();
        run_ok(
            &mut export_cmd(
                &f.nix,
                f.keys.path(),
                &daemon_spec(&f.nix),
                &["-r", &f.b_drv],
            ),
            b"",
        )
    };
    f.nix.run("nix-store", &["--delete", &f.b_drv, &a_drv]);
    assert!(rows(&f.nix, &f.b_drv).is_empty());
    let mut cmd = import_cmd(&f.nix, f.keys.path(), &local_spec(&f.nix), &[]);
    let out = run_with_input(&mut cmd, &stream);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&f.nix, &f.b_drv), before);
    f.nix.assert_verify_clean();
}

#[test]
fn import_waits_while_the_garbage_collector_holds_its_lock() {
    let f = fixture();
    // Hold gc.lock exclusively, as nix-store --gc does for a whole collection.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(f.nix.state_dir().join("gc.lock"))
        .expect("gc.lock");
    lock.lock().expect("flock LOCK_EX");
    let (mut child, writer) = import_until_waiting(
        &mut import_cmd(&f.nix, f.keys.path(), &local_spec(&f.nix), &[]),
        &f.stream,
    );
    // Nothing is written while the collector runs.
    assert!(!f.valid(&f.a) && f.leftovers().is_empty());
    lock.unlock().expect("unlock");
    let status = child.wait().expect("wait");
    writer.join().expect("writer");
    assert!(status.success());
    f.assert_as_nix_had_them();
}

#[test]
fn a_database_of_another_store_directory_is_refused_with_the_fix() {
    let f = fixture();
    // The default store directory is /gnu/store; this Nix store's is not.
    let out = run_with_input(
        offload("offload-master").args([
            "archive",
            "import",
            "--store",
            &format!("local:{}", s(&f.nix.state_dir())),
            "--acl",
            s(&f.keys.path().join("acl")),
        ]),
        &f.stream,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pass --store-dir {}", s(&f.nix.store_dir()))),
        "{err}"
    );
    // A state directory without a database says what to give instead.
    let empty = TempDir::new().expect("tempdir");
    let out = run_with_input(
        offload("offload-master").args([
            "archive",
            "import",
            "--store",
            &format!("local:{}", s(empty.path())),
            "--no-check-sigs",
        ]),
        &f.stream,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no store database at") && err.contains("--store local:/nix/var/nix"),
        "{err}"
    );
}

/// Direct registration into a Guix-schema store (the hook's case on a Guix
/// host): the database is Guix's, and the collector's lock is an fcntl
/// record lock, as guix-daemon takes it (held here by Python's
/// `fcntl.lockf`, which is fcntl too).
#[test]
fn guix_schema_stores_take_the_collectors_fcntl_lock() {
    use std::io::BufRead;
    use std::process::Stdio;
    let root = TempDir::new().expect("tempdir");
    let store_dir = root.path().join("store");
    let state = root.path().join("var");
    // An embedded store has Guix's layout and schema: create it empty.
    let out = run_with_input(
        offload("offload-master").args([
            "archive",
            "import",
            "--no-check-sigs",
            "--store",
            &format!("embedded:{}", s(root.path())),
            "--store-dir",
            s(&store_dir),
        ]),
        &0u64.to_le_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two items, the second referring to the first, signed by our key.
    let keys = TempDir::new().expect("tempdir");
    offload_tests::key_and_acl(keys.path(), &keys.path().join("acl"));
    let src = TempDir::new().expect("tempdir");
    let first = src.path().join("0123456789abcdfghijklmnpqrsvwxyz-first");
    let second = src.path().join("zyxwvsrqpnmlkjihgfdcba9876543210-second");
    std::fs::write(&first, b"first\n").expect("write");
    std::fs::write(
        &second,
        format!(
            "uses {}/0123456789abcdfghijklmnpqrsvwxyz-first\n",
            s(&store_dir)
        ),
    )
    .expect("write");
    let stream = run_ok(
        offload("offload-master")
            .args(["archive", "export", "--store-dir", s(&store_dir), "--key"])
            .arg(keys.path().join("signing-key.sec"))
            .arg(&first)
            .arg(&second),
        b"",
    );

    let mut gc = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\nf = open(sys.argv[1], 'a+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()",
            s(&state.join("gc.lock")),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (python3-minimal)");
    let mut said = String::new();
    std::io::BufReader::new(gc.stdout.take().expect("stdout"))
        .read_line(&mut said)
        .expect("python");
    assert_eq!(said.trim(), "locked");

    let mut import = offload("offload-master");
    import
        .args(["archive", "import", "--store"])
        .arg(format!("local:{}", s(&state)))
        .args(["--store-dir", s(&store_dir), "--acl"])
        .arg(keys.path().join("acl"));
    let (mut child, writer) = import_until_waiting(&mut import, &stream);
    let db = rusqlite::Connection::open(state.join("db/db.sqlite")).expect("db");
    let count = |db: &rusqlite::Connection| -> i64 {
        db.query_row("select count(*) from ValidPaths", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(count(&db), 0, "nothing registered while the collector runs");
    drop(gc.stdin.take());
    assert!(gc.wait().expect("python").success());
    assert!(child.wait().expect("import").success());
    writer.join().expect("writer");

    // Guix's schema (no `ultimate` column), hashes as sha256:<hex>, a Ref.
    assert_eq!(count(&db), 2);
    let columns: Vec<String> = db
        .prepare("select name from pragma_table_info('ValidPaths')")
        .expect("columns")
        .query_map([], |r| r.get(0))
        .expect("columns")
        .collect::<Result<_, _>>()
        .expect("columns");
    assert!(!columns.iter().any(|c| c == "ultimate"), "{columns:?}");
    let hash: String = db
        .query_row(
            "select hash from ValidPaths where path like '%-first'",
            [],
            |r| r.get(0),
        )
        .expect("hash");
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    let refs: i64 = db
        .query_row("select count(*) from Refs", [], |r| r.get(0))
        .expect("refs");
    assert_eq!(refs, 1);
    // Exported back from the store, the stream is the same bytes.
    let again = run_ok(
        offload("offload-master")
            .args(["archive", "export", "--store"])
            .arg(format!("local:{}", s(&state)))
            .args(["--store-dir", s(&store_dir), "--key"])
            .arg(keys.path().join("signing-key.sec"))
            .arg("-r")
            .arg(format!(
                "{}/zyxwvsrqpnmlkjihgfdcba9876543210-second",
                s(&store_dir)
            )),
        b"",
    );
    offload_tests::assert_bytes_eq("re-exported stream", &again, &stream);
}
