//! The machines.scm corpus, evaluated by both evaluators of `offload-master`.
//!
//! `master/tests/machines-corpus/*.scm` are valid files; for each one the
//! native evaluator (`--evaluator native`) and Guile running
//! `master/src/machines/offload-machines.scm` (`--evaluator guile`) must
//! both succeed with identical JSON and identical warnings, and the number
//! of machines and warnings must be the one listed in [`VALID`].
//! `master/tests/machines-corpus/errors/*.scm` are malformed files: each
//! starts with `;; expect-error: LINE:COL: SUBSTRING`, and both evaluators
//! must fail with `FILE:LINE:COL:` and the substring on stderr. See the
//! corpus README for the conventions (1-based lines and columns, a tab is
//! one column).
//!
//! The Guile side is also pinned on its own: the driver's s-expression for a
//! few files is compared with the text written here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use offload_tests::{offload, require_program, run_with_input};

/// `HOME` given to both evaluators.
const TEST_HOME: &str = "/home/offload-test";
/// `OFFLOAD_TEST_HOST` given to both evaluators.
const TEST_HOST: &str = "test-host.lan";

/// Every valid corpus file: (file, machines in the JSON, warnings on stderr).
const VALID: &[(&str, usize, usize)] = &[
    ("01-manual-example.scm", 2, 0),
    ("02-manual-example-2022-system.scm", 2, 2),
    ("03-guix-system-generated.scm", 5, 0),
    ("04-guix-system-generated-empty.scm", 0, 0),
    ("05-single-record.scm", 0, 1),
    ("06-non-list-string.scm", 0, 1),
    ("07-empty-list.scm", 0, 0),
    ("08-only-comments.scm", 0, 1),
    ("09-getenv.scm", 1, 0),
    ("10-getenv-unset.scm", 1, 0),
    ("11-let.scm", 2, 0),
    ("12-let-star.scm", 2, 0),
    ("13-define-procedure.scm", 2, 0),
    ("14-lambda-map.scm", 3, 0),
    ("15-filter.scm", 2, 0),
    ("16-append-cons.scm", 3, 0),
    ("17-quasiquote.scm", 3, 0),
    ("18-deprecated-system.scm", 2, 1),
    ("19-neither-systems-nor-system.scm", 2, 1),
    ("20-comments-everywhere.scm", 2, 0),
    ("21-numbers.scm", 5, 0),
    ("22-strings-escapes.scm", 1, 0),
    ("23-characters-keywords-brackets.scm", 1, 0),
    ("24-inherit-chain.scm", 3, 0),
    ("25-inherit-from-deprecated.scm", 3, 2),
    ("26-all-fields.scm", 1, 0),
    ("27-fields-any-order.scm", 1, 0),
    ("28-use-modules-srfi-1.scm", 4, 0),
    ("29-ice-9-match.scm", 2, 0),
    ("30-define-star-keywords.scm", 2, 0),
    ("31-tabs-and-crlf.scm", 2, 2),
    ("32-improper-list.scm", 0, 1),
    ("33-list-with-non-record.scm", 0, 1),
    ("34-same-record-twice.scm", 2, 2),
    ("35-if-conditional.scm", 1, 0),
    ("36-many-machines.scm", 20, 0),
    ("37-nested-define-in-let.scm", 2, 0),
    ("38-last-expression-wins.scm", 1, 0),
];

/// The keys of every JSON machine object.
const JSON_KEYS: [&str; 13] = [
    "name",
    "port",
    "systems",
    "user",
    "private-key",
    "host-key",
    "compression",
    "compression-level",
    "daemon-socket",
    "overload-threshold",
    "parallel-builds",
    "speed",
    "features",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../master/tests/machines-corpus")
}

fn guile_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../master/src/machines/offload-machines.scm")
}

/// The `.scm` files directly in `dir`, by name.
fn scm_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".scm"))
        .collect();
    names.sort();
    names
}

