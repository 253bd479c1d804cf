//! Discovery on a real LAN of network namespaces: agents advertise with
//! mdns-sd, `offload-master status` browses from another host and links to
//! each authorized agent over QUIC (live state and health come from those
//! links). Nothing here touches the host namespace (see
//! `offload_tests::lan`).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use offload_tests::agents::lan_agent;
use offload_tests::lan::Lan;
use offload_tests::{bin, key_and_acl, offload, run_ok};
use serde_json::Value;

/// One agent per host: (name, systems, features, speed, slots).
const AGENTS: [(&str, &str, &str, &str, &str); 5] = [
    (
        "agent0",
        "x86_64-linux,i686-linux",
        "kvm,big-parallel",
        "2.5",
        "4",
    ),
    ("agent1", "aarch64-linux", "", "1", "2"),
    ("agent2", "x86_64-linux", "kvm", "1.5", "1"),
    ("agent3", "riscv64-linux", "nixos-test", "0.75", "8"),
    ("agent4", "x86_64-linux", "", "3", "3"),
];

struct Farm {
    lan: Lan,
    tmp: tempfile::TempDir,
    pids: Vec<u32>,
    serve: std::cell::OnceCell<u32>,
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Five agents on hosts 0–4; host 5 is the master, whose key (`master/`)
/// every agent's ACL (`masters-acl`) holds. Agent 3's key is left out of
/// the master's ACL; machines.scm names agent2 statically.
fn farm() -> Farm {
    let lan = Lan::new(6);
    let tmp = tempfile::tempdir().unwrap();
    let acl = tmp.path().join("acl");
    let masters = tmp.path().join("masters-acl");
    key_and_acl(&tmp.path().join("master"), &masters);
    let mut pids = Vec::new();
    for (i, (name, systems, features, speed, slots)) in AGENTS.iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i, name, &masters, tmp.path());
        if i != 3 {
            let public = fs::read(keys.join("signing-key.pub")).unwrap();
            run_ok(
                offload("offload-master").args(["key", "authorize", "--acl", path(&acl)]),
                &public,
            );
        }
        cmd.args([
            "--systems",
            systems,
            "--speed",
            speed,
            "--parallel-builds",
            slots,
            "--ssh",
            "offload@22",
            "--update-secs",
            "0.5",
        ]);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        pids.push(lan.spawn(cmd));
    }
    fs::write(
        tmp.path().join("machines.scm"),
        r#"(list (build-machine (name "agent2") (systems (list "x86_64-linux")) (user "offload") (host-key "ssh-ed25519 AAAA") (speed 9.)))"#,
    )
    .unwrap();
    Farm {
        lan,
        tmp,
        pids,
        serve: std::cell::OnceCell::new(),
    }
}

/// `offload-master status --json ARGS…` on `host`, parsed.
fn status_json(lan: &Lan, host: usize, args: &[&str]) -> Vec<Value> {
    let mut cmd = lan.command(host, bin("offload-master"));
    cmd.env("RUST_LOG", "warn")
        .args(["status", "--json"])
        .args(args);
    let out = cmd.output().expect("status");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `status --json` from the master host, listening by itself.
fn status(f: &Farm, discover_ms: u64) -> Vec<Value> {
    let dir = f.tmp.path();
    status_json(
        &f.lan,
        5,
        &[
            "--socket",
            path(&dir.join("no-serve.sock")),
            "--discover-ms",
            &discover_ms.to_string(),
            "--interface",
            &f.lan.hosts()[5].iface,
            "--machines",
            path(&dir.join("machines.scm")),
            "--acl",
            path(&dir.join("acl")),
            "--key",
            path(&dir.join("master/signing-key.sec")),
        ],
    )
}

fn by_name<'a>(machines: &'a [Value], name: &str) -> Option<&'a Value> {
    machines.iter().find(|m| {
        m["name"]
            .as_str()
            .is_some_and(|n| n.trim_end_matches(".local") == name)
    })
}

/// Poll `status` until `ok` holds, for at most `limit`.
fn wait_for(f: &Farm, limit: Duration, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let machines = status(f, 1500);
        if ok(&machines) || start.elapsed() > limit {
            return machines;
        }
    }
}

