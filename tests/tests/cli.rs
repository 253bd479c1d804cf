//! The operator commands as a user meets them: refusals, error messages
//! that say what to do, exit codes, and the self-check.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use offload_tests::{key_and_acl, offload, run_ok, run_with_input};

fn master(args: &[&str], stdin: &[u8]) -> Output {
    run_with_input(offload("offload-master").args(args), stdin)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

const H: &str = "a56420a104661becbfeed24046113ff3e0503f7b33f5a449141c4e4a6d89cbb7";

#[test]
fn self_check_passes_everything_here() {
    let out = master(&["self-check", "--count", "24"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("self-check: 3 passed, 0 failed, 0 skipped"),
        "{text}"
    );
}

#[test]
fn key_generate_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    run_ok(
        offload("offload-master").args(["key", "generate", "--dir", path(&dir)]),
        b"",
    );
    let before = fs::read(dir.join("signing-key.sec")).unwrap();
    let out = master(&["key", "generate", "--dir", path(&dir)], b"");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("key pair exists under"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(dir.join("signing-key.sec")).unwrap(), before);
}

#[test]
fn key_sign_refuses_a_readable_secret_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    run_ok(
        offload("offload-master").args(["key", "generate", "--dir", path(&dir)]),
        b"",
    );
    let sec = dir.join("signing-key.sec");
    fs::set_permissions(&sec, fs::Permissions::from_mode(0o644)).unwrap();
    let out = master(&["key", "sign", "--key", path(&sec), "--hash", H], b"");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("should be secret") && stderr(&out).contains("chmod 0400"),
        "{}",
        stderr(&out)
    );
    let out = master(&["key", "sign", "--key", path(&sec), "--hash", "abc"], b"");
    assert!(stderr(&out).contains("64 digits"), "{}", stderr(&out));
}

