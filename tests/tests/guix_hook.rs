//! `offload-master hook` spawned exactly as guix-daemon spawns it (argv
//! through `deploy/guix-dispatcher`, the daemon's environment, fds
//! 0/1/2/4, its own session, the request and reply lines, the two lines
//! after accept, the exit status; see `offload_tests::guix_host`), on a
//! LAN of network namespaces: a daemon host running `offload-master serve`
//! and agents discovered over mDNS, building on embedded stores.

use std::path::Path;
use std::time::{Duration, Instant};

use offload_tests::agents::{Drvs, lan_agent, runtime};
use offload_tests::guix_host::GuixHost;
use offload_tests::lan::Lan;
use offload_tests::{bin, run_ok};
use serde_json::Value;

/// A daemon host (LAN host 0) and agents on hosts 1…: each agent is
/// (name, extra flags).
struct Farm {
    lan: Lan,
    host: GuixHost,
    work: tempfile::TempDir,
    agents: Vec<(String, u32)>,
    serve: Option<u32>,
}

impl Farm {
    fn new(agents: &[(&str, &[&str])]) -> Self {
        let lan = Lan::new(agents.len() + 1);
        let host = GuixHost::new(&lan, 0);
        let work = tempfile::tempdir().expect("tempdir");
        let masters = work.path().join("masters-acl");
        run_ok(
            offload_tests::offload("offload-master")
                .args(["key", "authorize", "--acl"])
                .arg(&masters),
            &std::fs::read(host.etc().join("signing-key.pub")).expect("host key"),
        );
        let mut started = Vec::new();
        for (i, (name, flags)) in agents.iter().enumerate() {
            let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, work.path());
            cmd.args(["--update-secs", "0.5"]).args(*flags);
            if !flags.contains(&"--systems") {
                cmd.args(["--systems", &offload_tests::current_system()]);
            }
            host.authorize(&[&keys.join("signing-key.pub")]);
            started.push(((*name).to_owned(), lan.spawn(cmd)));
        }
        Self {
            lan,
            host,
            work,
            agents: started,
            serve: None,
        }
    }

    /// Start `serve` on the daemon host and wait until every agent is
    /// linked (health `ok`).
    fn serve(&mut self) {
        let cmd = self.host.serve_command(&self.lan, 0);
        self.serve = Some(self.lan.spawn(cmd));
        let names: Vec<String> = self.agents.iter().map(|(n, _)| n.clone()).collect();
        let ok = offload_tests::agents::wait_for(Duration::from_secs(30), || {
            let machines = self.status();
            names.iter().all(|n| {
                machines.iter().any(|m| {
                    m["name"]
                        .as_str()
                        .is_some_and(|x| x.starts_with(n.as_str()))
                        && m["health"] == "ok"
                })
            })
        });
        assert!(ok, "agents not linked: {:#?}", self.status());
    }

    fn status(&self) -> Vec<Value> {
        let out = self
            .lan
            .command(0, bin("offload-master"))
            .env("RUST_LOG", "warn")
            .args(["status", "--json", "--socket"])
            .arg(self.host.socket())
            .output()
            .expect("status");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn agent_store(&self, name: &str) -> std::path::PathBuf {
        self.work.path().join(name).join("store")
    }
}

/// Whether the embedded store at `root` holds `path`.
fn agent_has(root: &Path, path: &str) -> bool {
    let db = offload_store::db::Db::open(&root.join("var/db/db.sqlite")).expect("agent db");
    db.is_valid(&offload_core::store_path::StorePath::parse(path).expect("path"))
        .expect("query")
}

/// Put `drvs`' closures into the daemon host's store, as `guix build`
/// would have written them.
fn seed(rt: &tokio::runtime::Runtime, host: &GuixHost, drvs: &Drvs, roots: &[&str]) {
    let closure = drvs.closure(roots);
    rt.block_on(async {
        let stream = drvs.signed_export(&closure, &host.key).await;
        host.seed(&stream).await;
    });
}

#[test]
fn one_derivation_goes_to_a_discovered_agent_and_its_output_comes_home() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &[])]);
    farm.serve();
    let drvs = Drvs::new();
    let drv = drvs.sh("hello", "echo building hello; echo hello > $out");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    let out = farm.host.outputs_of(&drv)["out"].clone();
    let start = Instant::now();
    let end = rt.block_on(farm.host.offload(&drv, &[], Duration::from_secs(30)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    assert!(farm.host.has(&out), "{out} not registered: {end:#?}");
    assert!(agent_has(&farm.agent_store("agent1"), &out));
    let log = String::from_utf8_lossy(&end.log);
    assert!(log.contains("building hello"), "log: {log:?}");
    let chatter = end.chatter.join("\n");
    for expected in [
        "sending ",
        &format!("offloading '{drv}' to 'agent1"),
        &format!("@ build-remote {drv} agent1"),
        "retrieving 1 store item from 'agent1",
    ] {
        assert!(chatter.contains(expected), "{expected:?} not in {chatter}");
    }
    assert!(
        end.chatter.iter().all(|l| !l.starts_with("# ")),
        "{chatter}"
    );
    eprintln!("built remotely in {:?}: {chatter}", start.elapsed());
}