#[test]
fn five_agents_are_discovered_with_their_fields() {
    let f = farm();
    let machines = wait_for(&f, Duration::from_secs(20), |m| {
        m.len() == 5 && AGENTS.iter().all(|a| by_name(m, a.0).is_some())
    });
    assert_eq!(machines.len(), 5, "{machines:#?}");
    for (i, (name, systems, features, speed, slots)) in AGENTS.iter().enumerate() {
        let m = by_name(&machines, name).unwrap_or_else(|| panic!("{name} missing: {machines:#?}"));
        let list = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        if i == 2 {
            // machines.scm names agent2: one machine, static fields kept.
            assert_eq!(m["source"], "both", "{m:#}");
            assert_eq!(m["speed"], 9.0, "static speed override: {m:#}");
            assert_eq!(list(&m["systems"]), "x86_64-linux");
        } else {
            assert_eq!(m["source"], "discovered", "{m:#}");
            assert_eq!(list(&m["systems"]), *systems);
            assert_eq!(list(&m["features"]), *features);
            assert_eq!(m["speed"].as_f64().unwrap(), speed.parse::<f64>().unwrap());
            assert_eq!(m["parallel-builds"].to_string(), *slots);
        }
        assert_eq!(m["authorized"], i != 3, "{name}: {m:#}");
        assert_eq!(m["port"], 7441);
        assert_eq!(m["addresses"][0], format!("10.77.0.{}", i + 1));
        assert_eq!(m["key"].as_str().map(str::len), Some(52));
        if i == 3 {
            // Not in our ACL: never linked, nothing live taken from it.
            assert_eq!(
                m["health"], "unauthorized: its key is not in our ACL",
                "{m:#}"
            );
            assert_eq!(m["free"], Value::Null, "{m:#}");
            continue;
        }
        // Both sides proved their keys; the live state is the agent's.
        assert_eq!(m["health"], "ok", "{name}: {m:#}");
        assert_eq!(m["free"].to_string(), *slots, "{m:#}");
        assert!(
            m["load"].as_f64().is_some() && m["disk"].as_u64().is_some_and(|d| d > 0),
            "{m:#}"
        );
    }
}

#[test]
fn a_stopped_agent_is_gone_and_draining_is_seen() {
    let f = farm();
    let all = wait_for(&f, Duration::from_secs(20), |m| m.len() == 5);
    assert_eq!(all.len(), 5, "{all:#?}");
    // SIGUSR1: agent4 starts draining; the new TXT reaches the master.
    f.lan.signal_only(f.pids[4], "USR1");
    let drained = wait_for(&f, Duration::from_secs(6), |m| {
        by_name(m, "agent4").is_some_and(|a| a["draining"] == true)
    });
    assert_eq!(
        by_name(&drained, "agent4").unwrap()["draining"],
        true,
        "{drained:#?}"
    );
    // SIGTERM: agent1 says goodbye; status no longer lists it, the others stay.
    f.lan.signal(f.pids[1], "TERM");
    let after = wait_for(&f, Duration::from_secs(6), |m| {
        by_name(m, "agent1").is_none() && m.len() == 4
    });
    assert!(
        by_name(&after, "agent1").is_none(),
        "agent1 still listed: {after:#?}"
    );
    assert_eq!(after.len(), 4, "{after:#?}");
}

#[test]
fn the_lan_has_only_its_own_interfaces_and_leaves_nothing_behind() {
    let host_links = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
            .collect::<Vec<_>>()
    };
    let before = host_links();
    let names: Vec<String>;
    let pid;
    {
        let lan = Lan::new(2);
        names = lan
            .hosts()
            .iter()
            .map(|h| h.ns.clone())
            .chain([format!("{}-sw", lan.hosts()[0].ns.trim_end_matches("-h0"))])
            .collect();
        assert_eq!(host_links(), before, "the host namespace got no interface");
        let out = lan
            .command(0, "ping")
            .args(["-c", "1", "-W", "2", "10.77.0.2"])
            .output()
            .expect("ping");
        assert!(
            out.status.success(),
            "hosts reach each other: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let mut sleeper = lan.command(1, "sleep");
        sleeper.arg("600");
        pid = lan.spawn(sleeper);
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} left behind");
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a process of the LAN outlived it"
    );
    assert_eq!(host_links(), before);
}

/// `status` through a running `serve` on the master host.
fn serve_status(f: &Farm, socket: &Path) -> Vec<Value> {
    // The answer must come from serve, not from status browsing by itself.
    assert!(
        f.serve.get().is_some_and(|pid| f.lan.running(*pid)),
        "offload-master serve is not running"
    );
    status_json(&f.lan, 5, &["--socket", path(socket)])
}

