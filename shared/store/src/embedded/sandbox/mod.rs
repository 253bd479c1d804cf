//! Starting a builder: in a sandbox (Nix's chroot model), or — only when
//! namespaces cannot be created and we are not root — directly.
//!
//! Both ways: the exact environment, stdin `/dev/null`, stdout and stderr
//! on one pipe, a process group of its own, killed if dropped.
//!
//! **Sandbox** (every build, when possible). util-linux `setpriv
//! --pdeathsig=KILL -- unshare --mount --propagation private --pid --ipc
//! --uts [--net] --fork --kill-child` (plus `--user --map-root-user` when
//! we are not root) runs a `bash` set-up script (module `script`,
//! written into the build's host-side sandbox directory, module
//! `scratch`) with a clean environment; the builder's environment is in a
//! file there that only we can read, never on a command line. It mounts
//! a tmpfs on `mount_point` (an empty directory under the store's root) and
//! makes a minimal root in it:
//!
//! * read-only binds of the host's `/bin` `/sbin` `/lib*` `/usr` (or their
//!   symlinks) — **not** `/etc`, which is generated: `passwd` (root, the
//!   build user, nobody), `group`, and `hosts` (localhost) — or, for a
//!   fixed-output derivation, the host's `resolv.conf`, `services` and
//!   `hosts` bound read-only with an `nsswitch.conf` of files and DNS;
//! * `/dev` with only `null zero full random urandom`, the `fd` `stdin`
//!   `stdout` `stderr` symlinks, a fresh `devpts` on `/dev/pts`
//!   (`/dev/ptmx` to it) and a tmpfs on `/dev/shm`: Nix 2.8's, without
//!   `tty` (the builder has no controlling terminal, below);
//! * a fresh `/proc` (of the new PID namespace), an empty `/tmp` (1777);
//! * at the logical store path the **scratch store**: a directory on the
//!   store's file system, writable only by the build user (1775, group of
//!   the build user), into which every path of the input closure is
//!   bind-mounted **read-only**; the builder creates its outputs there,
//!   and once its namespace is gone the job checks and canonicalises them
//!   there, then moves them into the real store;
//! * the build directory at its in-sandbox path (`/build` for Nix,
//!   `/tmp/guix-build-NAME.drv-0` for Guix).
//!
//! Non-fixed-output derivations get a network namespace of their own with
//! only the loopback interface (brought up, as Nix does); fixed-output
//! ones keep the host's network. The host name is `localhost`. The script
//! writes the marker `\2\n` (as Nix's child does) and executes `env -i --
//! K=V… setsid unshare --root=ROOT --wd=BUILD -- setpriv --pdeathsig=KILL
//! OPTIONS -- BUILDER ARGS…`: `setsid` makes the builder leave our session,
//! so it has no controlling terminal (and no way to push input into the
//! caller's with `TIOCSTI`; as process 1 it is never a group leader, so
//! `setsid` does not fork); `setpriv` empties the capability bounding and
//! inheritable sets and sets `no_new_privs`; when we are root it also
//! switches to the build's own build user (module `users`, no
//! supplementary groups). The builder thus holds no capability: it cannot
//! remount, leave its `chroot` (it has no `CAP_SYS_CHROOT`, and a chrooted
//! process may not create a user namespace to regain one), or change what
//! it does not own. It is process 1 of its PID namespace, so everything it
//! leaves dies with it, even
//! processes that called `setsid`; the namespace's init is killed by pid
//! file descriptor and waited for (module `kill`). Every mount disappears
//! with the namespace: nothing is mounted on the host.
//!
//! **Parent-death signals.** If we die (a crashed agent), so do our
//! builds: the outer `setpriv --pdeathsig=KILL` makes `unshare` receive
//! SIGKILL when its parent goes, and the inner one gives the namespace's
//! init the same signal when `unshare` goes (changing its user cleared the
//! one `--kill-child` set). The kernel sends a parent-death signal when
//! the *thread* that forked the child exits, not the process: builders are
//! spawned by the thread polling the build task — a runtime worker, which
//! lives as long as the runtime — never from `spawn_blocking`, whose idle
//! threads exit (nor may that thread be given up with `block_in_place`).
//! Between `fork` and `setpriv`'s `prctl` there is a window in which our
//! death goes unnoticed; the next `open` of the store sweeps what such a
//! build leaves in `tmp/`.
//!
//! Differences from Nix's sandbox: no `/dev/tty` (Nix binds it, though its
//! builder has no terminal either), the builder's `argv[0]` is its full
//! path (`setpriv` executes it so), a builder killed by SIGKILL shows as
//! exit code 1 (`unshare` cannot re-raise SIGKILL).
//!
//! **Direct** (the fallback when a probe shows that the namespaces cannot
//! be created, e.g. without unprivileged user namespaces; only when we are
//! not root — a builder never runs as root — and the store's real
//! directory is its logical one, and a warning says builds are not
//! isolated): the builder is executed as this user with
//! `argv[0]` = its basename and the build directory as working directory,
//! as Nix 2.8 does without sandbox, writing its outputs into the real
//! store. It inherits the caller's umask (Nix sets 022 at start-up; so
//! should our binaries) and session: it runs as the caller anyway.