#[test]
fn key_verify_names_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, acl) = (tmp.path().join("k"), tmp.path().join("acl"));
    key_and_acl(&dir, &acl);
    let sig = tmp.path().join("sig");
    fs::write(
        &sig,
        run_ok(
            offload("offload-master").args([
                "key",
                "sign",
                "--key",
                path(&dir.join("signing-key.sec")),
                "--hash",
                H,
            ]),
            b"",
        ),
    )
    .unwrap();
    let ok = master(
        &[
            "key",
            "verify",
            "--acl",
            path(&acl),
            "--hash",
            H,
            path(&sig),
        ],
        b"",
    );
    assert!(ok.status.success());
    assert_eq!(ok.stdout, b"valid\n");

    let other_hash = H.replace('a', "b");
    let cases: [(&str, &Path, &str); 3] = [
        (&other_hash, &sig, "hash-mismatch"),
        (H, &acl, "corrupt"),
        (H, &sig, "unauthorized"),
    ];
    for (i, (hash, file, word)) in cases.into_iter().enumerate() {
        let acl_for_case = if i == 2 {
            tmp.path().join("empty-acl")
        } else {
            acl.clone()
        };
        if i == 2 {
            fs::write(&acl_for_case, b"(acl)\n").unwrap();
        }
        let out = master(
            &[
                "key",
                "verify",
                "--acl",
                path(&acl_for_case),
                "--hash",
                hash,
                path(file),
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "case {word}");
        assert!(out.stdout.is_empty(), "case {word}: nothing on stdout");
        assert!(stderr(&out).contains(word), "case {word}: {}", stderr(&out));
    }
    // Text that does not parse says why, not that a part is missing.
    let deep = tmp.path().join("deep.sig");
    fs::write(&deep, format!("{}{}", "(".repeat(100), ")".repeat(100))).unwrap();
    let out = master(
        &[
            "key",
            "verify",
            "--acl",
            path(&acl),
            "--hash",
            H,
            path(&deep),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nested deeper than")
            && !stderr(&out).contains("no data or public-key part"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn key_authorize_is_idempotent_and_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, acl) = (tmp.path().join("k"), tmp.path().join("acl"));
    key_and_acl(&dir, &acl);
    let once = fs::read(&acl).unwrap();
    let public = fs::read(dir.join("signing-key.pub")).unwrap();
    run_ok(
        offload("offload-master").args(["key", "authorize", "--acl", path(&acl)]),
        &public,
    );
    assert_eq!(
        fs::read(&acl).unwrap(),
        once,
        "authorizing twice adds nothing"
    );
    assert_eq!(
        fs::metadata(&acl).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let out = master(
        &["key", "authorize", "--acl", path(&acl)],
        b"(private-key (ecc))",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not denote a public key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&acl).unwrap(), once);
}

#[test]
fn archive_commands_refuse_bad_input_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, acl) = (tmp.path().join("k"), tmp.path().join("acl"));
    key_and_acl(&dir, &acl);
    let store = tmp.path().join("store");
    let item = store.join("0123456789abcdfghijklmnpqrsvwxyz-item");
    fs::create_dir_all(&item).unwrap();
    fs::write(item.join("f"), b"data").unwrap();
    let sec = dir.join("signing-key.sec");
    let stream = run_ok(
        offload("offload-master").args(["archive", "export", "--key", path(&sec), path(&item)]),
        b"",
    );

    // Trailing bytes after the end marker.
    let mut extended = stream.clone();
    extended.extend_from_slice(b"junk");
    let out = master(&["archive", "verify", "--acl", path(&acl)], &extended);
    assert!(
        !out.status.success() && stderr(&out).contains("trailing data"),
        "{}",
        stderr(&out)
    );
    let to = tmp.path().join("in");
    let out = master(
        &["archive", "import", "--acl", path(&acl), "--to", path(&to)],
        &extended,
    );
    assert!(
        !out.status.success() && stderr(&out).contains("trailing data"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(&to).unwrap().count(), 0);

    // The wrong logical store directory.
    let out = master(
        &[
            "archive",
            "import",
            "--acl",
            path(&acl),
            "--to",
            path(&to),
            "--store-dir",
            "/nix/store",
        ],
        &stream,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not in the store directory /nix/store"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(&to).unwrap().count(), 0);

    // Not a store item name.
    let out = master(
        &["archive", "export", "--key", path(&sec), path(&store)],
        b"",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("not a store item"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    // Restore into an existing path leaves it alone.
    let nar = run_ok(
        offload("offload-master").args(["archive", "dump", path(&item)]),
        b"",
    );
    let out = master(&["archive", "restore", path(&item)], &nar);
    assert!(
        !out.status.success() && stderr(&out).contains("already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(item.join("f")).unwrap(), b"data");
    // A truncated NAR restores nothing.
    let dest = tmp.path().join("restored");
    let out = master(&["archive", "restore", path(&dest)], &nar[..nar.len() - 9]);
    assert!(!out.status.success());
    assert!(!dest.exists());
    assert_eq!(
        fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        0
    );
}

#[test]
fn help_explains_the_commands() {
    let out = master(&["--help"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["key", "archive", "self-check"] {
        assert!(text.contains(word), "{text}");
    }
    let out = master(&["archive", "import", "--help"], b"");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("nothing of it is kept"), "{help}");
    assert!(help.contains("local:STATE_DIR"), "{help}");
    let out = offload_tests::offload("offload-agent")
        .args(["build", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("OUTPUT-NAME PATH") && help.contains("100 if a build failed"),
        "{help}"
    );
}

#[test]
fn why_not_explains_each_machine_and_the_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let machines = tmp.path().join("machines.scm");
    fs::write(
        &machines,
        r#"(list (build-machine (name "kvm-box") (systems (list "x86_64-linux")) (user "u") (host-key "ssh-ed25519 A") (features (list "kvm" "big-parallel")))
      (build-machine (name "plain-box") (systems (list "x86_64-linux")) (user "u") (host-key "ssh-ed25519 A"))
      (build-machine (name "arm-box") (systems (list "aarch64-linux")) (user "u") (host-key "ssh-ed25519 A")))"#,
    )
    .unwrap();
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/core/vectors/drv");
    let drv = vectors.join("needs-kvm.drv");
    let out = run_ok(
        offload("offload-master").args(["why-not", path(&drv), "--machines", path(&machines)]),
        b"",
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "kvm-box: usable (estimated 60.0 s)\nplain-box: lacks required features: big-parallel, kvm\narm-box: does not build for this system\ndecision: accept kvm-box\n"
    );
    let hello = vectors.join("hello.drv");
    let out = run_ok(
        offload("offload-master").args([
            "why-not",
            path(&hello),
            "--machines",
            path(&tmp.path().join("none.scm")),
        ]),
        b"",
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("no build machines") && text.contains("decision: decline"),
        "{text}"
    );
    let out = master(
        &["why-not", path(&machines), "--machines", path(&machines)],
        b"",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("not a derivation"),
        "{}",
        stderr(&out)
    );
}
