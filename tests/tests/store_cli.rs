//! The store commands end to end, as an operator runs them:
//! `offload-master archive import --store embedded:DIR` of a `.drv`
//! closure exported by Nix, then `offload-agent build --store …` with the
//! embedded store and with a real `nix-daemon`: both print the same
//! `OUTPUT-NAME PATH` lines as Nix's own `--query --outputs`, and failures
//! exit 100 with Nix's message.

use std::process::Output;

use offload_tests::nixd::IsolatedNix;
use offload_tests::{offload, run_ok, run_with_input};
use tempfile::TempDir;

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn agent_build(store: &str, store_dir: &str, drv: &str) -> Output {
    agent_build_with(store, store_dir, &[], drv)
}

/// `offload-agent build --store STORE --store-dir DIR OPTIONS… DRV`.
fn agent_build_with(store: &str, store_dir: &str, options: &[&str], drv: &str) -> Output {
    offload("offload-agent")
        .args(["build", "--store", store, "--store-dir", store_dir])
        .args(options)
        .arg(drv)
        .output()
        .expect("offload-agent build")
}

/// `nix-store --export` of the closure of `drv` into `embedded:DIR`.
fn import_drv_closure(nix: &IsolatedNix, embedded: &std::path::Path, drv: &str) {
    let closure = nix.run("nix-store", &["--query", "--requisites", drv]);
    let paths: Vec<&str> = closure.lines().collect();
    let stream = run_ok(nix.command("nix-store").arg("--export").args(&paths), b"");
    let mut import = offload("offload-master");
    import.args([
        "archive",
        "import",
        "--no-check-sigs",
        "--store",
        &format!("embedded:{}", s(embedded)),
        "--store-dir",
        s(&nix.store_dir()),
    ]);
    let out = run_with_input(&mut import, &stream);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        paths.len()
    );
}

/// A derivation made by Nix from `expr`, with its closure imported into a
/// fresh embedded store named in Nix's store directory.
struct Fixture {
    nix: IsolatedNix,
    embedded: TempDir,
    drv: String,
}

impl Fixture {
    fn new(expr: &str) -> Self {
        let nix = IsolatedNix::new();
        let drv = nix.instantiate(expr);
        let embedded = TempDir::new().expect("tempdir");
        import_drv_closure(&nix, embedded.path(), &drv);
        Self { nix, embedded, drv }
    }

    fn store_dir(&self) -> String {
        s(&self.nix.store_dir()).to_owned()
    }

    fn embedded_spec(&self) -> String {
        format!("embedded:{}", s(self.embedded.path()))
    }

    /// The embedded store and the running daemon (keep the guard).
    fn both_specs(&self) -> [String; 2] {
        [
            self.embedded_spec(),
            format!("nix-daemon:{}", s(&self.nix.socket())),
        ]
    }
}

#[test]
fn agent_build_prints_the_outputs_nix_would_build() {
    let nix = IsolatedNix::new();
    let drv = nix.instantiate(
        "derivation { name = \"two\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         outputs = [\"out\" \"doc\"]; \
         args = [\"-c\" \"echo building-two; echo o > $out; echo d > $doc\"]; }",
    );
    let expected: String = {
        let outs = nix.run("nix-store", &["--query", "--outputs", &drv]);
        let mut lines: Vec<String> = outs
            .lines()
            .map(|p| {
                let name = if p.ends_with("-two-doc") {
                    "doc"
                } else {
                    "out"
                };
                format!("{name} {p}\n")
            })
            .collect();
        lines.sort();
        lines.concat()
    };
    let store_dir = nix.store_dir();

    // The embedded store (its files under DIR/store, named in Nix's store dir).
    let embedded = TempDir::new().expect("tempdir");
    import_drv_closure(&nix, embedded.path(), &drv);
    let spec = format!("embedded:{}", s(embedded.path()));
    let out = agent_build(&spec, s(&store_dir), &drv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("building '{drv}'...")) && err.contains("building-two"),
        "{err}"
    );
    // A second run finds the outputs valid and builds nothing.
    let again = agent_build(&spec, s(&store_dir), &drv);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), expected);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("building"));

    // The real daemon, through the worker protocol.
    let _daemon = nix.start_daemon();
    let spec = format!("nix-daemon:{}", s(&nix.socket()));
    let out = agent_build(&spec, s(&store_dir), &drv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert!(String::from_utf8_lossy(&out.stderr).contains("building-two"));
}

