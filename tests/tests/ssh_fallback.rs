//! The SSH fallback on a namespace LAN: a static machine whose agent
//! cannot be reached over QUIC (a firewall rule in its host's namespace
//! drops UDP 7441) is still used, through a real sshd (`ssh root@HOST offload-agent stdio`, its host key pinned from
//! machines.scm); a wrong host key is refused, naming the machine and key.

use std::time::Duration;

use offload_tests::agents::{Drvs, lan_agent, runtime};
use offload_tests::guix_host::GuixHost;
use offload_tests::lan::Lan;
use offload_tests::sshd::{PORT, Sshd};
use offload_tests::{bin, run_ok};

/// `offload-master status --json` on the daemon host, looking by itself.
fn status(s: &Setup) -> std::process::Output {
    s.lan
        .command(0, bin("offload-master"))
        .env("RUST_LOG", "warn")
        .args(["status", "--json", "--discover-ms", "200", "--socket"])
        .arg(s.host.dir().join("none.sock"))
        .arg("--machines")
        .arg(s.host.etc().join("machines.scm"))
        .arg("--acl")
        .arg(s.host.etc().join("acl"))
        .arg("--key")
        .arg(s.host.etc().join("signing-key.sec"))
        .env("OFFLOAD_REMOTE_AGENT", &s.remote)
        .output()
        .unwrap()
}

struct Setup {
    lan: Lan,
    host: GuixHost,
    sshd: Sshd,
    remote: String,
    _work: tempfile::TempDir,
}

/// Host 0 runs the daemon; host 1 an agent reachable only over SSH, named
/// in machines.scm with `host_key`.
fn setup(host_key: Option<&str>) -> Setup {
    let lan = Lan::new(2);
    let mut host = GuixHost::new(&lan, 0);
    let work = tempfile::tempdir().unwrap();
    let masters = work.path().join("masters-acl");
    offload_tests::authorize_key(&masters, &host.etc().join("signing-key.pub"));
    let system = offload_tests::current_system();
    let (mut agent, keys) = lan_agent(&lan, 1, "ssh-only", &masters, work.path());
    agent.args(["--systems", &system, "--no-advertise"]);
    host.authorize(&[&keys.join("signing-key.pub")]);
    lan.spawn(agent);
    // QUIC blocked: the agent listens on UDP 7441, which its host drops.
    let iptables = offload_tests::require_program("iptables", "iptables");
    run_ok(
        lan.command(1, iptables)
            .args(["-A", "INPUT", "-p", "udp", "--dport", "7441", "-j", "DROP"]),
        b"",
    );
    let sshd = Sshd::start(&lan, 1, &work.path().join("sshd"));
    // What ssh runs on the agent's host: `offload-agent stdio`, joining
    // the running agent (its state directory) to share its slots and store.
    let dir = work.path().join("ssh-only");
    let remote = format!(
        "{} stdio --key {} --acl {} --store embedded:{} --state-dir {} --systems {system}",
        bin("offload-agent").display(),
        keys.join("signing-key.sec").display(),
        masters.display(),
        dir.join("store").display(),
        dir.join("state").display(),
    );
    host.set_env("OFFLOAD_REMOTE_AGENT", &remote);
    let remote_agent = remote.clone();
    host.set_env("OFFLOAD_DISCOVER_MS", "200");
    let ip = lan.hosts()[1].ip;
    let pinned = host_key.map_or_else(|| sshd.host_key.trim().to_owned(), str::to_owned);
    std::fs::write(
        host.etc().join("machines.scm"),
        format!(
            r#"(list (build-machine (name "{ip}") (port {PORT}) (systems (list "{system}")) (user "root") (private-key "{}") (host-key "{pinned}")))"#,
            sshd.client_key.display()
        ),
    )
    .unwrap();
    Setup {
        lan,
        host,
        sshd,
        remote: remote_agent,
        _work: work,
    }
}

#[test]
fn a_machine_whose_quic_is_unreachable_builds_over_ssh() {
    let rt = runtime();
    let s = setup(None);
    let drvs = Drvs::new();
    let drv = drvs.sh("via-ssh", "echo built behind a firewall; echo ok > $out");
    let closure = drvs.closure(&[&drv]);
    rt.block_on(async {
        let stream = drvs.signed_export(&closure, &s.host.key).await;
        s.host.seed(&stream).await;
    });
    let end = rt.block_on(s.host.offload(&drv, &[], Duration::from_secs(60)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    assert!(s.host.has(&s.host.outputs_of(&drv)["out"]));
    let chatter = end.chatter.join("\n");
    assert!(chatter.contains("over SSH"), "{chatter}");
    assert!(String::from_utf8_lossy(&end.log).contains("behind a firewall"));
    // `status` says how the machine is reached.
    let out = status(&s);
    let machines: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let m = &machines[0];
    assert_eq!(m["health"], "ok", "{m:#}");
    assert_eq!(m["transport"], "SSH", "{m:#}");
    let _ = &s.sshd;
}

#[test]
fn a_wrong_host_key_is_refused_naming_the_machine_and_the_key() {
    let rt = runtime();
    // Another host's key pinned for this machine.
    let other = tempfile::tempdir().unwrap();
    run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(other.path().join("k")),
        b"",
    );
    let wrong = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let wrong = wrong.trim().to_owned();
    let s = setup(Some(&wrong));
    let drvs = Drvs::new();
    let drv = drvs.sh("not-via-ssh", "echo no > $out");
    let closure = drvs.closure(&[&drv]);
    rt.block_on(async {
        let stream = drvs.signed_export(&closure, &s.host.key).await;
        s.host.seed(&stream).await;
    });
    let system = offload_tests::current_system();
    let mut hook = s.host.spawn_hook([&system, "0", "1", "0"]);
    let line = offload_tests::guix_host::request_line(false, &system, &drv, &[]);
    // Never trusted: the machine is not used (postponed, as for any
    // machine that cannot be reached safely).
    assert_eq!(hook.ask(&line), "postpone");
    hook.close_stdin();
    let _ = hook.finish();
    let out = status(&s);
    let text = String::from_utf8_lossy(&out.stdout);
    let ip = s.lan.hosts()[1].ip.to_string();
    assert!(text.contains(&ip), "{text}");
    let key_part = wrong.split_whitespace().nth(1).unwrap();
    assert!(
        text.contains("impostor") && text.contains(key_part),
        "{text}"
    );
}
