//! Killing a builder and everything it started, and knowing that it is
//! gone.
//!
//! The process started is the leader of its own process group. Directly,
//! killing that group is all that can be done (a child that called
//! `setsid` escapes it, as under Nix without build users). In a sandbox,
//! the leader is the outer `unshare`, whose only child is process 1 of the
//! build's PID namespace: killing that child kills the whole namespace,
//! whatever sessions or groups its processes made. The child is found in
//! `/proc` (as soon as the set-up is done, and again when killing) and
//! held by a pid file descriptor, so that no reused pid is ever signalled.
//!
//! Killing is not dying: process 1 of a PID namespace only ends once the
//! kernel has killed **and reaped** every other process of it, and that
//! can take a while (large address spaces to free, processes in
//! uninterruptible sleep). Until then they may still hold the build's
//! directories. So the init is waited for — until its pid file
//! descriptor's `/proc/self/fdinfo` shows `Pid: -1`, i.e. it has been
//! reaped (by `unshare`, which is left alive for that), hence after the
//! rest of its namespace — for at most [`NAMESPACE_EXIT_LIMIT`];
//! only then is the process group killed. Whoever cleans up afterwards
//! asks [`kill_build`] whether the namespace is gone.

use std::fs;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

/// How long a killed build's PID namespace may take to end.
pub(crate) const NAMESPACE_EXIT_LIMIT: Duration = Duration::from_secs(30);

/// The processes of one build.
#[derive(Debug)]
pub(crate) struct BuildProcesses {
    /// The leader, also its process group.
    leader: u32,
    /// In a PID namespace (a sandbox).
    namespace: bool,
    /// The namespace's init, once seen.
    init: Option<OwnedFd>,
    /// Set when the namespace would not end: its directories stay.
    lingering: Option<Arc<AtomicBool>>,
}

impl BuildProcesses {
    /// The build led by `leader`, in a PID namespace or not.
    pub(crate) fn new(leader: u32, namespace: bool) -> Self {
        Self {
            leader,
            namespace,
            init: None,
            lingering: None,
        }
    }

    /// Set `flag` if the namespace does not end when killed (so that a
    /// directory it may still use is left in place).
    pub(crate) fn on_lingering(mut self, flag: Arc<AtomicBool>) -> Self {
        self.lingering = Some(flag);
        self
    }

    /// Take hold of the namespace's init now (it is running: the set-up
    /// script it runs said so), so that it can be waited for whatever
    /// becomes of the leader.
    pub(crate) fn find_init(&mut self) {
        if self.namespace && self.init.is_none() {
            self.init = child_of(self.leader);
        }
    }

    /// Kill everything; whether the build's namespace is gone (always
    /// true for a direct build). Fails closed: a namespace whose init was
    /// never held counts as gone only once the leader (`unshare`, which
    /// waits for init) has exited.
    fn kill_blocking(mut self) -> bool {
        let mut gone = true;
        if self.namespace {
            self.find_init();
            gone = match &self.init {
                Some(init) => kill_and_wait(init, NAMESPACE_EXIT_LIMIT),
                None => {
                    kill_leader_group(self.leader);
                    wait_until(NAMESPACE_EXIT_LIMIT, || has_exited(self.leader))
                }
            };
            if !gone {
                if let Some(flag) = &self.lingering {
                    flag.store(true, Ordering::SeqCst);
                }
                tracing::warn!(
                    pid = self.leader,
                    "the build's PID namespace did not end within {} seconds of being killed",
                    NAMESPACE_EXIT_LIMIT.as_secs()
                );
            }
        }
        kill_leader_group(self.leader);
        gone
    }
}

/// SIGKILL the process group led by `leader` (what is left outside the
/// namespace: `setpriv` and `unshare`).
fn kill_leader_group(leader: u32) {
    let Some(pid) = i32::try_from(leader).ok().and_then(Pid::from_raw) else {
        return;
    };
    match rustix::process::kill_process_group(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pgid = leader, "cannot kill process group: {e}"),
    }
}

