//! `offload-master hook` spawned exactly as guix-daemon spawns it (argv
//! through `deploy/guix-dispatcher`, the daemon's environment, fds
//! 0/1/2/4, its own session, the request and reply lines, the two lines
//! after accept, the exit status; see `offload_tests::guix_host`), on a
//! LAN of network namespaces: a daemon host running `offload-master serve`
//! and agents discovered over mDNS, building on embedded stores.

use std::path::Path;
use std::time::Duration;

use offload_tests::agents::{Drvs, lan_agent, runtime};
use offload_tests::bin;
use offload_tests::guix_host::GuixHost;
use offload_tests::lan::Lan;
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
        offload_tests::authorize_key(&masters, &host.etc().join("signing-key.pub"));
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
        let ok = offload_tests::agents::wait_for(Duration::from_secs(30), || {
            let machines = self.status();
            machines.len() >= self.agents.len() && machines.iter().all(|m| m["health"] == "ok")
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
    let end = rt.block_on(farm.host.offload(&drv, &[], Duration::from_secs(30)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    assert!(farm.host.has(&out), "{out} not registered: {end:#?}");
    assert!(offload_tests::agents::store_has(
        &farm.agent_store("agent1"),
        &out
    ));
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
}

#[test]
fn a_dag_of_30_derivations_is_built_entirely_on_three_discovered_agents() {
    let rt = runtime();
    let mut farm = Farm::new(&[
        ("agent1", &["--parallel-builds", "2"]),
        ("agent2", &["--parallel-builds", "2", "--features", "big"]),
        ("agent3", &["--parallel-builds", "2"]),
    ]);
    farm.serve();
    let drvs = Drvs::new();
    let list: Vec<String> = drvs
        .instantiate(&offload_tests::guix_host::dag30(""))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(list.len(), 30);
    let roots: Vec<&str> = list.iter().map(String::as_str).collect();
    seed(&rt, &farm.host, &drvs, &roots);
    let ends = offload_tests::guix_host::build_all(&farm.host, &list, 8);
    let mut used = std::collections::BTreeSet::new();
    for (drv, end) in &ends {
        let out = farm.host.outputs_of(drv)["out"].clone();
        assert!(farm.host.has(&out), "{out} not registered");
        let builders: Vec<&str> = farm
            .agents
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| offload_tests::agents::store_has(&farm.agent_store(n), &out))
            .collect();
        assert!(!builders.is_empty(), "{out} on no agent");
        let remote = end
            .chatter
            .iter()
            .find_map(|l| l.strip_prefix(&format!("@ build-remote {drv} ")))
            .unwrap_or_else(|| panic!("no build-remote trace for {drv}: {:?}", end.chatter));
        used.insert(remote.trim_end_matches(".local").to_owned());
        if drv.ends_with("-feat.drv") {
            assert!(remote.starts_with("agent2"), "feat built on {remote}");
        }
        // The output re-exported from the daemon host is byte for byte
        // what its builder exports (both signed with the host's key).
        let from = farm.agent_store(builders[0]);
        rt.block_on(async {
            let p = offload_core::store_path::StorePath::parse(&out).unwrap();
            let mut here = Vec::new();
            farm.host
                .store()
                .export(std::slice::from_ref(&p), &farm.host.key, &mut here)
                .await
                .expect("export from the daemon host");
            // The agent's files and database, read beside the running agent.
            let db = offload_store::db::Db::open(&from.join("var/db/db.sqlite")).expect("agent db");
            let mut there_store = offload_store::store::Store::Local(std::sync::Arc::new(
                offload_store::local::LocalStore::new(
                    offload_core::store_path::StoreDir::default(),
                    from.join("store"),
                    db,
                ),
            ));
            let mut there = Vec::new();
            there_store
                .export(std::slice::from_ref(&p), &farm.host.key, &mut there)
                .await
                .expect("export from the agent");
            assert!(here == there, "{out}: exports differ");
        });
    }
    assert_eq!(used.len(), 3, "agents used: {used:?}");
    // The top output holds its inputs' names: the whole DAG fed it.
    let top = list.last().unwrap();
    let out = farm.host.outputs_of(top)["out"].clone();
    let text = std::fs::read_to_string(
        farm.host.dir().join("store").join(
            offload_core::store_path::StorePath::parse(&out)
                .unwrap()
                .base(),
        ),
    )
    .unwrap();
    for name in ["top", "feat", "d2", "c7", "b0", "a3", "r0"] {
        assert!(
            text.lines().any(|l| l == name),
            "{name} not in top's output"
        );
    }
}

#[test]
fn a_failing_build_exits_100_with_its_log_and_is_not_retried_elsewhere() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &[]), ("agent2", &[])]);
    farm.serve();
    let drvs = Drvs::new();
    let drv = drvs.sh("fails", "echo about to fail; exit 3");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    let end = rt.block_on(farm.host.offload(&drv, &[], Duration::from_secs(30)));
    assert_eq!(end.code(), Some(100), "{end:#?}");
    let log = String::from_utf8_lossy(&end.log);
    assert!(log.contains("about to fail"), "log: {log:?}");
    let chatter = end.chatter.join("\n");
    assert!(
        chatter.contains(&format!("derivation '{drv}' offloaded to 'agent"))
            && chatter.contains("failed"),
        "{chatter}"
    );
    assert_eq!(
        end.chatter
            .iter()
            .filter(|l| l.starts_with("@ build-remote"))
            .count(),
        1,
        "built more than once: {chatter}"
    );
}

