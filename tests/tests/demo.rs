//! `offload-master demo`, the README's first command: a private LAN of
//! network namespaces, three agents, a master discovering them, a DAG
//! built through the hook; nothing left behind, also when interrupted;
//! a clear refusal without root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use offload_tests::bin;
use serde_json::Value;

/// Everything the demo made lives under TMPDIR=`dir` and in namespaces
/// named after its pid: check that none of it is left.
fn assert_nothing_left(dir: &Path, pid: u32) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let prefix = format!("ofl-demo-{pid}-");
    let text = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!text.contains(&prefix), "namespaces left: {text}");
    let procs = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        procs.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
}

#[test]
fn the_demo_builds_its_dag_on_three_discovered_agents_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(bin("offload-master"))
        .args(["demo", "--json"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let builds = doc["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 12);
    let mut machines = std::collections::BTreeSet::new();
    for b in builds {
        assert_eq!(b["status"], "built", "{b:#}");
        assert!(b["derivation"].as_str().unwrap().ends_with(".drv"));
        assert!(b["bytes-sent"].as_u64().unwrap() > 0, "{b:#}");
        assert!(b["bytes-received"].as_u64().unwrap() > 0, "{b:#}");
        assert!(b["seconds"].as_f64().unwrap() > 0.0, "{b:#}");
        let m = b["machine"].as_str().unwrap().to_owned();
        if b["name"] == "demo-render" {
            assert!(m.starts_with("birch"), "render needs `big`: {m}");
        }
        machines.insert(m);
    }
    assert!(machines.len() >= 2, "{machines:?}");
    assert_eq!(doc["machines"].as_array().unwrap().len(), 3);
    assert_nothing_left(tmp.path(), pid);
}

#[test]
fn an_interrupted_demo_removes_everything_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("offload-master"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("building") {
        line.clear();
    }
    assert!(line.contains("building"), "the demo never started building");
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(tmp.path(), pid);
}

#[test]
fn without_root_the_demo_says_why_it_needs_root() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("offload-master"))
        .arg("demo")
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("network namespaces") && err.contains("sudo"),
        "{err}"
    );
}
