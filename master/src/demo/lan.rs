//! The demo's private LAN: one network namespace per host, each with a
//! veth whose peer is enslaved to a bridge in a "switch" namespace, and
//! addresses in 10.91.0.0/24. Nothing is added to the host's namespace
//! but the namespaces' names; everything is deleted on drop, and
//! namespaces of an earlier demo whose process is gone are swept first.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::Context;

const PREFIX: &str = "ofl-demo-";

/// One host of the LAN.
#[derive(Clone, Debug)]
pub(super) struct Host {
    /// Its network namespace.
    pub(super) ns: String,
    /// Its interface (inside the namespace).
    pub(super) iface: String,
}

/// The LAN; torn down on drop.
pub(super) struct Lan {
    switch: String,
    hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

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

/// Delete namespaces left by demos whose process no longer exists.
fn sweep() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            destroy(name);
        }
    }
}

impl Lan {
    /// A LAN of `n` hosts.
    pub(super) fn new(n: usize) -> anyhow::Result<Self> {
        sweep();
        let pid = std::process::id();
        let switch = format!("{PREFIX}{pid}-sw");
        let mut lan = Self {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        for i in 0..n {
            let ns = format!("{PREFIX}{pid}-h{i}");
            let iface = format!("eth{i}");
            let peer = format!("p{i}");
            let addr = Ipv4Addr::new(10, 91, 0, u8::try_from(i + 1).context("too many hosts")?);
            ip(&["netns", "add", &ns])?;
            lan.hosts.push(Host {
                ns: ns.clone(),
                iface: iface.clone(),
            });
            ip(&[
                "-n", &ns, "link", "add", &iface, "type", "veth", "peer", "name", &peer, "netns",
                &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &peer, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &peer, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &iface,
            ])?;
            ip(&["-n", &ns, "link", "set", &iface, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    /// The hosts.
    pub(super) fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A command running `program` inside host `i`.
    pub(super) fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        cmd
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            destroy(&h.ns);
        }
        destroy(&self.switch);
    }
}
