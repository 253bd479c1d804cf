//! Starting a builder: directly, or in a private mount namespace whose root
//! shows the store at its logical path.
//!
//! Both ways: the exact environment, stdin `/dev/null`, stdout and stderr
//! on one pipe, a process group of its own (so that it and its children
//! can be killed together), killed if dropped.
//!
//! **Direct** (the store's real directory is its logical one): the builder
//! is executed with `argv[0]` = its basename and the build directory as
//! working directory, as Nix 2.8 does without a sandbox. It inherits the
//! caller's umask (Nix sets 022 at start-up; so should our binaries).
//!
//! **Namespace** (they differ, e.g. `/gnu/store` kept under the embedded
//! store's root): util-linux `unshare --mount --propagation private --pid
//! --fork --kill-child` (plus `--map-root-user` when not root) runs a
//! `/bin/sh` set-up script with a clean environment. It mounts a tmpfs on
//! `mount_point` (an empty directory under the store's root), makes a
//! minimal root in it — symlinks or read-only bind mounts of `/bin`
//! `/sbin` `/lib*` `/usr` `/etc`, a recursive bind of `/dev`, a fresh
//! `/proc`, an empty `/tmp` (1777), the real store directory bound at the
//! logical path and the build directory at its own path — sets umask 022,
//! writes the marker `\2\n` (as Nix's child does) and executes
//! `env -i -- K=V… unshare --root=ROOT --wd=BUILD_DIR -- BUILDER ARGS…`.
//! `env` runs outside the new root with the builder's environment only
//! for the final `exec`; `unshare --root` takes the builder's path as a
//! plain argument, so neither `=` in a path nor odd variable names are
//! reinterpreted. The builder is process 1 of its PID namespace, as in
//! Nix's sandbox, so everything it leaves dies with it, and every mount
//! disappears with the namespace: nothing is created or mounted on the
//! host outside the store's root. Differences from the direct way: the
//! builder's `argv[0]` is its full path, and a builder killed by SIGKILL
//! shows as exit code 1 (`unshare` cannot re-raise SIGKILL).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// The byte the set-up script writes, on a line of its own, just before
/// it executes the builder.
pub(crate) const SETUP_DONE: u8 = 2;

/// Host directories made visible in the namespace's root.
const HOST_DIRS: [&str; 8] = [
    "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc",
];

/// How to start one builder.
pub(crate) struct Spec {
    /// The program.
    pub(crate) builder: String,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Its whole environment.
    pub(crate) env: BTreeMap<String, String>,
    /// Its working directory, at the same path inside and outside.
    pub(crate) build_dir: PathBuf,
    /// Directly or in a namespace.
    pub(crate) isolation: Isolation,
}

/// Directly, or in a mount namespace.
pub(crate) enum Isolation {
    /// The store is at its logical path already.
    Direct,
    /// The store must be shown at its logical path.
    Namespace(Namespace),
}

/// What the namespace needs.
pub(crate) struct Namespace {
    /// An empty directory to mount the new root's tmpfs on.
    pub(crate) mount_point: PathBuf,
    /// The store's real directory.
    pub(crate) real_store: PathBuf,
    /// The store's logical directory.
    pub(crate) logical_store: PathBuf,
    /// Whether to map the current user to root in a user namespace.
    pub(crate) map_root_user: bool,
    /// The programs used.
    pub(crate) programs: Programs,
}

/// The host programs the namespace set-up runs, by absolute path.
#[derive(Clone, Debug)]
pub(crate) struct Programs {
    unshare: PathBuf,
    mount: PathBuf,
    mkdir: PathBuf,
    ln: PathBuf,
    env: PathBuf,
}

impl Programs {
    /// Find them on the `PATH`; the error names what is missing.
    pub(crate) fn find() -> Result<Self, String> {
        let find = |name: &str, package: &str| {
            offload_files::paths::find_program(name).ok_or_else(|| {
                format!("`{name}` (from {package}) is needed to show the store at its logical path, but it is not on the PATH")
            })
        };
        Ok(Self {
            unshare: find("unshare", "util-linux")?,
            mount: find("mount", "util-linux")?,
            mkdir: find("mkdir", "coreutils")?,
            ln: find("ln", "coreutils")?,
            env: find("env", "coreutils")?,
        })
    }
}

/// Start the builder; its process (leader of its own process group) and
/// the read end of its output pipe.
pub(crate) fn spawn(spec: &Spec) -> io::Result<(Child, pipe::Receiver)> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = match &spec.isolation {
        Isolation::Direct => direct(spec),
        Isolation::Namespace(ns) => namespaced(spec, ns),
    };
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    // The command holds copies of the pipe's write end: drop them, or the
    // end of the builder's output would never be seen.
    drop(cmd);
    let receiver = pipe::Receiver::from_owned_fd(reader.into())?;
    Ok((child, receiver))
}

