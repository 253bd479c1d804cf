//! `offload-nix-hook` as nix-daemon 2.8 runs it (the `build-hook` setting,
//! `max-jobs = 0`), on a namespace LAN: `nix-build` through the daemon of
//! a small DAG (fan-out, fan-in, a two-output derivation) and of the
//! 30-derivation DAG, built entirely on agents discovered by `serve` —
//! agents on embedded stores, and agents each on a nix-daemon of its own;
//! machines of Nix's `builders` setting with mandatory features; a host
//! with only nix-daemon and sshd, used through `nix-daemon --stdio` over
//! SSH. `nix-store --verify --check-contents` is clean after each.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use offload_tests::agents::{lan_agent, wait_for};
use offload_tests::bin;
use offload_tests::lan::Lan;
use offload_tests::nixd::IsolatedNix;

const DAG: &str = r#"
let
  sh = name: script: extra: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  } // extra);
  base = sh "nh-base" "echo base > $out" {};
  a = sh "nh-a" "/bin/cat ${base} > $out; echo a >> $out" {};
  b = sh "nh-b" "/bin/cat ${base} > $out; echo b >> $out" {};
  two = sh "nh-two" "echo lib > $lib; echo ${a} > $out" { outputs = [ "out" "lib" ]; };
in sh "nh-top" "/bin/cat ${a} ${b} ${two.lib} > $out; echo ${two} >> $out" {}
"#;

/// The daemon host's side: a Nix store, a work directory, its key in
/// `etc`, and the ACL of masters (holding that key) the agents get.
struct Master {
    nix: IsolatedNix,
    work: tempfile::TempDir,
    etc: std::path::PathBuf,
    masters: std::path::PathBuf,
}

fn master() -> Master {
    let nix = IsolatedNix::new();
    let work = tempfile::tempdir().unwrap();
    let etc = work.path().join("etc");
    offload_tests::generate_key(&etc);
    let masters = work.path().join("masters-acl");
    offload_tests::authorize_key(&masters, &etc.join("signing-key.pub"));
    Master {
        nix,
        work,
        etc,
        masters,
    }
}

/// `nix-build` of the 30-derivation DAG through the daemon and our hook;
/// the 30 output paths.
fn build_dag30(
    lan: &Lan,
    nix: &IsolatedNix,
    work: &Path,
    etc: &Path,
    socket: &Path,
) -> Vec<String> {
    let out = nix_build(
        lan,
        nix,
        work,
        etc,
        socket,
        "",
        &offload_tests::guix_host::dag30(""),
    );
    let outputs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(outputs.len(), 30);
    outputs
}

/// nix-daemon on host 0 of `lan` with our hook as `build-hook`,
/// `max-jobs = 0` and `extra` configuration; then `nix-build` of `expr`
/// through it. The build's output (it must succeed).
fn nix_build(
    lan: &Lan,
    nix: &IsolatedNix,
    work: &Path,
    etc: &Path,
    socket: &Path,
    extra: &str,
    expr: &str,
) -> std::process::Output {
    nix_build_with(lan, nix, work, etc, socket, extra, expr, &[])
}

