//! The SSH fallback: `ssh USER@HOST offload-agent stdio`, the same
//! protocol on the session's byte stream, both keys proven inside it.
//!
//! The system's OpenSSH client runs in batch mode without agent
//! forwarding; the host key comes from the machine's entry (`host-key`,
//! known-hosts form) and is the only one accepted: never trust on first
//! use. The client process belongs to the link and dies with it.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use offload_core::keys::SecretKey;
use serde::{Deserialize, Serialize};

use super::{AgentLink, Expect, LinkError};

/// The remote command when `OFFLOAD_REMOTE_AGENT` does not say otherwise.
pub const DEFAULT_REMOTE: &str = "offload-agent stdio";

/// How to reach a machine's agent over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SshRoute {
    /// The remote user.
    pub user: String,
    /// The host name or address.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The identity file, if any (else ssh's defaults).
    pub private_key: Option<String>,
    /// The host's public key, `TYPE BASE64` (known-hosts form).
    pub host_key: String,
}

impl SshRoute {
    /// The known-hosts line pinning this host's key.
    fn known_hosts_line(&self) -> String {
        if self.port == 22 {
            format!("{} {}\n", self.host, self.host_key.trim())
        } else {
            format!("[{}]:{} {}\n", self.host, self.port, self.host_key.trim())
        }
    }
}

/// A host key in known-hosts form from a machine entry: Guix's
/// `"ssh-ed25519 AAAA…"`, or Nix's base64 of that line.
pub fn host_key_of(entry: &str) -> Option<String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return None;
    }
    if entry.starts_with("ssh-") || entry.starts_with("ecdsa-") {
        return Some(entry.to_owned());
    }
    let decoded = data_encoding::BASE64.decode(entry.as_bytes()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let text = text.trim();
    (text.starts_with("ssh-") || text.starts_with("ecdsa-")).then(|| text.to_owned())
}

/// The pinned known-hosts file for `route` and ssh's arguments to run
/// `remote` there (batch mode, no agent forwarding, that key only).
pub fn command_line(
    route: &SshRoute,
    remote: &str,
) -> std::io::Result<(tempfile::NamedTempFile, Vec<String>)> {
    let mut known = tempfile::NamedTempFile::new()?;
    known.write_all(route.known_hosts_line().as_bytes())?;
    let mut args: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ]
    .map(String::from)
    .to_vec();
    args.push("-o".into());
    args.push(format!("UserKnownHostsFile={}", known.path().display()));
    if let Some(k) = route.private_key.as_ref().filter(|k| !k.is_empty()) {
        args.extend([
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            k.clone(),
        ]);
    }
    args.extend([
        "-p".into(),
        route.port.to_string(),
        format!("{}@{}", route.user, route.host),
        remote.to_owned(),
    ]);
    Ok((known, args))
}

/// Open a session with the agent behind `route`.
pub async fn connect(
    route: &SshRoute,
    key: &Arc<SecretKey>,
    expect: &Expect,
) -> Result<AgentLink, LinkError> {
    let remote = std::env::var("OFFLOAD_REMOTE_AGENT")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REMOTE.into());
    let (known, args) = command_line(route, &remote)
        .map_err(|e| LinkError::Unreachable(format!("writing a known-hosts file: {e}")))?;
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        LinkError::Unreachable(format!("running ssh: {e} (install openssh-client)"))
    })?;
    let (Some(r), Some(w), Some(mut err)) =
        (child.stdout.take(), child.stdin.take(), child.stderr.take())
    else {
        return Err(LinkError::Unreachable("ssh without pipes".into()));
    };
    match AgentLink::connect_stream(r, w, key, expect).await {
        Ok(mut link) => {
            link.child = Some(child);
            drop(known);
            Ok(link)
        }
        Err(e) => {
            let _ = child.start_kill();
            let mut text = String::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                use tokio::io::AsyncReadExt;
                let _ = (&mut err).take(4096).read_to_string(&mut text).await;
            })
            .await;
            let text = text.trim();
            if text.contains("Host key verification failed")
                || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || text.contains("No ED25519 host key is known")
                || text.contains("host key for")
            {
                return Err(LinkError::Impostor(format!(
                    "{}:{}: its SSH host key is not the pinned {} ({text})",
                    route.host, route.port, route.host_key
                )));
            }
            if text.is_empty() {
                Err(e)
            } else {
                Err(LinkError::Unreachable(format!(
                    "ssh {}@{}:{}: {text}",
                    route.user, route.host, route.port
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_come_in_guix_or_nix_form() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkey";
        assert_eq!(host_key_of(line).as_deref(), Some(line));
        let nix = data_encoding::BASE64.encode(format!("{line}\n").as_bytes());
        assert_eq!(host_key_of(&nix).as_deref(), Some(line));
        assert_eq!(host_key_of(""), None);
        assert_eq!(host_key_of("bm90IGEga2V5"), None);
        let route = SshRoute {
            user: "root".into(),
            host: "10.0.0.2".into(),
            port: 2222,
            private_key: None,
            host_key: line.into(),
        };
        assert_eq!(
            route.known_hosts_line(),
            format!("[10.0.0.2]:2222 {line}\n")
        );
    }
}