#[test]
fn agent_build_failures_exit_100_with_nix_s_message() {
    let f = Fixture::new(&IsolatedNix::sh_derivation(
        "fails",
        "echo before-failing; exit 7",
    ));
    let (drv, store_dir) = (&f.drv, f.store_dir());
    let _daemon = f.nix.start_daemon();
    for spec in f.both_specs() {
        let out = agent_build(&spec, &store_dir, drv);
        assert_eq!(out.status.code(), Some(100), "{spec}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("before-failing")
                && err.contains(&format!("builder for '{drv}' failed with exit code 7")),
            "{spec}: {err}"
        );
    }
    // Not a derivation of this store: a clear error, exit 2.
    let out = agent_build(&f.embedded_spec(), "/gnu/store", drv);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a derivation in /gnu/store"));
}

#[test]
fn agent_build_timeouts_exit_101_through_the_daemon_and_embedded() {
    let f = Fixture::new(&IsolatedNix::sh_derivation(
        "silent",
        "echo going-quiet; exec /bin/sleep 30",
    ));
    let (drv, store_dir) = (&f.drv, f.store_dir());
    let _daemon = f.nix.start_daemon();
    for spec in f.both_specs() {
        let out = agent_build_with(&spec, &store_dir, &["--max-silent-time", "1"], drv);
        assert_eq!(
            out.status.code(),
            Some(101),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("going-quiet") && err.contains("timed out after 1 seconds of silence"),
            "{spec}: {err}"
        );
    }
}

/// Without root the builder is root of a user namespace that owns every
/// store file: only the read-only binds keep it from the inputs. (Run as
/// `nobody` when the tests are root.)
#[test]
fn unprivileged_agent_builds_cannot_change_their_inputs() {
    let nix = IsolatedNix::new();
    let victim = "derivation { name = \"victim\"; system = builtins.currentSystem; \
                  builder = \"/bin/sh\"; args = [\"-c\" \"/usr/bin/mkdir $out; echo original > $out/file\"]; }";
    let script = "try() { if \\\"$@\\\" > /dev/null 2>&1; then echo ESCAPED: $*; else echo denied; fi; }; { \
                  try /usr/bin/chmod -R u+w ${v}; try /bin/sh -c 'echo x >> ${v}/file'; \
                  try /usr/bin/touch ${v}/new; try /usr/bin/mount -o remount,rw ${v}; \
                  echo uid=$(/usr/bin/id -u); } > $out";
    let drv = nix.instantiate(&format!(
        "let v = {victim}; in derivation {{ name = \"attacker\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [\"-c\" \"{script}\"]; }}"
    ));
    let embedded = TempDir::new().expect("tempdir");
    import_drv_closure(&nix, embedded.path(), &drv);
    let store_dir = nix.store_dir();
    let spec = format!("embedded:{}", s(embedded.path()));
    let mut build = if offload_tests::running_as_root() {
        let status = std::process::Command::new("chown")
            .args(["-R", "65534:65534", s(embedded.path())])
            .status()
            .expect("chown");
        assert!(status.success());
        let mut cmd =
            std::process::Command::new(offload_tests::require_program("setpriv", "util-linux"));
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(offload_tests::bin("offload-agent"))
            .env("RUST_LOG", "warn");
        cmd
    } else {
        offload("offload-agent")
    };
    let out = build
        .args([
            "build",
            "--store",
            &spec,
            "--store-dir",
            s(&store_dir),
            &drv,
        ])
        .output()
        .expect("offload-agent build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("not isolated"), "{err}");
    let outputs = String::from_utf8_lossy(&out.stdout);
    let attacker_out = outputs
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.rsplit('/').next())
        .map(|base| embedded.path().join("store").join(base))
        .expect("the output path");
    let report = std::fs::read_to_string(&attacker_out).expect("the attacker's report");
    assert_eq!(report, "denied\ndenied\ndenied\ndenied\nuid=0\n");
    // The victim is as it was built.
    let victim_out = nix.run(
        "nix-store",
        &["--query", "--outputs", &nix.instantiate(victim)],
    );
    let victim_base = victim_out.rsplit('/').next().expect("basename");
    let victim_dir = embedded.path().join("store").join(victim_base);
    assert_eq!(
        std::fs::read_to_string(victim_dir.join("file")).expect("victim"),
        "original\n"
    );
    let names: Vec<_> = std::fs::read_dir(&victim_dir)
        .expect("victim")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["file"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(victim_dir.join("file"))
        .expect("victim")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o444);
}