#[test]
fn an_agent_killed_mid_build_is_replaced_and_avoided_afterwards() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &[]), ("agent2", &[])]);
    farm.serve();
    let drvs = Drvs::new();
    let drv = drvs.sh("slow", "echo started; /bin/sleep 3; echo slow > $out");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    let system = offload_tests::current_system();
    let mut hook = farm.host.start_build(&rt, &drv, [&system, "0", "1", "0"]);
    assert!(
        hook.wait_for_line("@ build-remote", Duration::from_secs(30)),
        "{:?}",
        hook.chatter
    );
    let first = hook
        .chatter
        .iter()
        .find_map(|l| l.strip_prefix(&format!("@ build-remote {drv} ")))
        .expect("trace")
        .trim_end_matches(".local")
        .to_owned();
    let (_, pid) = farm
        .agents
        .iter()
        .find(|(n, _)| *n == first)
        .expect("agent");
    farm.lan.signal(*pid, "KILL");
    let end = hook.finish();
    assert_eq!(end.code(), Some(0), "{end:#?}");
    let out = farm.host.outputs_of(&drv)["out"].clone();
    assert!(farm.host.has(&out));
    let traces: Vec<&String> = end
        .chatter
        .iter()
        .filter(|l| l.starts_with("@ build-remote"))
        .collect();
    assert_eq!(traces.len(), 2, "{:?}", end.chatter);
    assert!(!traces[1].contains(&first), "{traces:?}");
    assert!(
        end.chatter
            .iter()
            .any(|l| l.contains(&format!("lost '{first}"))),
        "{:?}",
        end.chatter
    );
    // serve remembers lost builds: a machine reported lost is not offered
    // for a while, though it answers.
    let second = traces[1].rsplit(' ').next().unwrap().to_owned();
    let features: Vec<String> = Vec::new();
    let ask = offload_master::hook::plan::Ask {
        system: &system,
        features: &features,
        local_slot_free: false,
    };
    let socket = farm.host.socket();
    // (Once serve's next poll saw the slot the hook gave back.)
    let offered = offload_tests::agents::wait_for(Duration::from_secs(5), || {
        matches!(offload_master::serve::ask_plan(&socket, &ask),
            Ok(offload_master::hook::plan::Plan::Accept(c)) if c.iter().any(|c| c.name == second))
    });
    assert!(
        offered,
        "{:?}",
        offload_master::serve::ask_plan(&socket, &ask)
    );
    offload_master::serve::report_lost(&socket, &second).unwrap();
    let after = offload_master::serve::ask_plan(&socket, &ask).unwrap();
    assert!(
        matches!(&after, offload_master::hook::plan::Plan::Postpone(why) if why.contains("a build there was lost")),
        "{after:?}"
    );
}

