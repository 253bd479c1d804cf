//! Interoperability with real Avahi, inside LAN namespaces only: Avahi sees
//! our agents, we see services Avahi publishes, and both live on one host.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use offload_tests::agents::lan_agent;
use offload_tests::avahi::Avahi;
use offload_tests::lan::Lan;
use offload_tests::{bin, key_and_acl, offload, run_ok};
use serde_json::Value;

const FINGERPRINT: &str = "0sxkicspy9kklfnwc4z3dficwx3ll0l7nswh2rs92czxppw3g106";

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Start our agent `name` on `host` with a fresh key; returns the key's fingerprint.
fn agent(lan: &Lan, host: usize, name: &str, dir: &Path) -> String {
    let masters = dir.join("masters-acl");
    if !masters.exists() {
        key_and_acl(&dir.join("master"), &masters);
    }
    let (mut cmd, keys) = lan_agent(lan, host, name, &masters, dir);
    let fingerprint = run_ok(
        offload("offload-master").args(["key", "show", "--fingerprint", "--dir", path(&keys)]),
        b"",
    );
    cmd.args([
        "--systems",
        "x86_64-linux,i686-linux",
        "--features",
        "kvm",
        "--speed",
        "2",
        "--parallel-builds",
        "3",
    ]);
    lan.spawn(cmd);
    String::from_utf8(fingerprint).unwrap().trim().to_owned()
}