/// `offload-master machines --file FILE --format json --evaluator EVALUATOR`,
/// run in the corpus directory with a fixed environment.
fn machines(file: &str, evaluator: &str) -> Output {
    let mut cmd = offload("offload-master");
    cmd.current_dir(corpus_dir())
        .env("HOME", TEST_HOME)
        .env("OFFLOAD_TEST_HOST", TEST_HOST)
        .env_remove("OFFLOAD_TEST_UNSET_VARIABLE")
        .args([
            "machines",
            "--file",
            file,
            "--format",
            "json",
            "--evaluator",
            evaluator,
        ]);
    run_with_input(&mut cmd, b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The warning lines of stderr, without the `offload-master: ` prefix.
fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("offload-master: "))
        .filter(|line| line.contains("warning: "))
        .map(str::to_owned)
        .collect()
}

fn describe(file: &str, evaluator: &str, out: &Output) -> String {
    format!(
        "{file} with --evaluator {evaluator} ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn corpus_lists_every_valid_file() {
    let on_disk = scm_files(&corpus_dir());
    let listed: Vec<String> = VALID.iter().map(|(f, _, _)| (*f).to_owned()).collect();
    assert_eq!(on_disk, listed, "VALID must list exactly the corpus files");
    assert!(
        on_disk.len() >= 32,
        "the corpus has {} files",
        on_disk.len()
    );
    assert!(scm_files(&corpus_dir().join("errors")).len() >= 8);
}

/// Valid files that use forms beyond the built-in evaluator (`match-lambda`,
/// `define*`): native refuses them as unsupported, and `auto` must give
/// exactly Guile's answer by falling back to it.
const BEYOND_NATIVE: &[&str] = &["29-ice-9-match.scm", "30-define-star-keywords.scm"];

#[test]
fn files_beyond_the_native_subset_fall_back_to_guile() {
    require_program("guile", "guile-3.0");
    for file in BEYOND_NATIVE {
        let native = machines(file, "native");
        assert!(
            !native.status.success(),
            "{}",
            describe(file, "native", &native)
        );
        assert!(
            text(&native.stderr).contains("unsupported by the built-in evaluator")
                && text(&native.stderr).contains("--evaluator guile"),
            "{}",
            describe(file, "native", &native)
        );
    }
}

#[test]
fn native_and_guile_agree_on_valid_files() {
    require_program("guile", "guile-3.0");
    for &(file, machine_count, warning_count) in VALID {
        let first = if BEYOND_NATIVE.contains(&file) {
            "auto"
        } else {
            "native"
        };
        let native = machines(file, first);
        let guile = machines(file, "guile");
        assert!(
            native.status.success(),
            "{}",
            describe(file, "native", &native)
        );
        assert!(
            guile.status.success(),
            "{}",
            describe(file, "guile", &guile)
        );
        assert_eq!(
            text(&native.stdout),
            text(&guile.stdout),
            "{file}: the two evaluators print different JSON\n{}\n{}",
            describe(file, "native", &native),
            describe(file, "guile", &guile)
        );
        let native_warnings = warnings(&text(&native.stderr));
        let guile_warnings = warnings(&text(&guile.stderr));
        assert_eq!(
            native_warnings, guile_warnings,
            "{file}: the two evaluators warn differently"
        );
        assert_eq!(
            guile_warnings.len(),
            warning_count,
            "{file}: number of warnings\n{}",
            describe(file, "guile", &guile)
        );
        for warning in &guile_warnings {
            assert!(
                warning.starts_with(&format!("{file}:")) || warning.starts_with("warning: '"),
                "{file}: a warning names neither a location nor the file: {warning}"
            );
        }

        let json = text(&guile.stdout);
        let trimmed = json.trim();
        assert!(
            trimmed.starts_with('[') && trimmed.ends_with(']'),
            "{file}: not a JSON array: {json}"
        );
        assert_eq!(
            json.matches("\"host-key\"").count(),
            machine_count,
            "{file}: number of machines in {json}"
        );
        if machine_count == 0 {
            assert_eq!(
                trimmed.replace(char::is_whitespace, ""),
                "[]",
                "{file}: {json}"
            );
        } else {
            for key in JSON_KEYS {
                assert_eq!(
                    json.matches(&format!("\"{key}\"")).count(),
                    machine_count,
                    "{file}: key {key:?} in {json}"
                );
            }
            assert!(!json.contains("\"location\""), "{file}: {json}");
        }
    }
}

#[test]
fn native_and_guile_agree_on_concrete_values() {
    // A few values the JSON must carry, whichever evaluator made it.
    let checks: &[(&str, &[&str])] = &[
        (
            "09-getenv.scm",
            &["test-host.lan", "/home/offload-test/.ssh/offload_ed25519"],
        ),
        ("10-getenv-unset.scm", &["fallback.lan"]),
        (
            "03-guix-system-generated.scm",
            &["node3.lan", "node5.lan", "2222", "big-parallel"],
        ),
        ("22-strings-escapes.scm", &["A;B", "esc.lan"]),
        ("21-numbers.scm", &["1000", "2222"]),
    ];
    for &(file, needles) in checks {
        for evaluator in ["native", "guile"] {
            let out = machines(file, evaluator);
            assert!(out.status.success(), "{}", describe(file, evaluator, &out));
            let json = text(&out.stdout);
            for needle in needles {
                assert!(
                    json.contains(needle),
                    "{file} --evaluator {evaluator}: {needle:?} missing from {json}"
                );
            }
            // overload-threshold #f is JSON null.
            if file == "21-numbers.scm" {
                assert!(
                    json.contains("null"),
                    "{file} --evaluator {evaluator}: {json}"
                );
            }
        }
    }
}

/// `;; expect-error: LINE:COL: SUBSTRING` of an error file.
fn expectation(path: &Path) -> (String, String) {
    let source =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let header = source
        .lines()
        .next()
        .and_then(|line| line.strip_prefix(";; expect-error: "))
        .unwrap_or_else(|| panic!("{} lacks its ;; expect-error: line", path.display()));
    let mut parts = header.splitn(3, ':');
    let (line, col, substring) = (parts.next(), parts.next(), parts.next());
    let (Some(line), Some(col), Some(substring)) = (line, col, substring) else {
        panic!("{}: bad expect-error line {header:?}", path.display());
    };
    assert!(
        line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
        "{}: bad location in {header:?}",
        path.display()
    );
    (format!("{line}:{col}"), substring.trim().to_owned())
}

#[test]
fn both_evaluators_reject_error_files_at_the_same_place() {
    require_program("guile", "guile-3.0");
    let dir = corpus_dir().join("errors");
    for name in scm_files(&dir) {
        let (location, substring) = expectation(&dir.join(&name));
        let file = format!("errors/{name}");
        for evaluator in ["native", "guile"] {
            let out = machines(&file, evaluator);
            let stderr = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{}",
                describe(&file, evaluator, &out)
            );
            let prefix = format!("offload-master: error: {file}:{location}:");
            let line = stderr
                .lines()
                .find(|line| line.starts_with(&prefix))
                .unwrap_or_else(|| {
                    panic!("expected {prefix:?}\n{}", describe(&file, evaluator, &out))
                });
            assert!(
                line.contains(&substring),
                "expected {substring:?} in {line:?}\n{}",
                describe(&file, evaluator, &out)
            );
        }
    }
}

