//! `deploy/guix-dispatcher`, the program guix-daemon runs as `$GUIX`:
//! `offload` with the hook's four arguments goes to `offload-master hook`,
//! everything else to the real `guix`, found without running itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use offload_tests::guix_host::dispatcher;

/// A fake `guix` in `dir` that prints its arguments.
fn fake_guix(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let guix = dir.join("guix");
    std::fs::write(&guix, "#!/bin/sh\necho \"real guix: $*\"\n").unwrap();
    std::fs::set_permissions(&guix, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(path: &str, envs: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(dispatcher())
        .args(args)
        .env_clear()
        .env("PATH", path)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn other_subcommands_go_to_the_real_guix_and_never_back_to_the_dispatcher() {
    let tmp = tempfile::tempdir().unwrap();
    // The dispatcher installed as `guix` first on PATH, the real one after.
    let first = tmp.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    std::os::unix::fs::symlink(dispatcher().canonicalize().unwrap(), first.join("guix")).unwrap();
    fake_guix(&tmp.path().join("real"));
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        first.display(),
        tmp.path().join("real").display()
    );
    let (code, out, _) = run(&path, &[], &["authenticate", "sign", "key", "hash"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "real guix: authenticate sign key hash\n");
    // `guix offload test` is Guix's, not the hook (five arguments only).
    let (_, out, _) = run(&path, &[], &["offload", "test"]);
    assert_eq!(out, "real guix: offload test\n");
    // OFFLOAD_REAL_GUIX wins.
    fake_guix(&tmp.path().join("other"));
    let other = tmp.path().join("other/guix").display().to_string();
    let (_, out, _) = run(
        &path,
        &[("OFFLOAD_REAL_GUIX", &other)],
        &["gc", "--list-busy"],
    );
    assert_eq!(out, "real guix: gc --list-busy\n");
    // No real guix at all: a clear error, no loop.
    let lonely = format!("{}:/usr/bin:/bin", first.display());
    let (code, _, err) = run(&lonely, &[], &["substitute", "--query"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no real `guix' found"), "{err}");
}

#[test]
fn the_hook_form_goes_to_offload_master_hook() {
    // A stand-in offload-master that prints how it was called.
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("offload-master");
    std::fs::write(&fake, "#!/bin/sh\necho \"offload-master: $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, _) = run(
        "/usr/bin:/bin",
        &[("OFFLOAD_MASTER", &fake.display().to_string())],
        &["offload", "x86_64-linux", "3600", "1", "86400"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(out, "offload-master: hook x86_64-linux 3600 1 86400\n");
}