/// [`nix_build`] with more variables in the daemon's environment.
#[allow(clippy::too_many_arguments)]
fn nix_build_with(
    lan: &Lan,
    nix: &IsolatedNix,
    work: &Path,
    etc: &Path,
    socket: &Path,
    extra: &str,
    expr: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    // The hook as Nix runs it: `build-hook` names a program whose
    // basename is `offload-nix-hook`.
    let hook = work.join("bin/offload-nix-hook");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(bin("offload-master"), &hook).unwrap();
    let mut daemon = lan.command(0, offload_tests::require_program("nix-daemon", "nix-bin"));
    for (k, v) in nix.env() {
        daemon.env(k, v);
    }
    let config = format!(
        "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command\nbuild-hook = {}\nmax-jobs = 0\n{extra}",
        hook.display()
    );
    daemon
        .env("NIX_CONFIG", &config)
        .env("GUIX_CONFIGURATION_DIRECTORY", etc)
        .env("OFFLOAD_MASTER_SOCKET", socket)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("daemon.err")).unwrap());
    lan.spawn(daemon);
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(nix.socket()).is_ok()
        }),
        "nix-daemon did not listen"
    );
    let file = work.join("expr.nix");
    std::fs::write(&file, expr).unwrap();
    let out = nix
        .command("nix-build")
        .arg("--store")
        .arg(format!("unix://{}", nix.socket().display()))
        .args(["--max-jobs", "0", "--no-out-link"])
        .arg(&file)
        .output()
        .unwrap();
    let daemon_err = std::fs::read_to_string(work.join("daemon.err")).unwrap_or_default();
    assert!(
        out.status.success(),
        "nix-build failed:\n{}\ndaemon:\n{daemon_err}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether the agent `name`'s embedded store (under `work`) holds `path`.
fn agent_has(work: &Path, name: &str, path: &str) -> bool {
    offload_tests::agents::store_has(&work.join(name).join("store"), path)
}

#[test]
fn nix_build_through_our_hook_builds_everything_on_discovered_agents() {
    let lan = Lan::new(3);
    let Master {
        nix,
        work,
        etc,
        masters,
    } = master();
    let store_dir = nix.store_dir().display().to_string();
    let mut agents = Vec::new();
    for (i, name) in ["nix-a1", "nix-a2"].into_iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, work.path());
        cmd.args(["--systems", &offload_tests::current_system()])
            .args(["--store-dir", &store_dir, "--update-secs", "0.5"]);
        offload_tests::authorize_key(&etc.join("acl"), &keys.join("signing-key.pub"));
        agents.push(name);
        lan.spawn(cmd);
    }
    let socket = work.path().join("master.sock");
    offload_tests::agents::start_serve(&lan, 0, &etc, &socket);
    let linked = offload_tests::agents::wait_linked(&socket, 2);
    assert!(linked, "serve did not link to the agents");
    let out = nix_build(&lan, &nix, work.path(), &etc, &socket, "", DAG);
    let top = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let text = std::fs::read_to_string(&top).unwrap();
    assert!(text.contains("base") && text.contains("lib"), "{text}");
    nix.assert_verify_clean();
    // Built remotely: the top output is in an agent's store.
    let remote = agents.iter().any(|name| agent_has(work.path(), name, &top));
    assert!(remote, "{top} was not built on an agent");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("offloading"), "{log}");
}

#[test]
fn machines_of_the_builders_setting_are_used_with_their_mandatory_features() {
    let lan = Lan::new(3);
    let Master {
        nix,
        work,
        etc,
        masters,
    } = master();
    let store_dir = nix.store_dir().display().to_string();
    let system = offload_tests::current_system();
    // nix-a1 is discovered; nix-big advertises nothing: only the builders
    // setting names it, and only builds requiring `big` may go there.
    for (i, name) in ["nix-a1", "nix-big"].into_iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, work.path());
        cmd.args(["--systems", &system, "--store-dir", &store_dir])
            .args(["--parallel-builds", "2", "--speed", "1"]);
        if name == "nix-big" {
            cmd.args(["--features", "big", "--no-advertise"]);
        }
        offload_tests::authorize_key(&etc.join("acl"), &keys.join("signing-key.pub"));
        lan.spawn(cmd);
    }
    let big_host = lan.hosts()[2].ip;
    // Ten times as fast: without its mandatory feature every build would go there.
    let builders = format!("builders = ssh://root@{big_host} {system} - 2 10 big big\n");
    // No serve: the builders setting makes the hook look by itself.
    let socket = work.path().join("no-serve.sock");
    let expr = r#"
let
  sh = name: script: extra: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  } // extra);
in [
  (sh "nh-big" "echo big > $out" { requiredSystemFeatures = [ "big" ]; })
  (sh "nh-plain" "echo plain > $out" {})
]
"#;
    let out = nix_build(&lan, &nix, work.path(), &etc, &socket, &builders, expr);
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let (big, plain) = (&paths[0], &paths[1]);
    assert!(
        agent_has(work.path(), "nix-big", big),
        "{big} not built on the builders machine"
    );
    assert!(
        !agent_has(work.path(), "nix-big", plain),
        "{plain} went to a machine that takes only `big` builds"
    );
    assert!(agent_has(work.path(), "nix-a1", plain));
    nix.assert_verify_clean();
}