mod kill;
mod scratch;
mod script;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

pub(crate) use self::kill::{BuildGuard, BuildProcesses, NAMESPACE_EXIT_LIMIT, kill_build};
pub(crate) use self::scratch::{Input, Scratch};

/// The byte the set-up script writes, on a line of its own, just before
/// it executes the builder.
pub(crate) const SETUP_DONE: u8 = 2;

/// How to start one builder.
pub(crate) struct Spec {
    /// The program.
    pub(crate) builder: String,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Its whole environment.
    pub(crate) env: BTreeMap<String, String>,
    /// Its working directory on the host.
    pub(crate) build_dir: PathBuf,
    /// Sandboxed or direct.
    pub(crate) isolation: Isolation,
    /// The build's claim on its outputs: dropped after the builder (which
    /// borrows this description), so never before its processes are gone.
    pub(crate) claim: Option<crate::embedded::claims::Claim>,
}

/// In a sandbox, or directly.
pub(crate) enum Isolation {
    /// Namespaces are not available: as this user, seeing everything.
    Direct,
    /// In a sandbox.
    Sandbox(Box<Sandbox>),
}

/// What the sandbox needs.
pub(crate) struct Sandbox {
    /// An empty directory to mount the new root's tmpfs on.
    pub(crate) mount_point: PathBuf,
    /// The scratch store, shown at the logical store path.
    pub(crate) scratch: Scratch,
    /// The store's logical directory.
    pub(crate) logical_store: PathBuf,
    /// Where the builder sees its build directory.
    pub(crate) build_dir_inside: PathBuf,
    /// A network namespace of its own (all but fixed-output derivations).
    pub(crate) private_network: bool,
    /// Who the builder is.
    pub(crate) user: User,
    /// The build user held for this build (as root): given back when the
    /// sandbox description is dropped, after the build's processes.
    pub(crate) build_user: Option<crate::embedded::users::BuildUser>,
    /// The programs used.
    pub(crate) programs: Programs,
}

/// Who a sandboxed builder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum User {
    /// We are root: this unprivileged user, without user namespace.
    Build {
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// We are not root: root of a user namespace that maps only us, with
    /// no capability.
    MapRoot,
}

impl User {
    /// A build user (the first; each build gets its own, module `users`)
    /// when we are root, else the user namespace.
    pub(crate) fn current() -> Self {
        if rustix::process::geteuid().is_root() {
            let first = crate::embedded::users::FIRST_BUILD_UID;
            Self::Build {
                uid: first,
                gid: first,
            }
        } else {
            Self::MapRoot
        }
    }

