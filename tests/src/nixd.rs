//! A real Nix 2.8 with an isolated store, and its daemon.
//!
//! The store directory, state, logs and configuration all live under one
//! temporary directory (`nix-daemon.md` §3): the real store directory is the
//! logical one, so no sandbox is needed and nothing is written under `/nix`.
//! Builds run as the current user (`build-users-group =`), without sandbox,
//! substituters or network.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{require_program, run_ok};

/// An isolated Nix store under a temporary directory.
pub struct IsolatedNix {
    root: std::path::PathBuf,
    _tmp: Option<TempDir>,
}

impl Default for IsolatedNix {
    fn default() -> Self {
        Self::new()
    }
}

impl IsolatedNix {
    /// A fresh, empty store (created by Nix on first use).
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("nixd-")
            .tempdir()
            .expect("create a temporary directory");
        Self {
            root: root.path().to_owned(),
            _tmp: Some(root),
        }
    }

    /// A store under `root` (kept when dropped; for benchmarks that reuse
    /// one path).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            _tmp: None,
        }
    }

    /// The directory holding everything.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store directory (logical and real).
    pub fn store_dir(&self) -> PathBuf {
        self.root().join("store")
    }

    /// `NIX_STATE_DIR`.
    pub fn state_dir(&self) -> PathBuf {
        self.root().join("var")
    }

    /// The SQLite database of the store.
    pub fn db(&self) -> PathBuf {
        self.state_dir().join("db/db.sqlite")
    }

    /// The daemon's socket (once `start_daemon` has run).
    pub fn socket(&self) -> PathBuf {
        self.state_dir().join("daemon-socket/socket")
    }

    /// The environment that confines Nix programs to this store.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = crate::nix_confined_to(self.root());
        env.push(("NIX_STORE_DIR", self.store_dir().into_os_string()));
        env
    }

    /// A Nix program (`nix-store`, `nix-instantiate`, …) confined to this
    /// store, working on it directly (not through the daemon).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(require_program(program, "nix-bin"));
        cmd.envs(self.env()).env_remove("NIX_REMOTE");
        cmd
    }

    /// Run a Nix program that must succeed; its stdout, trimmed.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = run_ok(self.command(program).args(args), b"");
        String::from_utf8_lossy(&out).trim().to_owned()
    }

    /// `nix-instantiate --expr EXPR`: the .drv path.
    pub fn instantiate(&self, expr: &str) -> String {
        self.run("nix-instantiate", &["--expr", expr])
    }

    /// `nix-store --verify --check-contents` must succeed and report nothing
    /// but its progress lines (a modified or missing item is a line of its own).
    pub fn assert_verify_clean(&self) {
        const PROGRESS: [&str; 4] = [
            "reading the Nix store...",
            "checking path existence...",
            "checking link hashes...",
            "checking store hashes...",
        ];
        let out = self
            .command("nix-store")
            .args(["--verify", "--check-contents"])
            .output()
            .expect("run nix-store --verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let unexpected: Vec<&str> = stderr.lines().filter(|l| !PROGRESS.contains(l)).collect();
        assert!(
            out.status.success() && unexpected.is_empty(),
            "nix-store --verify --check-contents ({}):\n{stderr}",
            out.status
        );
    }

    /// Start `nix-daemon` on this store; it stops when the guard is dropped.
    pub fn start_daemon(&self) -> DaemonGuard {
        // A socket left by an earlier daemon would look ready too soon.
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::File::create(self.root().join("nix-daemon.log")).expect("daemon log");
        let child = self
            .command("nix-daemon")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("daemon log"))
            .stderr(log)
            .spawn()
            .expect("start nix-daemon");
        let guard = DaemonGuard { child };
        let socket = self.socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Not a test connection: two first connections at once race to
        // create the store's database, and one of them is reset. And not
        // the socket file alone: it exists from bind(), before listen()
        // (a connection then is refused). The kernel's table says when
        // the socket listens.
        while !listening(&socket) {
            assert!(
                Instant::now() < deadline,
                "nix-daemon did not listen on {} within 10 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        guard
    }

    /// A C-style expression for a derivation built by `/bin/sh -c SCRIPT`.
    pub fn sh_derivation(name: &str, script: &str) -> String {
        format!(
            "derivation {{ name = \"{name}\"; system = builtins.currentSystem; \
             builder = \"/bin/sh\"; args = [\"-c\" {script:?}]; }}"
        )
    }
}

/// Whether a Unix socket bound at `path` listens (`/proc/net/unix`: the
/// flag `__SO_ACCEPTCON`, 0x10000).
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.display().to_string();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == want
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & 0x10000 != 0)
    })
}

/// A running `nix-daemon`; killed and reaped on drop.
pub struct DaemonGuard {
    child: Child,
}

impl DaemonGuard {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
