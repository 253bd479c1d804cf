//! A LAN of hosts on one machine: network namespaces joined by veth pairs
//! to a bridge in a namespace of its own ("the switch"), as in the project's
//! TESTBED notes. It is the only way tests use mDNS: the host namespace gets
//! no interface, no address and no multicast traffic.
//!
//! * Names are unique per process and LAN (`ofl-<pid>-<n>-…`), so tests run
//!   in parallel; every host has `10.77.0.<i+1>/24` on its veth (the
//!   namespaces are separate stacks, so LANs may reuse the range).
//! * Before handing a host out, the harness checks that it holds only `lo`
//!   and its veth.
//! * Teardown (on drop, so also when a test fails): kill the processes
//!   started through [`Lan::spawn`] and everything else still running in the
//!   namespaces, then delete them. Namespaces left by a test process that
//!   was itself killed are removed by the next [`Lan::new`].
//!
//! Needs root (CI and the developers' machines run as root).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "ofl-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One host of the LAN.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// Its interface (inside the namespace).
    pub iface: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A LAN of network namespaces; torn down on drop.
pub struct Lan {
    switch: String,
    hosts: Vec<Host>,
    children: Mutex<Vec<Child>>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Kill whatever runs in `ns` and delete it.
fn destroy(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Remove namespaces of earlier test processes that no longer exist
/// (`tests/run` also runs this at the end, as `lan-sweep`).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let owner = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner
            && !pid_alive(pid)
        {
            destroy(name);
        }
    }
}

impl Lan {
    /// A LAN of `n` hosts.
    pub fn new(n: usize) -> Self {
        assert!((1..=200).contains(&n), "between 1 and 200 hosts");
        sweep_stale();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let short = format!(
            "o{:x}",
            (std::process::id() * 64 + NEXT.load(Ordering::Relaxed)) & 0xfffff
        );
        let switch = format!("{id}-sw");
        let mut lan = Self {
            switch: switch.clone(),
            hosts: Vec::new(),
            children: Mutex::new(Vec::new()),
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{id}-h{i}");
            let (inside, outside) = (format!("{short}h{i}"), format!("{short}p{i}"));
            ip(&["netns", "add", &ns]);
            lan.hosts.push(Host {
                ns: ns.clone(),
                iface: inside.clone(),
                ip: Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).unwrap_or(1)),
            });
            // Created inside the switch, then one end moved to the host: nothing touches the host namespace.
            ip(&[
                "-n", &switch, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["-n", &switch, "link", "set", &inside, "netns", &ns]);
            ip(&["-n", &switch, "link", "set", &outside, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &outside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{}/24", i + 1),
                "dev",
                &inside,
            ]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            lan.check_host(i);
        }
        lan
    }

    /// Move the calling thread into host `i`'s network namespace (threads
    /// it starts afterwards are there too): for clients run in-process.
    pub fn enter(&self, i: usize) {
        let path = Path::new("/var/run/netns").join(&self.hosts[i].ns);
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("entering {}: {e}", self.hosts[i].ns));
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Refuse to use a host whose namespace holds anything but `lo` and its veth.
    fn check_host(&self, i: usize) {
        let h = &self.hosts[i];
        let out = Command::new("ip")
            .args(["-n", &h.ns, "-o", "link"])
            .output()
            .expect("ip link");
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            names,
            ["lo".to_owned(), h.iface.clone()],
            "namespace {} must hold only lo and its veth",
            h.ns
        );
    }

    /// A command that runs `program` inside host `i`.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        cmd
    }

    /// Start `cmd` (made by [`command`](Self::command)); it is killed at
    /// teardown, and by the kernel if the test process dies first
    /// (`PR_SET_PDEATHSIG`). Returns its pid (that of the program itself:
    /// `ip netns exec` execs).
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        use std::os::unix::process::CommandExt;
        // SAFETY: only an async-signal-safe call (prctl) between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = child.id();
        self.children.lock().expect("children lock").push(child);
        pid
    }

    /// Whether a spawned process is still running.
    pub fn running(&self, pid: u32) -> bool {
        let mut children = self.children.lock().expect("children lock");
        children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Send `signal` (e.g. "USR1") to a spawned process that keeps running.
    pub fn signal_only(&self, pid: u32, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
    }

    /// Send `signal` (e.g. "TERM", "KILL") to a spawned process and reap it.
    pub fn signal(&self, pid: u32, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        let mut children = self.children.lock().expect("children lock");
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(i);
            // A process that ignores the signal is killed after 15 s.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for h in &self.hosts {
            destroy(&h.ns);
        }
        destroy(&self.switch);
    }
}