// --- The Guile driver on its own ---

/// `guile --no-auto-compile -s offload-machines.scm eval FILE` in the corpus directory.
fn guile_driver(file: &str) -> Output {
    let guile = require_program("guile", "guile-3.0");
    let mut cmd = Command::new(guile);
    cmd.current_dir(corpus_dir())
        .env("HOME", TEST_HOME)
        .env("OFFLOAD_TEST_HOST", TEST_HOST)
        .arg("--no-auto-compile")
        .arg("-s")
        .arg(guile_script())
        .args(["eval", file]);
    run_with_input(&mut cmd, b"")
}

#[test]
fn guile_driver_output_is_pinned() {
    let expected: &[(&str, &str)] = &[
        ("07-empty-list.scm", "(machines)\n"),
        (
            "26-all-fields.scm",
            concat!(
                "(machines\n",
                " (machine (name \"full.example.org\") (port 2222) ",
                "(systems (\"x86_64-linux\" \"i686-linux\")) (user \"guix-offload\") ",
                "(private-key \"/etc/guix/offload/id_ed25519\") ",
                "(host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l root@full\") ",
                "(compression \"none\") (compression-level 6) ",
                "(daemon-socket \"/var/run/guix/daemon-socket/socket\") ",
                "(overload-threshold #f) (parallel-builds 8) (speed 12.5) ",
                "(features (\"kvm\" \"big-parallel\" \"benchmark\")) ",
                "(location \"26-all-fields.scm\" 1 6)))\n",
            ),
        ),
        (
            "22-strings-escapes.scm",
            concat!(
                "(machines\n",
                " (machine (name \"esc.lan\") (port 22) (systems (\"x86_64-linux\")) ",
                "(user \"offload\") (private-key \"/home/\u{e9}l\u{e8}ve/.ssh/id_ed25519\") ",
                "(host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEsc root@\\\"quoted\\\"\\\\backA;B\") ",
                "(compression \"zlib@openssh.com,zlib\") (compression-level 3) ",
                "(daemon-socket \"/var/guix/daemon-socket/socket\") ",
                "(overload-threshold 0.8) (parallel-builds 1) (speed 1.0) ",
                "(features (\"tab\\there\" \"new\\nline\" \"bell\\a\" \"r\\r\" \"nul\\x00\" ",
                "\"caf\u{e9}\" \"\u{1F600}\" \"\u{65E5}\u{672C}\" \"\u{FC}\")) ",
                "(location \"22-strings-escapes.scm\" 3 6)))\n",
            ),
        ),
    ];
    for &(file, want) in expected {
        let out = guile_driver(file);
        assert!(
            out.status.success(),
            "{}",
            describe(file, "guile driver", &out)
        );
        assert_eq!(text(&out.stdout), want, "{file}: driver output");
        assert_eq!(text(&out.stderr), "", "{file}: driver stderr");
    }
}

