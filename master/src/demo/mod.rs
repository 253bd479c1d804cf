//! `offload-master demo`: the whole product on one machine, safely. A
//! private LAN of network namespaces (never the host's), three agents on
//! embedded stores with different systems, features and speeds, a master
//! (`serve`) that discovers them over mDNS and links to each over QUIC,
//! and a sample DAG built through the real hook contract: this program
//! plays guix-daemon and spawns `offload-master hook` for each derivation.
//! It prints what went where and cleans up everything it made (processes,
//! namespaces, stores), also when interrupted.

mod daemon;
mod dag;
mod lan;
mod report;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::db::Db;
use offload_store::local::LocalStore;
use offload_store::store::Store;

use daemon::{HookCommand, Outcome};

/// The agents: name, systems, features, speed, slots.
const AGENTS: [(&str, &str, &str, &str, &str); 3] = [
    ("alder", "{sys},i686-linux", "", "1.0", "2"),
    ("birch", "{sys}", "big,kvm", "1.5", "2"),
    ("cedar", "{sys},aarch64-linux", "", "2.0", "3"),
];

/// How many hooks run at once (the daemon's parallel builds).
const PARALLEL: usize = 6;

/// Children killed (their process groups too) on drop.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn say(json: bool, line: &str) {
    if !json {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{line}");
        }
    }
}