    /// The host uid and gid of the files the builder creates.
    pub(crate) fn host_owner(self) -> (u32, u32) {
        match self {
            Self::Build { uid, gid } => (uid, gid),
            Self::MapRoot => (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        }
    }
}

/// The host programs the sandbox set-up runs, by absolute path. `setpriv`
/// runs inside the new root, so it must be under one of the directories
/// bound there (`/usr`, `/bin`, …), as it is on Debian.
#[derive(Clone, Debug)]
pub(crate) struct Programs {
    unshare: PathBuf,
    mount: PathBuf,
    mkdir: PathBuf,
    ln: PathBuf,
    env: PathBuf,
    /// Runs the set-up script (it reads the builder's environment from a
    /// file, which POSIX sh cannot do).
    bash: PathBuf,
    setpriv: PathBuf,
    setsid: PathBuf,
    /// iproute2's `ip`, to bring the loopback interface up (skipped if
    /// missing).
    ip: Option<PathBuf>,
    /// `hostname`, to set the host name (skipped if missing).
    hostname: Option<PathBuf>,
}

impl Programs {
    /// Find them on the `PATH` or in the usual directories; the error
    /// names what is missing.
    pub(crate) fn find() -> Result<Self, String> {
        let need = |name: &str, package: &str| {
            find_program(name).ok_or_else(|| {
                format!("`{name}` (from {package}) is needed to run builds in a sandbox, but it is not on the PATH")
            })
        };
        Ok(Self {
            unshare: need("unshare", "util-linux")?,
            mount: need("mount", "util-linux")?,
            mkdir: need("mkdir", "coreutils")?,
            ln: need("ln", "coreutils")?,
            env: need("env", "coreutils")?,
            bash: need("bash", "bash")?,
            setpriv: need("setpriv", "util-linux")?,
            setsid: need("setsid", "util-linux")?,
            ip: find_program("ip"),
            hostname: find_program("hostname"),
        })
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    offload_files::paths::find_program(name).or_else(|| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

/// The shell that runs the namespaces' probe.
const SHELL: &str = "/bin/sh";

/// The `unshare` options that create a sandbox's namespaces.
fn unshare_args(user: User, private_network: bool) -> Vec<&'static str> {
    let mut args = vec![];
    if user == User::MapRoot {
        args.extend(["--user", "--map-root-user"]);
    }
    args.extend([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--ipc",
        "--uts",
    ]);
    if private_network {
        args.push("--net");
    }
    args.extend(["--fork", "--kill-child"]);
    args
}

/// Whether sandboxes can be made here: every namespace is created once,
/// for a process that does nothing; why not, if they cannot.
pub(crate) fn probe(programs: &Programs, user: User) -> Result<(), String> {
    let out = std::process::Command::new(&programs.unshare)
        .args(unshare_args(user, true))
        .args(["--", SHELL, "-c", ":"])
        .stdin(Stdio::null())
        .env_clear()
        .current_dir("/")
        .output()
        .map_err(|e| format!("running {}: {e}", programs.unshare.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare` cannot create the namespaces ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Start the builder; its process (leader of its own process group) and
/// the read end of its output pipe.
pub(crate) fn spawn(spec: &Spec) -> io::Result<(Child, pipe::Receiver)> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = match &spec.isolation {
        Isolation::Direct => direct(spec),
        Isolation::Sandbox(sb) => sandboxed(spec, sb)?,
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

/// The builder's environment, `NAME=VALUE\0` each, in a file only we
/// can read: never in a command line, where every user of the host would
/// see it for as long as the build runs (`unshare`, which waits for the
/// build, keeps its arguments). Names with `=` and anything with NUL
/// cannot be passed and are refused.
fn write_environment(file: &Path, env: &BTreeMap<String, String>) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut text = Vec::new();
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("environment variable {k:?} cannot be passed to a builder"),
            ));
        }
        text.extend_from_slice(k.as_bytes());
        text.push(b'=');
        text.extend_from_slice(v.as_bytes());
        text.push(0);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(&text)
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

fn sandboxed(spec: &Spec, sb: &Sandbox) -> io::Result<Command> {
    let script = sb.scratch.script();
    std::fs::write(&script, script::setup(spec, sb))?;
    let env_file = sb.scratch.environment();
    write_environment(&env_file, &spec.env)?;
    let p = &sb.programs;
    let mut cmd = Command::new(&p.setpriv);
    cmd.args(["--pdeathsig=KILL", "--"])
        .arg(&p.unshare)
        .args(unshare_args(sb.user, sb.private_network))
        .arg("--")
        .arg(&p.bash)
        .arg(&script)
        .arg(&env_file)
        .arg(&p.env)
        .args(["-i", "--"]);
    let mut root_arg = OsString::from("--root=");
    root_arg.push(&sb.mount_point);
    let mut wd_arg = OsString::from("--wd=");
    wd_arg.push(&sb.build_dir_inside);
    cmd.arg(&p.setsid)
        .arg(&p.unshare)
        .arg(root_arg)
        .arg(wd_arg)
        .arg("--")
        .arg(&p.setpriv)
        .arg("--pdeathsig=KILL");
    if let User::Build { uid, gid } = sb.user {
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
    }
    cmd.args([
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ])
    .arg(&spec.builder)
    .args(&spec.args)
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("LC_ALL", "C")
    .current_dir("/");
    Ok(cmd)
}
