//! Benchmark (prints figures, asserts nothing): the 30-derivation DAG on
//! the same three namespace hosts, through our `offload-nix-hook` (agents
//! discovered by a warm `serve`, QUIC) and through Nix 2.8's own
//! `build-remote` (`ssh-ng://`, each host's own nix-daemon behind a real
//! sshd whose sessions see their own store at the master's store path),
//! one run after the other (root).
//!
//! Builders do nothing (`OFFLOAD_BENCH_WORK` seconds of sleep each, 0 by
//! default), so the wall time is the offloading overhead; it is printed
//! per derivation and as a ratio (ours ÷ Nix's; target ≤ 0.2). Also the
//! bytes that crossed the master's interface per derivation.

use std::process::Command;
use std::time::{Duration, Instant};

use offload_tests::agents::lan_agent;
use offload_tests::bin;
use offload_tests::guix_host::dag30;
use offload_tests::lan::Lan;
use offload_tests::nixd::IsolatedNix;
use offload_tests::sshd::{PORT, Sshd};

/// Bytes received and sent by host `i`'s interface.
fn wire_bytes(lan: &Lan, i: usize) -> u64 {
    let h = &lan.hosts()[i];
    ["rx_bytes", "tx_bytes"]
        .iter()
        .map(|f| {
            let out = Command::new("ip")
                .args(["netns", "exec", &h.ns, "cat"])
                .arg(format!("/sys/class/net/{}/statistics/{f}", h.iface))
                .output()
                .expect("ip netns exec cat");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum()
}

/// `nix-store -r` of the DAG's derivations in single-user mode on host 0,
/// with `options`; the wall time.
fn realise(
    lan: &Lan,
    nix: &IsolatedNix,
    drvs: &[String],
    options: &[(&str, String)],
    env: &[(&str, String)],
) -> Duration {
    let mut cmd = lan.command(0, offload_tests::require_program("nix-store", "nix-bin"));
    for (k, v) in nix.env() {
        cmd.env(k, v);
    }
    cmd.env_remove("NIX_REMOTE").args(["-r", "--max-jobs", "0"]);
    for (k, v) in options {
        cmd.args(["--option", k, v]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(drvs);
    let t = Instant::now();
    let out = cmd.output().expect("nix-store -r");
    let took = t.elapsed();
    if std::env::var_os("OFFLOAD_BENCH_VERBOSE").is_some() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(
        out.status.success(),
        "nix-store -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[allow(clippy::print_stdout)]
fn main() {
    assert!(
        offload_tests::running_as_root(),
        "this benchmark builds network namespaces: run it as root"
    );
    let work: f64 = std::env::var("OFFLOAD_BENCH_WORK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let system = offload_tests::current_system();
    let lan = Lan::new(4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two masters with fresh stores (one per run), the same DAG in each.
    let ours = IsolatedNix::new();
    let theirs = IsolatedNix::new();
    let expr = dag30(&format!("/bin/sleep {work};"));
    let drv_list = |nix: &IsolatedNix| -> Vec<String> {
        std::fs::write(d.join("dag.nix"), &expr).unwrap();
        nix.run(
            "nix-instantiate",
            &[&d.join("dag.nix").display().to_string()],
        )
        .lines()
        .map(str::to_owned)
        .collect()
    };
    let (ours_drvs, theirs_drvs) = (drv_list(&ours), drv_list(&theirs));
    std::fs::create_dir_all(theirs.store_dir()).unwrap();

    // Our side: keys, agents on hosts 1-3, serve on host 0.
    let etc = d.join("etc");
    offload_tests::generate_key(&etc);
    let masters = d.join("masters-acl");
    offload_tests::authorize_key(&masters, &etc.join("signing-key.pub"));
    let mut builders = Vec::new();
    for i in 1..=3 {
        let name = format!("bench{i}");
        let (mut cmd, keys) = lan_agent(&lan, i, &name, &masters, d);
        cmd.args([
            "--systems",
            &system,
            "--parallel-builds",
            "2",
            "--speed",
            "1",
        ])
        .args(["--store-dir", &ours.store_dir().display().to_string()]);
        if i == 2 {
            cmd.args(["--features", "big"]);
        }
        offload_tests::authorize_key(&etc.join("acl"), &keys.join("signing-key.pub"));
        lan.spawn(cmd);
        // Nix's side on the same host: its own store seen at the master's
        // store path by every SSH session, and a nix-daemon it runs.
        let own = IsolatedNix::new();
        std::fs::create_dir_all(own.store_dir()).unwrap();
        let sshd = Sshd::start_with_binds(
            &lan,
            i,
            &d.join(format!("sshd{i}")),
            &[(own.store_dir(), theirs.store_dir())],
        );
        let script = d.join(format!("remote-nix-daemon{i}"));
        let mut text = String::from("#!/bin/sh\n");
        for (k, v) in theirs.env() {
            let v = v.to_string_lossy().into_owned();
            let v = if k == "NIX_STORE_DIR" {
                v
            } else if k == "NIX_CONFIG" {
                // The master's paths are unsigned; host 2 builds `big`.
                let features = if i == 2 {
                    "system-features = big\n"
                } else {
                    ""
                };
                format!("{v}require-sigs = false\n{features}")
            } else {
                v.replace(
                    &theirs.root().display().to_string(),
                    &own.root().display().to_string(),
                )
            };
            text.push_str(&format!("export {k}='{v}'\n"));
        }
        text.push_str("exec nix-daemon \"$@\"\n");
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let features = if i == 2 { "big" } else { "-" };
        builders.push(format!(
            "ssh-ng://root@{}?remote-program={} {system} {} 2 1 {features}",
            lan.hosts()[i].ip,
            script.display(),
            sshd.client_key.display()
        ));
        let known = d.join("known_hosts");
        let mut all = std::fs::read_to_string(&known).unwrap_or_default();
        all.push_str(&format!(
            "[{}]:{PORT} {}\n",
            lan.hosts()[i].ip,
            sshd.host_key.trim()
        ));
        std::fs::write(&known, all).unwrap();
        std::mem::forget(own);
    }
    let socket = d.join("master.sock");
    offload_tests::agents::start_serve(&lan, 0, &etc, &socket);
    assert!(
        offload_tests::agents::wait_linked(&socket, 3),
        "serve did not link to the agents"
    );
    let hook = d.join("bin/offload-nix-hook");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(bin("offload-master"), &hook).unwrap();

    let before = wire_bytes(&lan, 0);
    let ours_time = realise(
        &lan,
        &ours,
        &ours_drvs,
        &[("build-hook", hook.display().to_string())],
        &[
            ("GUIX_CONFIGURATION_DIRECTORY", etc.display().to_string()),
            ("OFFLOAD_MASTER_SOCKET", socket.display().to_string()),
            ("RUST_LOG", "warn".into()),
        ],
    );
    let ours_bytes = wire_bytes(&lan, 0) - before;
    let before = wire_bytes(&lan, 0);
    let ssh_opts = format!(
        "-o UserKnownHostsFile={} -o BatchMode=yes -o StrictHostKeyChecking=yes -p {PORT}",
        d.join("known_hosts").display()
    );
    let theirs_time = realise(
        &lan,
        &theirs,
        &theirs_drvs,
        &[("builders", builders.join(";"))],
        &[("NIX_SSHOPTS", ssh_opts)],
    );
    let theirs_bytes = wire_bytes(&lan, 0) - before;
    let n = ours_drvs.len() as f64;
    println!("30-derivation DAG on 3 namespace hosts, builders sleeping {work} s:");
    println!(
        "  our nix-hook (QUIC, serve warm)   {:.2} s wall, {:.0} ms per derivation, {:.1} KiB on the wire per derivation",
        ours_time.as_secs_f64(),
        ours_time.as_secs_f64() * 1000.0 / n,
        ours_bytes as f64 / 1024.0 / n
    );
    println!(
        "  Nix 2.8 build-remote (ssh-ng)     {:.2} s wall, {:.0} ms per derivation, {:.1} KiB on the wire per derivation",
        theirs_time.as_secs_f64(),
        theirs_time.as_secs_f64() * 1000.0 / n,
        theirs_bytes as f64 / 1024.0 / n
    );
    let builders_time = work * n;
    println!(
        "  overhead ratio (wall − builders' own time), ours ÷ Nix's: {:.3} (target ≤ 0.2)",
        (ours_time.as_secs_f64() - builders_time).max(0.0)
            / (theirs_time.as_secs_f64() - builders_time).max(f64::MIN_POSITIVE)
    );
}