/// `word` quoted for the shell.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// An agent running on a pseudo-terminal (its controlling terminal, as in
/// an operator's shell) gives its builders neither that terminal nor its
/// session: `/dev/tty` cannot be opened, so no `TIOCSTI` into the shell.
#[test]
fn builders_cannot_open_the_agent_s_terminal() {
    let nix = IsolatedNix::new();
    let drv = nix.instantiate(&IsolatedNix::sh_derivation(
        "tty-probe",
        "if (: < /dev/tty) 2>/dev/null; then echo opened; else echo refused; fi > $out",
    ));
    let embedded = TempDir::new().expect("tempdir");
    import_drv_closure(&nix, embedded.path(), &drv);
    let command = [
        offload_tests::bin("offload-agent").display().to_string(),
        "build".to_owned(),
        "--store".to_owned(),
        format!("embedded:{}", s(embedded.path())),
        "--store-dir".to_owned(),
        s(&nix.store_dir()).to_owned(),
        drv.clone(),
    ]
    .map(|w| quoted(&w))
    .join(" ");
    // Under `script`, the agent's controlling terminal is a pty: opening
    // /dev/tty works there.
    let out = std::process::Command::new(offload_tests::require_program("script", "bsdutils"))
        .args([
            "-qec",
            &format!("tty > /dev/null && : < /dev/tty && {command}"),
            "/dev/null",
        ])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let path = text
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("out "))
        .unwrap_or_else(|| panic!("no output path in {text:?}"));
    let base = path.rsplit('/').next().expect("basename");
    let report = std::fs::read_to_string(embedded.path().join("store").join(base)).expect("report");
    assert_eq!(report, "refused\n");
}

/// Wait (at most `limit`) until `done`; whether it happened.
fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// A crashed agent (SIGKILL) takes its builds with it, and the next
/// process to open the store sweeps what they left in `tmp/`.
#[test]
fn builds_die_with_a_killed_agent_and_their_leftovers_are_swept() {
    let nix = IsolatedNix::new();
    let marker = format!("27.{}", std::process::id());
    let drv = nix.instantiate(&IsolatedNix::sh_derivation(
        "outlives-the-agent",
        &format!("/usr/bin/setsid /usr/bin/sleep {marker} & exec /usr/bin/sleep {marker}"),
    ));
    let embedded = TempDir::new().expect("tempdir");
    import_drv_closure(&nix, embedded.path(), &drv);
    let mut agent = offload("offload-agent")
        .args([
            "build",
            "--store",
            &format!("embedded:{}", s(embedded.path())),
            "--store-dir",
            s(&nix.store_dir()),
            &drv,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("offload-agent build");
    // Both sleeps run: the builder is past its set-up.
    let sleeping = format!("/usr/bin/sleep {marker}");
    let started = wait_for(std::time::Duration::from_secs(20), || {
        offload_tests::processes_with(&marker)
            .iter()
            .filter(|p| p.trim_end() == sleeping)
            .count()
            == 2
    });
    agent.kill().expect("kill the agent");
    agent.wait().expect("reap the agent");
    assert!(started, "the builder never ran");
    let gone = wait_for(std::time::Duration::from_secs(5), || {
        offload_tests::processes_with(&marker).is_empty()
    });
    assert!(
        gone,
        "outlived the agent: {:?}",
        offload_tests::processes_with(&marker)
    );

    let tmp = embedded.path().join("tmp");
    let left = std::fs::read_dir(&tmp).expect("tmp").count();
    assert!(left > 0, "nothing left to sweep");
    let dir = offload_core::store_path::StoreDir::new(s(&nix.store_dir())).expect("store dir");
    let store = offload_store::embedded::EmbeddedStore::open(embedded.path(), dir).expect("open");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "not swept: {left:?}");
    drop(store);
}
