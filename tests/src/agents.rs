//! Agents in-process for tests: keys and ACLs for a master and an agent,
//! derivations with `/gnu/store` paths (made by a real `nix-instantiate`
//! into a chroot store, so nothing is created under `/gnu`), signed export
//! streams of them, and a running service on a loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use offload_agent::service::{self, Config, Service};
use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::store_path::{StoreDir, StorePath};
use offload_master::agent_link::{AgentLink, Expect, LinkError};
use offload_store::local::Signatures;
use offload_store::spec::StoreSpec;
use offload_store::store::Store;

use crate::nixd::IsolatedNix;
use crate::{nix_store_url, run_ok};

/// A Guix key made from a seed (tests only: not random).
pub fn key(seed: u8) -> Arc<SecretKey> {
    Arc::new(SecretKey::from_random(&[seed; 32]))
}

/// An ACL holding `keys`.
pub fn acl_of(keys: &[&SecretKey]) -> Acl {
    let mut acl = Acl::default();
    for k in keys {
        acl.authorize(k.public_key());
    }
    acl
}

/// Derivations for `/gnu/store`, made by Nix 2.8 in a chroot store.
pub struct Drvs {
    nix: IsolatedNix,
    url: String,
}

impl Default for Drvs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drvs {
    /// An empty chroot store.
    pub fn new() -> Self {
        let nix = IsolatedNix::new();
        let url = nix_store_url(&nix.root().join("chroot"), "/gnu/store");
        Self { nix, url }
    }

    /// `/bin/sh -c SCRIPT` as a derivation named `name` (outputs `out`);
    /// its `.drv` path.
    pub fn sh(&self, name: &str, script: &str) -> String {
        self.instantiate(&IsolatedNix::sh_derivation(name, script))
    }

    /// `nix-instantiate --expr EXPR` into the chroot store.
    pub fn instantiate(&self, expr: &str) -> String {
        self.nix
            .run("nix-instantiate", &["--store", &self.url, "--expr", expr])
    }

    /// The closure of `paths`, references first.
    pub fn closure(&self, paths: &[&str]) -> Vec<String> {
        let out = self.nix.run(
            "nix-store",
            &[&["--store", &self.url, "-qR"], paths].concat(),
        );
        out.lines().map(str::to_owned).collect()
    }

    /// An export stream of `paths` (in this order), signed with `key`:
    /// exported by Nix unsigned, then re-exported through an embedded store.
    pub async fn signed_export(&self, paths: &[String], key: &SecretKey) -> Vec<u8> {
        let mut export = self.nix.command("nix-store");
        export.args(["--store", &self.url, "--export"]).args(paths);
        let unsigned = run_ok(&mut export, b"");
        let root = tempfile::tempdir().expect("tempdir");
        {
            let mut store = Store::open(
                &StoreSpec::Embedded(root.path().to_owned()),
                StoreDir::default(),
            )
            .await
            .expect("scratch store");
            store
                .import(&unsigned[..], Signatures::Ignore, &mut |_| {})
                .await
                .expect("import Nix's export");
            let parsed: Vec<StorePath> = paths
                .iter()
                .map(|p| StorePath::parse(p).expect("store path"))
                .collect();
            let mut out = Vec::new();
            store.export(&parsed, key, &mut out).await.expect("export");
            out
        }
    }
}