fn direct(spec: &Spec) -> Command {
    let mut cmd = Command::new(&spec.builder);
    let base = spec.builder.rsplit('/').next().unwrap_or(&spec.builder);
    cmd.arg0(base)
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.build_dir);
    cmd
}

fn namespaced(spec: &Spec, ns: &Namespace) -> Command {
    let p = &ns.programs;
    let root = &ns.mount_point;
    let inside = |path: &Path| {
        let rel = path.strip_prefix("/").unwrap_or(path);
        root.join(rel)
    };
    let mut s = ScriptWriter::default();
    s.line(&["set", "-e"]);
    s.cmd(
        &p.mount,
        &["-t", "tmpfs", "-o", "mode=0755", "offload-sandbox"],
        &[root],
    );
    s.cmd(&p.mkdir, &["-m", "1777"], &[&root.join("tmp")]);
    let mut dirs = vec![root.join("dev"), root.join("proc")];
    let mut binds = Vec::new();
    for name in HOST_DIRS {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    s.cmd(&p.ln, &["-s"], &[&target, &root.join(name)]);
                }
            }
            Ok(m) if m.is_dir() => {
                dirs.push(root.join(name));
                binds.push(host);
            }
            _ => {}
        }
    }
    dirs.push(inside(&ns.logical_store));
    dirs.push(inside(&spec.build_dir));
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    s.cmd(&p.mkdir, &["-p"], &dir_refs);
    for host in &binds {
        s.cmd(&p.mount, &["--bind", "-o", "ro"], &[host, &inside(host)]);
    }
    s.cmd(
        &p.mount,
        &["--rbind"],
        &[Path::new("/dev"), &root.join("dev")],
    );
    s.cmd(&p.mount, &["-t", "proc", "proc"], &[&root.join("proc")]);
    s.cmd(
        &p.mount,
        &["--bind"],
        &[&ns.real_store, &inside(&ns.logical_store)],
    );
    s.cmd(
        &p.mount,
        &["--bind"],
        &[&spec.build_dir, &inside(&spec.build_dir)],
    );
    s.line(&["umask", "022"]);
    s.line(&["printf", "'\\002\\n'", ">&2"]);
    s.line(&["exec", "\"$@\""]);

    let mut cmd = Command::new(&p.unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
    ]);
    if ns.map_root_user {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--", "/bin/sh", "-c"])
        .arg(OsString::from_vec(s.text))
        .arg("sh")
        .arg(&p.env)
        .args(["-i", "--"]);
    for (k, v) in &spec.env {
        cmd.arg(format!("{k}={v}"));
    }
    let mut root_arg = OsString::from("--root=");
    root_arg.push(root);
    let mut wd_arg = OsString::from("--wd=");
    wd_arg.push(&spec.build_dir);
    cmd.arg(&p.unshare)
        .arg(root_arg)
        .arg(wd_arg)
        .arg("--")
        .arg(&spec.builder)
        .args(&spec.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/");
    cmd
}

/// A POSIX shell script, every path single-quoted.
#[derive(Default)]
struct ScriptWriter {
    text: Vec<u8>,
}

impl ScriptWriter {
    fn line(&mut self, words: &[&str]) {
        self.text.extend_from_slice(words.join(" ").as_bytes());
        self.text.push(b'\n');
    }

    fn cmd(&mut self, program: &Path, options: &[&str], paths: &[&Path]) {
        self.quote(program.as_os_str());
        for o in options {
            self.text.push(b' ');
            self.quote(OsStr::new(o));
        }
        for p in paths {
            self.text.push(b' ');
            self.quote(p.as_os_str());
        }
        self.text.push(b'\n');
    }

    fn quote(&mut self, word: &OsStr) {
        self.text.push(b'\'');
        for &b in word.as_bytes() {
            if b == b'\'' {
                self.text.extend_from_slice(b"'\\''");
            } else {
                self.text.push(b);
            }
        }
        self.text.push(b'\'');
    }
}

/// Kill process group `pgid` with SIGKILL.
pub(crate) fn kill_group_blocking(pgid: u32) {
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pgid, "cannot kill process group: {e}"),
    }
}

/// [`kill_group_blocking`] without blocking the runtime.
pub(crate) async fn kill_group(pgid: u32) {
    let _ = tokio::task::spawn_blocking(move || kill_group_blocking(pgid)).await;
}

/// Kills a process group when dropped, unless disarmed first (once its
/// leader has been reaped, its id may be reused).
pub(crate) struct GroupGuard(Option<u32>);

impl GroupGuard {
    /// Guard group `pgid`.
    pub(crate) fn new(pgid: Option<u32>) -> Self {
        Self(pgid)
    }

    /// Do nothing when dropped.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group_blocking(pgid);
        }
    }
}