/// Run the demo; the exit status.
pub fn run(json: bool) -> anyhow::Result<u8> {
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "the demo needs root: it creates network namespaces (a private LAN of four hosts, \
             so that mDNS and QUIC never touch this machine's real network) and mounts build \
             sandboxes; run it with sudo"
        );
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("setsid", "util-linux"),
        ("unshare", "util-linux"),
    ] {
        if offload_files::paths::find_program(program).is_none() {
            anyhow::bail!("`{program}` is missing: install the Debian package {package}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let agent_program = agent_program(json)?;
    let result = run_in(json, &agent_program, &stop);
    if stop.load(Ordering::Relaxed) {
        say(json, "demo: interrupted; everything it made is removed");
        return Ok(130);
    }
    result
}

fn run_in(json: bool, agent_program: &Path, stop: &AtomicBool) -> anyhow::Result<u8> {
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("offload-demo-")
        .tempdir()
        .context("creating the demo's directory")?;
    let w = work.path();
    let system = format!("{}-linux", std::env::consts::ARCH);
    say(
        json,
        "demo: creating a private LAN of 4 network namespaces (10.91.0.0/24)...",
    );
    let lan = lan::Lan::new(1 + AGENTS.len())?;
    let mut children = Children::default();
    // Keys: the master's, each agent's; each side trusts the other.
    let master_etc = w.join("master/etc");
    let master_key = offload_files::key_file::generate(&master_etc)?;
    let masters_acl = w.join("masters-acl");
    offload_files::acl_file::authorize(&masters_acl, &master_key)?;
    let store_dir = StoreDir::new(&w.join("store").display().to_string())
        .map_err(|e| anyhow::anyhow!("store directory: {e}"))?;
    std::fs::create_dir_all(w.join("store"))?;
    for (i, (name, systems, features, speed, slots)) in AGENTS.iter().enumerate() {
        let dir = w.join(name);
        let key = offload_files::key_file::generate(&dir.join("keys"))?;
        offload_files::acl_file::authorize(&master_etc.join("acl"), &key)?;
        let log = std::fs::File::create(w.join(format!("{name}.log")))?;
        let mut cmd = lan.command(i + 1, agent_program);
        cmd.env("RUST_LOG", "warn")
            .args(["run", "--name", name, "--key"])
            .arg(dir.join("keys/signing-key.sec"))
            .arg("--acl")
            .arg(&masters_acl)
            .arg("--store")
            .arg(format!("embedded:{}", dir.join("store").display()))
            .arg("--store-dir")
            .arg(store_dir.as_str())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--interface", &lan.hosts()[i + 1].iface])
            .args(["--systems", &systems.replace("{sys}", &system)])
            .args([
                "--speed",
                speed,
                "--parallel-builds",
                slots,
                "--update-secs",
                "0.5",
            ])
            .stdout(Stdio::null())
            .stderr(log);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        children
            .0
            .push(cmd.spawn().context("starting offload-agent")?);
    }
    let socket = w.join("master.sock");
    let serve_log = std::fs::File::create(w.join("serve.log"))?;
    let mut serve = lan.command(0, daemon::this_program()?);
    serve
        .env("RUST_LOG", "warn")
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--machines")
        .arg(master_etc.join("machines.scm"))
        .arg("--acl")
        .arg(master_etc.join("acl"))
        .arg("--key")
        .arg(master_etc.join("signing-key.sec"))
        .args(["--interface", &lan.hosts()[0].iface])
        .stdout(Stdio::null())
        .stderr(serve_log);
    children
        .0
        .push(serve.spawn().context("starting offload-master serve")?);
    say(
        json,
        "demo: 3 agents started; the master is discovering them over mDNS...",
    );
    let machines = wait_for_agents(&socket, AGENTS.len(), stop, w)?;
    if !json {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", report::machines_table(&machines));
        }
    }
    // The daemon host's store: the sample DAG's derivations, registered.
    let db = Db::open_or_create(&w.join("master/var/db"))?;
    let local = Arc::new(LocalStore::new(store_dir.clone(), w.join("store"), db));
    let nodes = dag::sample(&store_dir, &system).map_err(anyhow::Error::msg)?;
    for node in &nodes {
        local.add_text(
            &node.written.path,
            &node.written.text,
            &node.written.references,
        )?;
    }
    say(
        json,
        &format!(
            "demo: building {} derivations through the hook...",
            nodes.len()
        ),
    );
    let hook = HookCommand {
        prefix: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            lan.hosts()[0].ns.clone(),
            daemon::this_program()?.display().to_string(),
        ],
        env: daemon_env(w, &store_dir, &socket),
        system: system.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcomes = build_dag(&nodes, &hook, &local, &runtime, stop)?;
    let wall = started.elapsed().as_secs_f64();
    let all_valid = nodes.iter().all(|n| {
        n.written
            .outputs
            .values()
            .all(|o| local.db().is_valid(o).unwrap_or(false))
    });
    let text = if json {
        report::json(&nodes, &outcomes, &machines, wall)
    } else {
        report::table(&nodes, &outcomes, wall)
    };
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    drop(children);
    drop(lan);
    let ok = all_valid && outcomes.iter().all(|o| o.status == "built");
    if !ok {
        say(json, "demo: some derivations did not build (see above)");
    }
    Ok(if ok { 0 } else { 1 })
}

/// guix-daemon's environment for its hooks, pointing at the demo's host.
fn daemon_env(w: &Path, store_dir: &StoreDir, socket: &Path) -> Vec<(String, String)> {
    let s = |p: PathBuf| p.display().to_string();
    vec![
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
        ),
        ("NIX_STORE_DIR".into(), store_dir.as_str().to_owned()),
        ("GUIX_STATE_DIRECTORY".into(), s(w.join("master/var"))),
        ("GUIX_DATABASE_DIRECTORY".into(), s(w.join("master/var/db"))),
        (
            "GUIX_CONFIGURATION_DIRECTORY".into(),
            s(w.join("master/etc")),
        ),
        ("OFFLOAD_MASTER_SOCKET".into(), s(socket.to_owned())),
        ("RUST_LOG".into(), "warn".into()),
    ]
}