/// A multi-threaded runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An agent serving on 127.0.0.1, with an embedded `/gnu/store` store.
pub struct TestAgent {
    /// Its service.
    pub service: Arc<Service>,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its key.
    pub key: Arc<SecretKey>,
    /// Its state and store.
    pub dir: tempfile::TempDir,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    /// Start an agent with `slots` build slots, key `key`, serving the
    /// masters in `acl`, on `rt`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        key: Arc<SecretKey>,
        acl: Acl,
        config: Config,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agent-")
            .tempdir()
            .expect("tempdir");
        let store_root = dir.path().join("store");
        rt.block_on(async {
            let store = Store::open(&StoreSpec::Embedded(store_root), StoreDir::default())
                .await
                .expect("agent store");
            let service = Service::new(config, Arc::clone(&key), acl, store);
            let endpoint =
                service::quic::endpoint(&service, ([127, 0, 0, 1], 0).into()).expect("endpoint");
            let addr = endpoint.local_addr().expect("addr");
            let tasks = vec![
                tokio::spawn(service::quic::serve(
                    Arc::clone(&service),
                    endpoint.clone(),
                    std::future::pending(),
                )),
                tokio::spawn(Arc::clone(&service).run_lease_timer()),
            ];
            Self {
                service,
                addr,
                key,
                dir,
                endpoint,
                tasks,
            }
        })
    }

    /// The agent's store root (`embedded:` directory).
    pub fn store_root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether `path` is a valid item of the agent's store.
    pub fn has(&self, path: &str) -> bool {
        store_has(&self.store_root(), path)
    }

    /// Stop serving: close every connection.
    pub fn stop(&self) {
        self.endpoint.close(0u32.into(), b"test over");
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A configuration for tests.
pub fn config(slots: u32) -> Config {
    Config {
        name: "test-agent".into(),
        systems: vec![crate::current_system()],
        features: vec![],
        speed: 1.0,
        slots,
        lease_ttl: Duration::from_secs(60),
        cores: 1,
        max_log_size: None,
        impure_env: std::collections::BTreeMap::new(),
    }
}

/// Connect to `agent` as the master holding `key`, accepting agents in `acl`.
pub async fn connect(
    addr: SocketAddr,
    key: &Arc<SecretKey>,
    acl: &Acl,
    fingerprint: Option<String>,
) -> Result<AgentLink, LinkError> {
    AgentLink::connect_quic(
        addr,
        Arc::clone(key),
        Expect {
            acl: Arc::new(acl.clone()),
            fingerprint,
        },
    )
    .await
}

/// Wait up to `limit` for `f` to hold; whether it did.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A UDP relay between one client and `target` that can be cut, so that
/// a peer vanishes without a word (as when it is killed or unplugged).
pub struct UdpRelay {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    /// A relay to `target` (inside a runtime).
    pub async fn start(target: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        back.connect(target).await.expect("connect");
        let addr = front.local_addr().expect("addr");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let cut = Arc::clone(&cut);
            tokio::spawn(async move {
                let mut client: Option<SocketAddr> = None;
                let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
                loop {
                    tokio::select! {
                        Ok((n, from)) = front.recv_from(&mut a) => {
                            client = Some(from);
                            if !cut.load(std::sync::atomic::Ordering::Relaxed) {
                                let _ = back.send(&a[..n]).await;
                            }
                        }
                        Ok(n) = back.recv(&mut b) => {
                            if let (Some(c), false) = (client, cut.load(std::sync::atomic::Ordering::Relaxed)) {
                                let _ = front.send_to(&b[..n], c).await;
                            }
                        }
                    }
                }
            })
        };
        Self { addr, cut, task }
    }

    /// Drop every packet from now on, both ways.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `offload-agent run` on host `host` of `lan` as agent `name`: its key
/// is made under `work/name/keys`, its store and state under `work/name`,
/// and it serves the masters of the ACL `masters_acl`; mDNS only on the
/// host's veth. Returns the command (add flags) and the key directory.
pub fn lan_agent(
    lan: &crate::lan::Lan,
    host: usize,
    name: &str,
    masters_acl: &std::path::Path,
    work: &std::path::Path,
) -> (std::process::Command, PathBuf) {
    let dir = work.join(name);
    let keys = dir.join("keys");
    crate::generate_key(&keys);
    let mut cmd = lan.command(host, crate::bin("offload-agent"));
    cmd.env("RUST_LOG", "warn")
        .args(["run", "--name", name, "--key"])
        .arg(keys.join("signing-key.sec"))
        .arg("--acl")
        .arg(masters_acl)
        .arg("--store")
        .arg(format!("embedded:{}", dir.join("store").display()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--interface", &lan.hosts()[host].iface]);
    (cmd, keys)
}

/// Start `offload-master serve` on host `i` of `lan` with the key, ACL and
/// machines.scm of the configuration directory `etc`, listening at
/// `socket`; its pid.
pub fn start_serve(
    lan: &crate::lan::Lan,
    i: usize,
    etc: &std::path::Path,
    socket: &std::path::Path,
) -> u32 {
    let mut serve = lan.command(i, crate::bin("offload-master"));
    serve
        .env("RUST_LOG", "warn")
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--machines")
        .arg(etc.join("machines.scm"))
        .arg("--acl")
        .arg(etc.join("acl"))
        .arg("--key")
        .arg(etc.join("signing-key.sec"))
        .args(["--interface", &lan.hosts()[i].iface]);
    lan.spawn(serve)
}

/// Wait (up to 30 s) until the `serve` at `socket` lists `n` machines,
/// all linked and healthy; whether it did.
pub fn wait_linked(socket: &std::path::Path, n: usize) -> bool {
    wait_for(Duration::from_secs(30), || {
        offload_master::serve::ask(socket, true)
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|m| m.len() == n && m.iter().all(|m| m["health"] == "ok"))
    })
}

/// Whether the embedded store at `root` holds `path` (read beside the
/// agent that runs on it).
pub fn store_has(root: &std::path::Path, path: &str) -> bool {
    let db =
        offload_store::db::Db::open(&root.join("var/db/db.sqlite")).expect("embedded store db");
    db.is_valid(&StorePath::parse(path).expect("store path"))
        .expect("query")
}
