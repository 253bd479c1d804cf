//! A real OpenSSH server (Debian's `openssh-server`) on one host of a
//! test LAN, with its own host key, a client key authorized for root, and
//! a known-hosts file that pins the host key; never on the host
//! namespace's addresses.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lan::Lan;
use crate::{require_program, run_ok};

/// The port sshd listens on.
pub const PORT: u16 = 2222;

/// A running sshd (killed with the LAN).
pub struct Sshd {
    /// The host's address.
    pub addr: String,
    /// The client's private key.
    pub client_key: PathBuf,
    /// A known-hosts file pinning the server's host key.
    pub known_hosts: PathBuf,
    /// The server's public host key line.
    pub host_key: String,
}

fn keygen(path: &Path) {
    run_ok(
        Command::new(require_program("ssh-keygen", "openssh-client"))
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path),
        b"",
    );
}

impl Sshd {
    /// Start sshd on host `host` of `lan`, its files under `dir`.
    pub fn start(lan: &Lan, host: usize, dir: &Path) -> Self {
        Self::start_with_binds(lan, host, dir, &[])
    }

    /// [`start`](Self::start) in a mount namespace of its own where each
    /// `(source, target)` of `binds` is bind-mounted (so that its sessions
    /// see, say, another store at the same path).
    pub fn start_with_binds(
        lan: &Lan,
        host: usize,
        dir: &Path,
        binds: &[(std::path::PathBuf, std::path::PathBuf)],
    ) -> Self {
        let mut mounts = String::from("set -e\n");
        for (source, target) in binds {
            mounts.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                source.display(),
                target.display()
            ));
        }
        Self::start_via(lan, host, dir, &|script: &str| {
            let mut cmd = lan.command(host, "unshare");
            cmd.args(["-m", "--propagation", "private", "/bin/sh", "-c"])
                .arg(format!("{mounts}{script}"));
            cmd
        })
    }

    /// [`start`](Self::start) with the shell line that runs sshd wrapped
    /// by `wrap` (which must run it on host `host`, e.g. in a mount
    /// namespace of a daemon host).
    pub fn start_via(
        lan: &Lan,
        host: usize,
        dir: &Path,
        wrap: &dyn Fn(&str) -> std::process::Command,
    ) -> Self {
        let sshd = require_program("sshd", "openssh-server");
        std::fs::create_dir_all(dir).expect("sshd dir");
        // Privilege separation wants this directory (empty, root's).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorize");
        let addr = lan.hosts()[host].ip.to_string();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {PORT}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\n\
                 PrintMotd no\nLogLevel ERROR\n",
                hk = host_key.display(),
                ak = dir.join("authorized_keys").display(),
            ),
        )
        .expect("sshd_config");
        let script = format!(
            "exec '{}' -D -e -f '{}'\n",
            sshd.display(),
            config.display()
        );
        let mut cmd = wrap(&script);
        cmd.stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"));
        lan.spawn(cmd);
        let public = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        let public: String = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[{addr}]:{PORT} {public}\n")).expect("known_hosts");
        // Wait until it accepts connections.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let probe = lan
                .command(host, "bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{addr}/{PORT}")])
                .stderr(std::process::Stdio::null())
                .status();
            if probe.is_ok_and(|s| s.success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self {
            addr,
            client_key,
            known_hosts,
            host_key: public,
        }
    }

    /// `ssh` from host `from` to this server, running `remote` there:
    /// batch mode, no agent forwarding, the host key pinned.
    pub fn command(&self, lan: &Lan, from: usize, known_hosts: &Path, remote: &[&str]) -> Command {
        let mut cmd = lan.command(from, require_program("ssh", "openssh-client"));
        cmd.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ForwardAgent=no",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-i")
        .arg(&self.client_key)
        .args(["-p", &PORT.to_string()])
        .arg(format!("root@{}", self.addr))
        .args(remote);
        cmd
    }
}