#[test]
fn a_hook_killed_mid_download_leaves_nothing_partial_and_frees_its_slot() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &["--parallel-builds", "1"])]);
    farm.serve();
    let drvs = Drvs::new();
    // 256 MiB of output: long enough to be caught on its way home.
    let drv = drvs.sh("big", "/usr/bin/head -c 268435456 /dev/urandom > $out");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    let out = farm.host.outputs_of(&drv)["out"].clone();
    let system = offload_tests::current_system();
    let mut hook = farm.host.start_build(&rt, &drv, [&system, "0", "1", "0"]);
    assert!(
        hook.wait_for_line("retrieving", Duration::from_secs(60)),
        "{:?}",
        hook.chatter
    );
    hook.kill_group();
    let end = hook.finish();
    assert_eq!(end.code(), None, "killed by a signal: {end:#?}");
    // Nothing registered, and nothing left in the store but temporaries
    // of a dead process, which the next opening sweeps.
    assert!(!farm.host.has(&out));
    drop(farm.host.store());
    let leftovers: Vec<String> = std::fs::read_dir(farm.host.dir().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || out.ends_with(n.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The slot and the lease are free again: the next hook builds at once
    // (the agent has one slot, and the output is fetched now).
    let end = rt.block_on(farm.host.offload(&drv, &[], Duration::from_secs(20)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    assert!(farm.host.has(&out));
}

/// Hold a POSIX record lock on `file` from another process (Python's
/// `fcntl.lockf`, the kind Guile's hook takes) until the returned child is
/// killed.
fn hold_guile_style_lock(file: &Path) -> std::process::Child {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys,time\nf=open(sys.argv[1],'w')\nfcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nprint('locked',flush=True)\ntime.sleep(600)",
        ])
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn slots_are_shared_with_guile_hooks_and_never_exceeded() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &["--parallel-builds", "2"])]);
    // The operator lists the agent's host with one slot: Guile's hook and
    // ours share `STATE/offload/10.77.0.2:22/0`.
    let ip = farm.lan.hosts()[1].ip.to_string();
    std::fs::write(
        farm.host.etc().join("machines.scm"),
        format!(
            r#"(list (build-machine (name "{ip}") (systems (list "{}")) (user "offload") (host-key "ssh-ed25519 AAAA") (parallel-builds 1)))"#,
            offload_tests::current_system()
        ),
    )
    .unwrap();
    farm.serve();
    let drvs = Drvs::new();
    let a = drvs.sh("slot-a", "/bin/sleep 2; echo a > $out");
    let b = drvs.sh("slot-b", "echo b > $out");
    seed(&rt, &farm.host, &drvs, &[&a, &b]);
    let system = offload_tests::current_system();
    let slot = farm.host.state_dir().join(format!("offload/{ip}:22/0"));
    // A Guile hook holds the only slot: ours waits although the agent has
    // a free lease.
    let mut guile = hold_guile_style_lock(&slot);
    let mut hook = farm.host.spawn_hook([&system, "0", "1", "0"]);
    let line_a = offload_tests::guix_host::request_line(true, &system, &a, &[]);
    assert_eq!(hook.ask(&line_a), "postpone", "{:?}", hook.chatter);
    let _ = guile.kill();
    let _ = guile.wait();
    assert_eq!(
        hook.ask_until_accepted(&line_a, Duration::from_secs(30)),
        "accept",
        "{:?}",
        hook.chatter
    );
    // While it builds, a second hook of ours gets no slot either.
    let mut second = farm.host.spawn_hook([&system, "0", "1", "0"]);
    let line_b = offload_tests::guix_host::request_line(true, &system, &b, &[]);
    let (inputs, outputs) = rt.block_on(farm.host.accept_lines(&a));
    hook.send_paths(&inputs, &outputs);
    assert!(hook.wait_for_line("@ build-remote", Duration::from_secs(30)));
    assert_eq!(second.ask(&line_b), "postpone", "{:?}", second.chatter);
    let end = hook.finish();
    assert_eq!(end.code(), Some(0), "{end:#?}");
    // The slot is free again: the second hook takes it.
    assert_eq!(
        second.ask_until_accepted(&line_b, Duration::from_secs(30)),
        "accept",
        "{:?}",
        second.chatter
    );
    let (inputs, outputs) = rt.block_on(farm.host.accept_lines(&b));
    second.send_paths(&inputs, &outputs);
    let end = second.finish();
    assert_eq!(end.code(), Some(0), "{end:#?}");
}