#[test]
fn a_nix_machine_without_an_agent_is_used_through_its_daemon_over_ssh() {
    let lan = Lan::new(2);
    let nix = IsolatedNix::new();
    let remote = IsolatedNix::new();
    let work = tempfile::tempdir().unwrap();
    let etc = work.path().join("etc");
    offload_tests::generate_key(&etc);
    // Host 1 has sshd and Nix, no agent. Its sessions see its own store
    // at the master's store path (a bind mount in sshd's namespace), as a
    // second machine would.
    std::fs::create_dir_all(remote.store_dir()).unwrap();
    std::fs::create_dir_all(nix.store_dir()).unwrap();
    let sshd = offload_tests::sshd::Sshd::start_with_binds(
        &lan,
        1,
        &work.path().join("sshd"),
        &[(remote.store_dir(), nix.store_dir())],
    );
    let script = work.path().join("remote-nix-daemon");
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in nix.env() {
        let v = if k == "NIX_STORE_DIR" {
            nix.store_dir().into_os_string()
        } else if k == "NIX_CONFIG" {
            v
        } else {
            // Its own state, logs and configuration.
            std::ffi::OsString::from(v.to_string_lossy().replace(
                &nix.root().display().to_string(),
                &remote.root().display().to_string(),
            ))
        };
        text.push_str(&format!("export {k}='{}'\n", v.to_string_lossy()));
    }
    text.push_str("exec nix-daemon --stdio\n");
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let system = offload_tests::current_system();
    let host_key = data_encoding::BASE64.encode(sshd.host_key.trim().as_bytes());
    let builders = format!(
        "builders = ssh://root@{}:{} {system} {} 1 1 - - {host_key}\n",
        lan.hosts()[1].ip,
        offload_tests::sshd::PORT,
        sshd.client_key.display()
    );
    let expr = r#"
derivation {
  name = "nh-daemon-only";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo built by a bare nix-daemon; echo bare > $out" ];
}
"#;
    let socket = work.path().join("no-serve.sock");
    let extra = builders;
    // The hook's environment comes from the daemon's.
    let out = nix_build_with(
        &lan,
        &nix,
        work.path(),
        &etc,
        &socket,
        &extra,
        expr,
        &[("OFFLOAD_REMOTE_NIX_DAEMON", script.display().to_string())],
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "bare\n");
    // Built there: its own database has it.
    let db = offload_store::db::Db::open(&remote.db()).unwrap();
    assert!(
        db.is_valid(&offload_core::store_path::StorePath::parse(&path).unwrap())
            .unwrap()
    );
    nix.assert_verify_clean();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("over SSH (the machine's daemon)"), "{log}");
}

#[test]
fn nix_build_of_a_30_derivation_dag_runs_entirely_on_three_agents() {
    let lan = Lan::new(4);
    let Master {
        nix,
        work,
        etc,
        masters,
    } = master();
    let store_dir = nix.store_dir().display().to_string();
    let names = ["dag-a1", "dag-a2", "dag-a3"];
    for (i, name) in names.into_iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, work.path());
        cmd.args(["--systems", &offload_tests::current_system()])
            .args(["--store-dir", &store_dir, "--update-secs", "0.5"])
            .args(["--parallel-builds", "2"]);
        if i == 1 {
            cmd.args(["--features", "big"]);
        }
        offload_tests::authorize_key(&etc.join("acl"), &keys.join("signing-key.pub"));
        lan.spawn(cmd);
    }
    let socket = work.path().join("master.sock");
    offload_tests::agents::start_serve(&lan, 0, &etc, &socket);
    assert!(
        offload_tests::agents::wait_linked(&socket, 3),
        "serve did not link to the agents"
    );
    let outputs = build_dag30(&lan, &nix, work.path(), &etc, &socket);
    let mut used = std::collections::BTreeSet::new();
    for o in &outputs {
        let on: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| agent_has(work.path(), n, o))
            .collect();
        assert!(!on.is_empty(), "{o} was not built on an agent");
        used.extend(on);
        if o.ends_with("-feat") {
            assert!(agent_has(work.path(), "dag-a2", o), "feat needs `big`");
        }
    }
    assert_eq!(used.len(), 3, "{used:?}");
    nix.assert_verify_clean();
}

