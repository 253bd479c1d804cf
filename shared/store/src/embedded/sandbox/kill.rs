//! Killing a builder and everything it started.
//!
//! The process started is the leader of its own process group. Directly,
//! killing that group is all that can be done (a child that called
//! `setsid` escapes it, as under Nix without build users). In a sandbox,
//! the leader is `unshare`, whose only child is process 1 of the build's
//! PID namespace: killing that child kills the whole namespace, whatever
//! sessions or groups its processes made. `unshare --kill-child` would do
//! it when `unshare` dies, but the parent-death signal is cleared when the
//! child changes its user (`setpriv --reuid`), so the child is found in
//! `/proc` and killed through a pid file descriptor (no pid reuse race).

use std::fs;

use rustix::process::{Pid, PidfdFlags, Signal};

/// Kill the build whose leader is `leader` (also its process group): its
/// PID namespace's init first when `namespace`, then the group.
fn kill_build_blocking(leader: u32, namespace: bool) {
    if namespace {
        kill_children(leader);
    }
    let Some(pid) = i32::try_from(leader).ok().and_then(Pid::from_raw) else {
        return;
    };
    match rustix::process::kill_process_group(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pgid = leader, "cannot kill process group: {e}"),
    }
}

/// [`kill_build_blocking`] without blocking the runtime.
pub(crate) async fn kill_build(leader: u32, namespace: bool) {
    let _ = tokio::task::spawn_blocking(move || kill_build_blocking(leader, namespace)).await;
}

/// SIGKILL every child of `parent`.
fn kill_children(parent: u32) {
    let Ok(entries) = fs::read_dir("/proc") else {
        tracing::warn!("cannot read /proc to kill the build's namespace");
        return;
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
        if parent_of(pid) == Some(parent)
            && let Err(e) = rustix::process::pidfd_send_signal(&fd, Signal::KILL)
            && e != rustix::io::Errno::SRCH
        {
            tracing::warn!(pid, "cannot kill the build's namespace: {e}");
        }
    }
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

/// Kills a build when dropped, unless disarmed first (once its leader has
/// been reaped, its id may be reused).
pub(crate) struct BuildGuard(Option<(u32, bool)>);

impl BuildGuard {
    /// Guard the build led by `leader` (see [`kill_build_blocking`]).
    pub(crate) fn new(leader: Option<u32>, namespace: bool) -> Self {
        Self(leader.map(|l| (l, namespace)))
    }

    /// Do nothing when dropped.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        if let Some((leader, namespace)) = self.0 {
            kill_build_blocking(leader, namespace);
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
}