fn serve_wait(
    f: &Farm,
    socket: &Path,
    limit: Duration,
    ok: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Duration) {
    let start = Instant::now();
    loop {
        let machines = serve_status(f, socket);
        if ok(&machines) || start.elapsed() > limit {
            return (machines, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_tracks_goodbyes_crashes_and_machines_scm() {
    let f = farm();
    let socket = f.tmp.path().join("master.sock");
    let machines_scm = f.tmp.path().join("machines.scm");
    let mut cmd = f.lan.command(5, bin("offload-master"));
    let log = fs::File::create(f.tmp.path().join("serve.log")).unwrap();
    cmd.stderr(log);
    cmd.env("RUST_LOG", "info").args([
        "serve",
        "--socket",
        path(&socket),
        "--machines",
        path(&machines_scm),
        "--acl",
        path(&f.tmp.path().join("acl")),
        "--key",
        path(&f.tmp.path().join("master/signing-key.sec")),
        "--interface",
        &f.lan.hosts()[5].iface,
        "--grace-ms",
        "4000",
        "--verify-ms",
        "2500",
    ]);
    let _ = f.serve.set(f.lan.spawn(cmd));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // agent2 joins its static entry once its key is proven over a link.
    let (all, _) = serve_wait(&f, &socket, Duration::from_secs(20), |m| {
        m.len() == 5 && by_name(m, "agent2").is_some_and(|a| a["source"] == "both")
    });
    assert_eq!(all.len(), 5, "{all:#?}");
    assert_eq!(by_name(&all, "agent2").unwrap()["source"], "both");

    // A TXT change reaches a long-running browser.
    f.lan.signal_only(f.pids[4], "USR1");
    let (drained, _) = serve_wait(&f, &socket, Duration::from_secs(5), |m| {
        by_name(m, "agent4").is_some_and(|a| a["draining"] == true)
    });
    assert_eq!(
        by_name(&drained, "agent4").unwrap()["draining"],
        true,
        "{drained:#?}"
    );

    // A goodbye: gone from status at once (kept for the scheduler during the grace period).
    f.lan.signal(f.pids[1], "TERM");
    let (after, took) = serve_wait(&f, &socket, Duration::from_secs(5), |m| {
        by_name(m, "agent1").is_none()
    });
    assert!(by_name(&after, "agent1").is_none(), "{after:#?}");
    assert!(
        took < Duration::from_secs(2),
        "gone after {took:?}; serve log:\n{}",
        fs::read_to_string(f.tmp.path().join("serve.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("agent1"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A crash: no goodbye; its link notices (not the 120 s mDNS TTL), then
    // it is removed after the grace period.
    assert_eq!(by_name(&after, "agent0").unwrap()["health"], "ok");
    f.lan.signal(f.pids[0], "KILL");
    let unreachable = |a: &Value| {
        a["health"]
            .as_str()
            .is_some_and(|h| h.starts_with("unreachable"))
    };
    let (sick, took) = serve_wait(&f, &socket, Duration::from_secs(8), |m| {
        by_name(m, "agent0").is_some_and(unreachable)
    });
    assert!(
        by_name(&sick, "agent0").is_some_and(unreachable),
        "serve log:\n{}",
        fs::read_to_string(f.tmp.path().join("serve.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("agent0") || l.contains("erify") || l.contains("unhealthy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Status polls every second and gives an agent 1.5 s to answer.
    assert!(
        took < Duration::from_secs(3),
        "shown unreachable after {took:?}"
    );
    let (gone, _) = serve_wait(&f, &socket, Duration::from_secs(10), |m| {
        by_name(m, "agent0").is_none()
    });
    assert!(by_name(&gone, "agent0").is_none(), "{gone:#?}");

    // machines.scm is re-read when it changes.
    fs::write(
        &machines_scm,
        r#"(list (build-machine (name "static-only.lan") (systems (list "x86_64-linux")) (user "offload") (host-key "ssh-ed25519 AAAA")))"#,
    )
    .unwrap();
    // Listed at once; its health once a link was tried (no agent answers
    // there: the name does not even resolve).
    let (reread, _) = serve_wait(&f, &socket, Duration::from_secs(15), |m| {
        by_name(m, "static-only.lan").is_some_and(|s| {
            s["health"]
                .as_str()
                .is_some_and(|h| h.starts_with("unreachable"))
        })
    });
    let s = by_name(&reread, "static-only.lan").unwrap_or_else(|| panic!("{reread:#?}"));
    assert_eq!(s["source"].as_str(), Some("static"));
    // No agent answers there (the name does not even resolve).
    assert!(
        s["health"]
            .as_str()
            .is_some_and(|h| h.starts_with("unreachable")),
        "{s:#}"
    );
    assert_eq!(
        by_name(&reread, "agent2").unwrap()["source"],
        "discovered",
        "agent2 lost its static entry"
    );
}

#[test]
fn agents_with_the_same_name_are_both_discovered() {
    let lan = Lan::new(3);
    let tmp = tempfile::tempdir().unwrap();
    let masters = tmp.path().join("masters-acl");
    key_and_acl(&tmp.path().join("master"), &masters);
    for host in 0..2 {
        // Same advertised name, separate work directories.
        let (mut cmd, _) = lan_agent(
            &lan,
            host,
            "same",
            &masters,
            &tmp.path().join(format!("h{host}")),
        );
        cmd.args([
            "--systems",
            "x86_64-linux",
            "--speed",
            "1",
            "--update-secs",
            "0.5",
        ]);
        lan.spawn(cmd);
        // The second one starts after the first has claimed the name.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let machines = loop {
        let dir = tmp.path();
        let machines = status_json(
            &lan,
            2,
            &[
                "--discover-ms",
                "2000",
                "--interface",
                &lan.hosts()[2].iface,
                "--socket",
                path(&dir.join("none.sock")),
                "--machines",
                path(&dir.join("none.scm")),
                "--acl",
                path(&dir.join("none-acl")),
            ],
        );
        if machines.len() == 2 || Instant::now() > deadline {
            break machines;
        }
    };
    assert_eq!(machines.len(), 2, "both agents, one renamed: {machines:#?}");
    let addresses: std::collections::BTreeSet<String> = machines
        .iter()
        .map(|m| m["addresses"][0].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        addresses,
        ["10.77.0.1", "10.77.0.2"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
}