/// Wait until `serve` links to `n` agents; their status (JSON objects).
fn wait_for_agents(
    socket: &Path,
    n: usize,
    stop: &AtomicBool,
    w: &Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("interrupted");
        }
        if let Ok(Some(reply)) = crate::serve::ask(socket, true)
            && let Ok(serde_json::Value::Array(machines)) = serde_json::from_str(&reply)
            && machines.len() >= n
            && machines.iter().all(|m| m["health"] == "ok")
        {
            return Ok(machines);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = ["serve", "alder", "birch", "cedar"]
                .iter()
                .map(|n| {
                    format!(
                        "{n}: {}",
                        std::fs::read_to_string(w.join(format!("{n}.log"))).unwrap_or_default()
                    )
                })
                .collect();
            anyhow::bail!(
                "the master did not link to {n} agents within 30 s\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Build every node, each once its inputs are built, up to [`PARALLEL`]
/// at once; one outcome per node, in order.
fn build_dag(
    nodes: &[dag::Node],
    hook: &HookCommand,
    local: &Arc<LocalStore>,
    runtime: &tokio::runtime::Runtime,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; nodes.len()];
    let mut done: BTreeSet<String> = BTreeSet::new();
    while outcomes.iter().any(Option::is_none) {
        let ready: Vec<usize> = (0..nodes.len())
            .filter(|&i| outcomes[i].is_none())
            .filter(|&i| nodes[i].inputs.iter().all(|d| done.contains(d)))
            .take(PARALLEL)
            .collect();
        if ready.is_empty() {
            anyhow::bail!("some derivations cannot be built: their inputs failed");
        }
        let wave: Vec<(usize, anyhow::Result<Outcome>)> = std::thread::scope(|s| {
            let handles: Vec<_> = ready
                .iter()
                .map(|&i| {
                    let node = &nodes[i];
                    s.spawn(move || {
                        let drv = node.written.path.to_string();
                        let lines = || accept_lines(local, runtime, node);
                        let r = daemon::offload(
                            hook,
                            &drv,
                            &node.features,
                            &lines,
                            Duration::from_secs(120),
                            stop,
                        );
                        (i, r)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, r) in wave {
            let outcome = r?;
            if outcome.status == "built" {
                done.insert(nodes[i].written.path.to_string());
            } else {
                outcome.chatter.iter().for_each(|l| say(false, l));
                anyhow::bail!("{} did not build: {}", nodes[i].name, outcome.status);
            }
            outcomes[i] = Some(outcome);
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// The two lines guix-daemon writes after `# accept`.
fn accept_lines(
    local: &Arc<LocalStore>,
    runtime: &tokio::runtime::Runtime,
    node: &dag::Node,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut roots: Vec<StorePath> = vec![node.written.path.clone()];
    for input in node.written.drv.input_drvs.keys() {
        let text = std::fs::read(local.real_path(&StorePath::parse_in(local.store_dir(), input)?))?;
        let drv = offload_core::derivation::Derivation::parse(&text)?;
        for o in drv.outputs.values() {
            roots.push(StorePath::parse_in(local.store_dir(), &o.path)?);
        }
    }
    let mut store = Store::Local(Arc::clone(local));
    let closure = runtime.block_on(store.closure(&roots))?;
    let mut inputs: Vec<String> = closure.iter().map(ToString::to_string).collect();
    inputs.sort();
    let outputs: Vec<String> = node
        .written
        .outputs
        .values()
        .filter(|o| !local.db().is_valid(o).unwrap_or(false))
        .map(ToString::to_string)
        .collect();
    Ok((inputs, outputs))
}

/// `offload-agent`: beside this program, else on PATH, else built with
/// the cargo that runs us (`cargo run -p offload-master -- demo`).
fn agent_program(json: bool) -> anyhow::Result<PathBuf> {
    let exe = daemon::this_program()?;
    let beside = exe.with_file_name("offload-agent");
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(found) = offload_files::paths::find_program("offload-agent") {
        return Ok(found);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        anyhow::bail!(
            "offload-agent is not installed beside {} nor on PATH: build it (`cargo build --release --bins`)",
            exe.display()
        );
    };
    say(json, "demo: building offload-agent (first run)...");
    let release = exe
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "release");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "offload-agent", "--bin", "offload-agent"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() || !beside.is_file() {
        anyhow::bail!("could not build offload-agent ({status})");
    }
    Ok(beside)
}