fn status(lan: &Lan, host: usize, dir: &Path) -> (Vec<Value>, String) {
    let mut cmd = lan.command(host, bin("offload-master"));
    cmd.env("RUST_LOG", "warn").args([
        "status",
        "--json",
        "--discover-ms",
        "2500",
        "--interface",
        &lan.hosts()[host].iface,
        "--socket",
        path(&dir.join("none.sock")),
        "--machines",
        path(&dir.join("none.scm")),
        "--acl",
        path(&dir.join("none-acl")),
    ]);
    let out = cmd.output().expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let machines = serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default();
    (machines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn eventually<T>(limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = attempt() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn avahi_browse_sees_our_agents_with_their_txt() {
    let lan = Lan::new(2);
    let tmp = tempfile::tempdir().unwrap();
    let avahi = Avahi::start(&lan, 1, tmp.path());
    let fingerprint = agent(&lan, 0, "agent-a", tmp.path());
    let found = eventually(Duration::from_secs(15), || {
        avahi
            .browse(&lan, "_guix-offload._udp")
            .into_iter()
            .find(|f| f.get(3).is_some_and(|n| n == "agent-a"))
    });
    let fields = found.unwrap_or_else(|| panic!("avahi-browse never saw agent-a"));
    // =;iface;IPv4;name;type;domain;host;address;port;txt
    assert_eq!(fields[4], "_guix-offload._udp");
    assert_eq!(fields[7], "10.77.0.1");
    assert_eq!(fields[8], "7441");
    // One subtype per system: the first from mdns-sd, the others from our responder.
    for system in ["x86_64-linux", "i686-linux"] {
        let subtype = format!("_{system}._sub._guix-offload._udp");
        let seen = eventually(Duration::from_secs(15), || {
            avahi
                .browse(&lan, &subtype)
                .into_iter()
                .find(|f| f.get(3).is_some_and(|n| n == "agent-a"))
        });
        let seen = seen.unwrap_or_else(|| panic!("avahi-browse {subtype} never saw agent-a"));
        assert_eq!(seen[8], "7441", "resolved through the subtype: {seen:?}");
    }
    let txt = fields[9..].join(";");
    for entry in [
        "\"txtvers=1\"",
        "\"systems=x86_64-linux,i686-linux\"",
        "\"features=kvm\"",
        "\"slots=3\"",
        &format!("\"key={fingerprint}\""),
    ] {
        assert!(txt.contains(entry), "{entry} missing from {txt}");
    }
}

#[test]
fn we_discover_what_avahi_publishes_and_reject_bad_txt() {
    let lan = Lan::new(2);
    let tmp = tempfile::tempdir().unwrap();
    let avahi = Avahi::start(&lan, 0, tmp.path());
    let mut good = avahi.client(&lan, "avahi-publish");
    good.args([
        "-s",
        "published-by-avahi",
        "_guix-offload._udp",
        "7442",
        "txtvers=1",
        "proto=1",
        "systems=aarch64-linux",
        "features=",
        "speed=1.5",
        "slots=2",
        "free=1",
        "load=0.50",
        "disk=1000000000",
        &format!("key={FINGERPRINT}"),
        "store=/gnu/store",
    ]);
    lan.spawn(good);
    let mut bad = avahi.client(&lan, "avahi-publish");
    bad.args([
        "-s",
        "bad-txt",
        "_guix-offload._udp",
        "7443",
        "txtvers=1",
        "proto=1",
        "systems=x86_64-linux",
        "speed=fast",
        "slots=1",
        "free=1",
        "load=0",
        "disk=1",
        &format!("key={FINGERPRINT}"),
        "store=/gnu/store",
    ]);
    lan.spawn(bad);
    let (machines, warnings) = eventually(Duration::from_secs(15), || {
        let (m, w) = status(&lan, 1, tmp.path());
        (m.iter().any(|x| x["port"] == 7442) && w.contains("bad-txt")).then_some((m, w))
    })
    .unwrap_or_else(|| panic!("status never saw the Avahi services"));
    let m = machines.iter().find(|x| x["port"] == 7442).unwrap();
    assert_eq!(m["systems"][0], "aarch64-linux");
    // Capabilities are read from the TXT record; live values (free slots,
    // load) only ever come from an authenticated link, never from TXT.
    assert_eq!(
        (m["speed"].as_f64(), m["free"].as_u64(), m["load"].as_f64()),
        (Some(1.5), None, None)
    );
    assert_eq!(m["addresses"][0], "10.77.0.1");
    assert_eq!(m["authorized"], false, "no ACL here");
    assert!(
        warnings.contains("ignoring agent bad-txt") && warnings.contains("speed"),
        "{warnings}"
    );
    assert!(
        !machines.iter().any(|x| x["port"] == 7443),
        "a record off the schema is not used"
    );
}

#[test]
fn our_agent_and_avahi_share_a_host() {
    let lan = Lan::new(2);
    let tmp = tempfile::tempdir().unwrap();
    let avahi0 = Avahi::start(&lan, 0, tmp.path());
    let mut other = avahi0.client(&lan, "avahi-publish");
    other.args(["-s", "neighbour", "_http._tcp", "80"]);
    lan.spawn(other);
    agent(&lan, 0, "agent-b", tmp.path());
    let avahi1 = Avahi::start(&lan, 1, tmp.path());
    // Avahi on the other host sees both Avahi's service and ours…
    let ours = eventually(Duration::from_secs(15), || {
        avahi1
            .browse(&lan, "_guix-offload._udp")
            .into_iter()
            .find(|f| f.get(3).is_some_and(|n| n == "agent-b"))
    });
    assert!(
        ours.is_some(),
        "avahi-browse never saw agent-b next to avahi-daemon"
    );
    let theirs = eventually(Duration::from_secs(15), || {
        avahi1
            .browse(&lan, "_http._tcp")
            .into_iter()
            .find(|f| f.get(3).is_some_and(|n| n == "neighbour"))
    });
    assert!(
        theirs.is_some(),
        "Avahi's own service vanished next to our agent"
    );
    // …and so does our master, next to Avahi on its own host.
    let seen = eventually(Duration::from_secs(15), || {
        let (m, _) = status(&lan, 1, tmp.path());
        m.iter()
            .any(|x| x["name"].as_str().is_some_and(|n| n.starts_with("agent-b")))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "status next to avahi-daemon never saw agent-b"
    );
    fs::remove_dir_all(tmp.path().join("agent-b")).ok();
}