/// Whether `pid` has exited (gone, or a zombie waiting to be reaped).
fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// Poll `done` until it holds or `limit` passes; whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kill the build (see [`BuildProcesses`]) without blocking the runtime;
/// whether its namespace is gone, so that its directories may be touched.
pub(crate) async fn kill_build(procs: BuildProcesses) -> bool {
    tokio::task::spawn_blocking(move || procs.kill_blocking())
        .await
        .unwrap_or(false)
}

/// SIGKILL the process of `fd` (the namespace's init), then wait (at most
/// `limit`) until it has exited. An init exits only after every other
/// process of its namespace is gone, which is what matters here.
fn kill_and_wait(fd: &OwnedFd, limit: Duration) -> bool {
    match rustix::process::pidfd_send_signal(fd, Signal::KILL) {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => return true,
        Err(e) => tracing::warn!("cannot kill the build's namespace: {e}"),
    }
    wait_until(limit, || exited(fd))
}

/// Whether the process of pid file descriptor `fd` has exited: the
/// descriptor is then readable (Linux ≥ 5.3).
fn exited(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// A pid file descriptor of the (only) child of `parent`.
fn child_of(parent: u32) -> Option<OwnedFd> {
    let Ok(entries) = fs::read_dir("/proc") else {
        tracing::warn!("cannot read /proc to find the build's namespace");
        return None;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(pid) != Some(parent) {
            continue;
        }
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        let Ok(fd) = rustix::process::pidfd_open(raw, PidfdFlags::empty()) else {
            continue;
        };
        // The fd names one process; it is still the child we saw only if
        // its parent is still `parent` (a reused pid would not be).
        if parent_of(pid) == Some(parent) {
            return Some(fd);
        }
    }
    None
}

/// The parent pid of `pid`, from `/proc/PID/stat` (`pid (comm) state
/// ppid …`, where `comm` may hold anything but ends at the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Kills a build when dropped (waiting for its namespace, as
/// [`kill_build`]), unless its processes were taken first.
pub(crate) struct BuildGuard(Option<BuildProcesses>);

impl BuildGuard {
    /// Guard these processes.
    pub(crate) fn new(procs: Option<BuildProcesses>) -> Self {
        Self(procs)
    }

    /// The processes, if any, to hold the namespace's init already.
    pub(crate) fn processes(&mut self) -> Option<&mut BuildProcesses> {
        self.0.as_mut()
    }

    /// Take the processes, to kill them otherwise.
    pub(crate) fn take(&mut self) -> Option<BuildProcesses> {
        self.0.take()
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        if let Some(procs) = self.0.take() {
            procs.kill_blocking();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_after_the_last_parenthesis() {
        assert_eq!(parse_ppid("12 (sh) S 7 12 12 0"), Some(7));
        assert_eq!(parse_ppid("12 (a) b) (c) R 99 1"), Some(99));
        assert_eq!(parse_ppid("12 (sh"), None);
        assert_eq!(parse_ppid("12 (sh) S"), None);
    }

    #[test]
    fn the_parent_of_this_process() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn waits_until_the_process_has_exited() {
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "/bin/sleep 30 & wait; /bin/sleep 0.3"])
            .spawn()
            .unwrap();
        let parent = sh.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let sleep = loop {
            if let Some(fd) = child_of(parent) {
                break fd;
            }
            assert!(Instant::now() < deadline, "no child");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!exited(&sleep));
        assert!(kill_and_wait(&sleep, Duration::from_secs(5)));
        assert!(exited(&sleep));
        sh.wait().unwrap();
        assert!(has_exited(parent), "a reaped process has exited");
        assert!(!has_exited(std::process::id()), "we have not");
        // A condition that never holds: the wait gives up.
        assert!(!wait_until(Duration::from_millis(50), || false));
    }
}
