//! What the embedded store's builder tests share: derivations made by
//! Nix 2.8, stores to build them in, and checks against the Nix daemon.

#![allow(dead_code, unused_imports)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use offload_core::export::Limits;
use offload_core::nixbase32;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::daemon::{self, BuildMode, Connection, DaemonClient, Dialect, Options};
use offload_store::embedded::EmbeddedStore;
use offload_store::embedded::build::{
    self, BuildEvent, BuildOptions, BuildResult, BuildStatus, Exit,
};
use offload_store::local::Signatures;
use offload_tests::nixd::IsolatedNix;
use offload_tests::{nix_store_url, run_ok};
use sha2::{Digest, Sha256};

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(crate) fn path(p: &str) -> StorePath {
    StorePath::parse(p).unwrap_or_else(|e| panic!("store path {p:?}: {e}"))
}

/// A `/bin/sh -c SCRIPT` derivation with extra attributes.
pub(crate) fn sh(name: &str, script: &str, extra: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [\"-c\" {script:?}]; {extra} }}"
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Build options for the tests: one core, as the Nix daemon is told.
pub(crate) fn opts() -> BuildOptions {
    BuildOptions {
        cores: 1,
        max_jobs: 2,
        ..BuildOptions::default()
    }
}

/// Import the closure of `drv` from a Nix store (`store_args`: how to
/// name it to `nix-store`) into `store`.
pub(crate) fn import_closure(
    nix: &IsolatedNix,
    store_args: &[&str],
    store: &EmbeddedStore,
    drv: &str,
) {
    let closure = nix.run("nix-store", &[store_args, &["-qR", drv]].concat());
    let mut export = nix.command("nix-store");
    export
        .args(store_args)
        .arg("--export")
        .args(closure.lines());
    let stream = run_ok(&mut export, b"");
    store
        .local()
        .import(
            &stream[..],
            Signatures::Ignore,
            Limits::default(),
            &mut |_| {},
        )
        .expect("import the .drv closure into the embedded store");
}

/// Run `build` and collect its events.
pub(crate) fn build_all(
    store: &EmbeddedStore,
    drvs: &[&str],
    opts: &BuildOptions,
) -> (Vec<BuildResult>, Vec<BuildEvent>) {
    let drvs: Vec<StorePath> = drvs.iter().map(|d| path(d)).collect();
    let mut events = Vec::new();
    let results = rt()
        .block_on(build::build(store, &drvs, opts, &mut |e| events.push(e)))
        .expect("build");
    (results, events)
}

/// The log lines of `drv` among `events`.
pub(crate) fn log_lines(events: &[BuildEvent], drv: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Log { drv: d, line } if d.to_string() == drv => {
                Some(String::from_utf8_lossy(line).into_owned())
            }
            _ => None,
        })
        .collect()
}

pub(crate) async fn connect(nix: &IsolatedNix) -> DaemonClient<Connection> {
    let conn = daemon::connect_unix(&nix.socket()).await.expect("connect");
    let mut client = DaemonClient::handshake(conn, Some(Dialect::Nix))
        .await
        .expect("handshake");
    client
        .set_options(&Options {
            build_cores: 1,
            ..Options::default()
        })
        .await
        .expect("set-options");
    client
}

/// An embedded store whose logical directory is `nix`'s store directory
/// (so its builders run in a namespace), with `drvs` imported.
pub(crate) fn namespace_store(nix: &IsolatedNix, drvs: &[&str]) -> EmbeddedStore {
    let dir = StoreDir::new(nix.store_dir().to_str().expect("UTF-8 path")).expect("store dir");
    let store = EmbeddedStore::open(&nix.root().join("embedded"), dir).expect("open");
    for drv in drvs {
        import_closure(nix, &[], &store, drv);
    }
    store
}

/// An embedded store under `nix`'s directory whose logical directory is
/// its real one (builders run directly), and a `nix-instantiate` for it.
pub(crate) struct Direct<'a> {
    pub(crate) nix: &'a IsolatedNix,
    pub(crate) store: EmbeddedStore,
}

impl<'a> Direct<'a> {
    pub(crate) fn new(nix: &'a IsolatedNix) -> Self {
        let root = nix.root().join("direct");
        let real = root.join("store");
        std::fs::create_dir_all(&real).expect("mkdir");
        let dir = StoreDir::new(real.to_str().expect("UTF-8 path")).expect("store dir");
        let store = EmbeddedStore::open(&root, dir).expect("open");
        Self { nix, store }
    }

    /// Nix confined to a second state directory, with this store's
    /// directory as its store.
    pub(crate) fn nix(&self, program: &str) -> std::process::Command {
        let mut cmd = self.nix.command(program);
        cmd.env("NIX_STORE_DIR", self.store.local().real_dir())
            .env("NIX_STATE_DIR", self.nix.root().join("direct-nix"));
        cmd
    }

    /// Instantiate `expr` and import its `.drv` closure.
    pub(crate) fn instantiate(&mut self, expr: &str) -> String {
        let out = run_ok(self.nix("nix-instantiate").args(["--expr", expr]), b"");
        let drv = String::from_utf8_lossy(&out).trim().to_owned();
        let closure = run_ok(self.nix("nix-store").args(["-qR", &drv]), b"");
        let closure = String::from_utf8_lossy(&closure).into_owned();
        let stream = run_ok(
            self.nix("nix-store").arg("--export").args(closure.lines()),
            b"",
        );
        self.store
            .local()
            .import(
                &stream[..],
                Signatures::Ignore,
                Limits::default(),
                &mut |_| {},
            )
            .expect("import");
        drv
    }
}

/// Our registration of every output of `result` equals the daemon's.
pub(crate) async fn assert_same_as_daemon(
    client: &mut DaemonClient<Connection>,
    store: &EmbeddedStore,
    result: &BuildResult,
) {
    assert_eq!(result.status, BuildStatus::Built, "{result:?}");
    assert!(!result.outputs.is_empty());
    for (name, out) in &result.outputs {
        let theirs = client
            .query_path_info(out)
            .await
            .expect("path info")
            .unwrap_or_else(|| panic!("Nix did not build {out}"));
        let ours = store
            .local()
            .db()
            .path_info(out)
            .expect("path info")
            .unwrap_or_else(|| panic!("{out} is not registered"));
        let real = store.local().real_path(out);
        assert_eq!(
            (ours.nar_hash, ours.nar_size),
            (theirs.nar_hash, theirs.nar_size),
            "NAR of output {name} {out}; ours: {}",
            describe(&real)
        );
        assert_eq!(ours.references, theirs.references, "references of {out}");
        assert_eq!(ours.deriver, Some(result.drv.clone()), "deriver of {out}");
        assert_eq!(theirs.deriver, Some(result.drv.clone()));
    }
}

/// A file's contents or a directory's listing, for failure messages.
pub(crate) fn describe(p: &Path) -> String {
    if p.is_dir() {
        format!("directory {:?}", std::fs::read_dir(p).map(|d| d.count()))
    } else {
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
    }
}