/// An agent on host `i` whose store is a nix-daemon of its own: the
/// host's store is seen at the master's store path (a bind mount in its
/// mount namespace). Returns that store.
fn agent_on_nix_daemon(
    lan: &Lan,
    i: usize,
    name: &str,
    masters: &Path,
    work: &Path,
    master_store: &Path,
    features: &str,
) -> (IsolatedNix, std::path::PathBuf) {
    let own = IsolatedNix::new();
    std::fs::create_dir_all(own.store_dir()).unwrap();
    let keys = work.join(name).join("keys");
    offload_tests::generate_key(&keys);
    let mut script = format!(
        "set -e\nmount --bind '{}' '{}'\n",
        own.store_dir().display(),
        master_store.display()
    );
    for (k, v) in own.env() {
        let v = if k == "NIX_STORE_DIR" {
            master_store.display().to_string()
        } else if k == "NIX_CONFIG" && features.contains("big") {
            // Its daemon must offer the feature the agent advertises.
            format!("{}system-features = big\n", v.to_string_lossy())
        } else {
            v.to_string_lossy().into_owned()
        };
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    let socket = own.socket();
    let log = work.join(format!("{name}-nix-daemon.log"));
    script.push_str(&format!("nix-daemon > '{}' 2>&1 &\n", log.display()));
    script.push_str(&format!(
        "i=0; while [ ! -S '{}' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n",
        socket.display()
    ));
    let args = [
        "run".to_owned(),
        "--name".into(),
        name.into(),
        "--key".into(),
        keys.join("signing-key.sec").display().to_string(),
        "--acl".into(),
        masters.display().to_string(),
        "--store".into(),
        format!("nix-daemon:{}", socket.display()),
        "--store-dir".into(),
        master_store.display().to_string(),
        "--state-dir".into(),
        work.join(name).join("state").display().to_string(),
        "--interface".into(),
        lan.hosts()[i].iface.clone(),
        "--systems".into(),
        offload_tests::current_system(),
        "--parallel-builds".into(),
        "2".into(),
        "--update-secs".into(),
        "0.5".into(),
    ];
    script.push_str(&format!("exec '{}'", bin("offload-agent").display()));
    for a in args
        .iter()
        .map(String::as_str)
        .chain(features.split_whitespace())
    {
        script.push_str(&format!(" '{a}'"));
    }
    script.push('\n');
    let mut cmd = lan.command(i, "unshare");
    cmd.args(["-m", "--propagation", "private", "/bin/sh", "-c", &script])
        .env("RUST_LOG", "warn");
    lan.spawn(cmd);
    (own, keys)
}

#[test]
fn agents_on_their_own_nix_daemons_build_the_30_derivation_dag() {
    let lan = Lan::new(4);
    let Master {
        nix,
        work,
        etc,
        masters,
    } = master();
    std::fs::create_dir_all(nix.store_dir()).unwrap();
    let mut stores = Vec::new();
    for i in 1..=3 {
        let features = if i == 2 { "--features big" } else { "" };
        let (own, keys) = agent_on_nix_daemon(
            &lan,
            i,
            &format!("nd-{i}"),
            &masters,
            work.path(),
            &nix.store_dir(),
            features,
        );
        offload_tests::authorize_key(&etc.join("acl"), &keys.join("signing-key.pub"));
        stores.push(own);
    }
    let socket = work.path().join("master.sock");
    offload_tests::agents::start_serve(&lan, 0, &etc, &socket);
    assert!(
        offload_tests::agents::wait_linked(&socket, 3),
        "serve did not link to the agents"
    );
    let outputs = build_dag30(&lan, &nix, work.path(), &etc, &socket);
    let mut used = std::collections::BTreeSet::new();
    for o in &outputs {
        let p = offload_core::store_path::StorePath::parse(o).unwrap();
        let on: Vec<usize> = stores
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                offload_store::db::Db::open(&s.db())
                    .and_then(|db| db.is_valid(&p))
                    .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .collect();
        assert!(!on.is_empty(), "{o} was not built by an agent's nix-daemon");
        used.extend(on);
    }
    assert_eq!(used.len(), 3, "{used:?}");
    nix.assert_verify_clean();
}