#[test]
fn guile_driver_warnings_are_pinned() {
    let out = guile_driver("31-tabs-and-crlf.scm");
    assert!(
        out.status.success(),
        "{}",
        describe("31", "guile driver", &out)
    );
    assert_eq!(
        text(&out.stderr),
        concat!(
            "31-tabs-and-crlf.scm:3:2: warning: The 'system' field is deprecated, please use 'systems' instead.\n",
            "31-tabs-and-crlf.scm:5:5: warning: machine 'tab2.lan' has neither 'systems' nor 'system'; it matches no build\n",
        )
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(systems (\"x86_64-linux\"))")
            && stdout.contains("(systems ())")
            && stdout.contains("(location \"31-tabs-and-crlf.scm\" 3 1)")
            && stdout.contains("(location \"31-tabs-and-crlf.scm\" 5 4)"),
        "{stdout}"
    );

    let out = guile_driver("05-single-record.scm");
    assert!(
        out.status.success(),
        "{}",
        describe("05", "guile driver", &out)
    );
    assert_eq!(text(&out.stdout), "(machines)\n");
    assert_eq!(
        text(&out.stderr),
        "warning: '05-single-record.scm' did not return a list of build machines; ignoring it\n"
    );

    let out = guile_driver("no-such-file.scm");
    assert!(
        out.status.success(),
        "{}",
        describe("missing", "guile driver", &out)
    );
    assert_eq!(text(&out.stdout), "(machines)\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn guile_driver_errors_are_located() {
    let dir = corpus_dir().join("errors");
    for name in scm_files(&dir) {
        let (location, substring) = expectation(&dir.join(&name));
        let file = format!("errors/{name}");
        let out = guile_driver(&file);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            describe(&file, "guile driver", &out)
        );
        let stderr = text(&out.stderr);
        let prefix = format!("error: {file}:{location}: ");
        assert!(
            stderr.starts_with(&prefix) && stderr.contains(&substring),
            "expected {prefix:?} and {substring:?}\n{}",
            describe(&file, "guile driver", &out)
        );
        assert_eq!(text(&out.stdout), "", "{file}: nothing on stdout");
    }
}

/// `--format scm` prints a machines.scm that both evaluators read back to
/// the same JSON; `--format nix` prints a Nix machines file with one line per
/// machine.
#[test]
fn scm_and_nix_output_round_trip() {
    require_program("guile", "guile-3.0");
    let tmp = tempfile::tempdir().unwrap();
    for &(file, machine_count, _) in VALID {
        let json = machines(file, "guile");
        let scm = run_with_input(
            offload("offload-master")
                .current_dir(corpus_dir())
                .env("HOME", TEST_HOME)
                .env("OFFLOAD_TEST_HOST", TEST_HOST)
                .args([
                    "machines",
                    "--file",
                    file,
                    "--format",
                    "scm",
                    "--evaluator",
                    "guile",
                ]),
            b"",
        );
        assert!(scm.status.success(), "{}", describe(file, "guile", &scm));
        let copy = tmp.path().join(file);
        std::fs::write(&copy, &scm.stdout).unwrap();
        for evaluator in ["native", "guile"] {
            let again = run_with_input(
                offload("offload-master").args([
                    "machines",
                    "--file",
                    copy.to_str().unwrap(),
                    "--format",
                    "json",
                    "--evaluator",
                    evaluator,
                ]),
                b"",
            );
            assert!(
                again.status.success(),
                "{}",
                describe(file, evaluator, &again)
            );
            assert_eq!(
                text(&again.stdout),
                text(&json.stdout),
                "{file}: scm output re-read by {evaluator}"
            );
        }
        let nix = run_with_input(
            offload("offload-master").args([
                "machines",
                "--file",
                copy.to_str().unwrap(),
                "--format",
                "nix",
                "--evaluator",
                "native",
            ]),
            b"",
        );
        assert!(nix.status.success(), "{}", describe(file, "native", &nix));
        // One line per machine; a machine without systems is left out with a comment.
        let lines = text(&nix.stdout)
            .lines()
            .filter(|l| l.starts_with("ssh://") || l.contains("is left out"))
            .count();
        assert_eq!(
            lines,
            machine_count,
            "{file}: one Nix machines line per machine\n{}",
            text(&nix.stdout)
        );
    }
}

/// `offload-master machines --evaluator native FILE` with its data
/// segment limited to `mib` MiB (`prlimit`): a file that makes the
/// evaluator allocate past it aborts instead of ending in an error.
fn machines_limited(file: &Path, mib: u64) -> Output {
    Command::new(offload_tests::require_program("prlimit", "util-linux"))
        .arg(format!("--data={}", mib << 20))
        .arg(offload_tests::bin("offload-master"))
        .args(["machines", "--evaluator", "native", "--file"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run offload-master machines")
}

#[test]
fn hostile_files_end_in_a_budget_error_within_64_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let strings: String = (0..16_000).map(|i| format!("\"s{i}\" ")).collect();
    // Every cons, cdr and reverse copies: a 120 KiB file asks for
    // hundreds of millions of list elements.
    for (name, body) in [
        ("cons", "(map (lambda (x) (cons x e)) e)"),
        ("cdr", "(map (lambda (x) (cdr e)) e)"),
        ("reverse", "(map (lambda (x) (reverse e)) e)"),
        ("splice", "(map (lambda (x) `(,x ,@e)) e)"),
        ("append-map", "(append-map (lambda (x) e) e)"),
        ("append", "(map (lambda (x) (append e e)) e)"),
    ] {
        let file = tmp.path().join(format!("{name}.scm"));
        std::fs::write(&file, format!("(define e (list {strings}))\n{body}\n")).unwrap();
        let out = machines_limited(&file, 64);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: {:?}: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("{}:2:", file.display()))
                && (stderr.contains("budget exceeded") || stderr.contains("longer than")),
            "{name}: {stderr}"
        );
    }
}