#[test]
fn without_serve_the_hook_looks_by_itself_and_never_waits_for_ever() {
    let rt = runtime();
    let farm = Farm::new(&[("agent1", &[])]);
    // A static machine nobody answers for, beside the discovered agent.
    std::fs::write(
        farm.host.etc().join("machines.scm"),
        r#"(list (build-machine (name "10.77.0.99") (systems (list "riscv64-linux")) (user "offload") (host-key "ssh-ed25519 AAAA")))"#,
    )
    .unwrap();
    let drvs = Drvs::new();
    let drv = drvs.sh("alone", "echo alone > $out");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    // No serve: the hook browses for agents and links to them itself.
    let end = rt.block_on(farm.host.offload(&drv, &[], Duration::from_secs(30)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    assert!(farm.host.has(&farm.host.outputs_of(&drv)["out"]));
    let system = offload_tests::current_system();
    let mut hook = farm.host.spawn_hook([&system, "0", "1", "0"]);
    // Nothing builds for this system: decline, saying why.
    let line = offload_tests::guix_host::request_line(true, "aarch64-linux", &drv, &[]);
    assert_eq!(hook.ask(&line), "decline");
    // Only the unreachable machine could: with a free local slot the
    // daemon builds it itself; without one the hook keeps it waiting.
    let line = offload_tests::guix_host::request_line(true, "riscv64-linux", &drv, &[]);
    assert_eq!(hook.ask(&line), "decline");
    let why = hook.drain_chatter().join("\n");
    assert!(
        why.contains("unreachable") && why.contains("10.77.0.99"),
        "{why}"
    );
    let line = offload_tests::guix_host::request_line(false, "riscv64-linux", &drv, &[]);
    assert_eq!(hook.ask(&line), "postpone");
    hook.close_stdin();
    let end = hook.finish();
    assert_eq!(end.code(), Some(0), "{end:#?}");
}

#[test]
fn an_agent_that_holds_the_inputs_is_preferred() {
    let rt = runtime();
    let mut farm = Farm::new(&[
        ("agent1", &["--speed", "1", "--parallel-builds", "2"]),
        ("agent2", &["--speed", "1", "--parallel-builds", "2"]),
    ]);
    farm.serve();
    let drvs = Drvs::new();
    // 48 MiB made on whichever agent; its builder keeps a copy.
    let big = drvs.sh(
        "locality-big",
        "/usr/bin/head -c 50331648 /dev/urandom > $out",
    );
    let users: Vec<String> = (0..3)
        .map(|i| {
            drvs.instantiate(&format!(
                "derivation {{ name = \"locality-use-{i}\"; system = builtins.currentSystem; \
                 builder = \"/bin/sh\"; args = [\"-c\" \"/usr/bin/wc -c < ${{{}}} > $out\"]; }}",
                offload_tests::nixd::IsolatedNix::sh_derivation(
                    "locality-big",
                    "/usr/bin/head -c 50331648 /dev/urandom > $out"
                )
            ))
        })
        .collect();
    let mut roots: Vec<&str> = vec![&big];
    roots.extend(users.iter().map(String::as_str));
    seed(&rt, &farm.host, &drvs, &roots);
    let end = rt.block_on(farm.host.offload(&big, &[], Duration::from_secs(60)));
    assert_eq!(end.code(), Some(0), "{end:#?}");
    let holder = remote_of(&end, &big);
    for user in &users {
        let end = rt.block_on(farm.host.offload(user, &[], Duration::from_secs(60)));
        assert_eq!(end.code(), Some(0), "{end:#?}");
        assert_eq!(
            remote_of(&end, user),
            holder,
            "{user} did not go to the inputs"
        );
        // Nothing but the .drv had to travel.
        let sent = end
            .chatter
            .iter()
            .find(|l| l.starts_with("sending "))
            .cloned()
            .unwrap_or_default();
        assert!(sent.contains("(0.0 MiB)"), "{sent}");
    }
}

/// The machine a hook's `@ build-remote` trace names for `drv`.
fn remote_of(end: &offload_tests::guix_host::HookEnd, drv: &str) -> String {
    end.chatter
        .iter()
        .find_map(|l| l.strip_prefix(&format!("@ build-remote {drv} ")))
        .unwrap_or_else(|| panic!("no trace: {:?}", end.chatter))
        .to_owned()
}

#[test]
fn a_build_over_its_time_limit_exits_101_and_a_bad_request_exits_1() {
    let rt = runtime();
    let mut farm = Farm::new(&[("agent1", &[])]);
    farm.serve();
    let drvs = Drvs::new();
    let drv = drvs.sh("too-slow", "echo starting; /bin/sleep 30; echo done > $out");
    seed(&rt, &farm.host, &drvs, &[&drv]);
    let system = offload_tests::current_system();
    // BUILD_TIMEOUT 2: the agent kills the build; the hook says so.
    let hook = farm.host.start_build(&rt, &drv, [&system, "0", "0", "2"]);
    let end = hook.finish();
    assert_eq!(end.code(), Some(101), "{end:#?}");
    assert!(String::from_utf8_lossy(&end.log).contains("starting"));
    // What guix-daemon never writes: an error naming the line, exit 1.
    let mut hook = farm.host.spawn_hook([&system, "0", "0", "0"]);
    assert_eq!(hook.ask("2 x86_64-linux /tmp/not-a-drv "), "<EOF>");
    let end = hook.finish();
    assert_eq!(end.code(), Some(1), "{end:#?}");
    assert!(
        end.chatter
            .iter()
            .any(|l| l.contains("invalid request line") && l.contains("not-a-drv")),
        "{:?}",
        end.chatter
    );
}
