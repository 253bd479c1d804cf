//! `offload-agent run` and `stdio` configuration: a TOML file
//! (`--config`), then flags, which override it. Two stages: [`File`] is
//! the file as written (unknown keys are errors, so a typo is not silently
//! ignored); the binary merges it with its flags into the service's
//! `Config`.
//!
//! Every key of the file:
//!
//! ```toml
//! name = "build1"                  # advertised instance name [host name]
//! systems = ["x86_64-linux"]       # systems built for (required)
//! features = ["kvm"]               # supported features [none]
//! speed = 1.5                      # relative speed [measured at start]
//! parallel-builds = 2              # build slots [1]
//! cores = 0                        # NIX_BUILD_CORES per build, 0 = all [0]
//! store = "embedded:/var/lib/offload-agent/store"   # [embedded:STATE-DIR/store]
//! store-dir = "/gnu/store"         # logical store directory [/gnu/store]
//! state-dir = "/var/lib/offload-agent"   # [$STATE_DIRECTORY or /var/lib/offload-agent]
//! listen = "[::]:7441"             # QUIC address [[::]:7441]
//! key = "/etc/guix/signing-key.sec"      # [$GUIX_CONFIGURATION_DIRECTORY/signing-key.sec]
//! acl = "/etc/guix/acl"            # masters allowed [$GUIX_CONFIGURATION_DIRECTORY/acl]
//! interfaces = ["eth0"]            # mDNS only on these [all]
//! ssh = "offload@22"               # SSH fallback advertised as USER@PORT [none]
//! advertise = true                 # advertise over DNS-SD [true]
//! lease-seconds = 60               # a lease lasts this long unless renewed [60]
//! drain-seconds = 3600             # on SIGTERM, wait this long for builds [3600]
//! max-log-bytes = 67108864         # kill a build logging more [unlimited]
//! update-seconds = 2.0             # re-measure load and disk this often [2]
//!
//! # Values of fixed-output derivations' `impureEnvVars` (e.g. a proxy):
//! # only these reach builders, never the agent's own environment [none].
//! [impure-env]
//! http_proxy = "http://proxy.lan:3128"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Longest configuration file.
const MAX_CONFIG: u64 = 1 << 20;

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// Advertised instance name.
    pub name: Option<String>,
    /// Systems built for.
    pub systems: Option<Vec<String>>,
    /// Supported features.
    pub features: Option<Vec<String>>,
    /// Relative speed.
    pub speed: Option<f64>,
    /// Build slots.
    pub parallel_builds: Option<u32>,
    /// Cores per build.
    pub cores: Option<u32>,
    /// The store (`embedded:DIR`, `guix-daemon[:SOCKET]`, `nix-daemon[:SOCKET]`).
    pub store: Option<String>,
    /// Logical store directory.
    pub store_dir: Option<String>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// QUIC address to listen on.
    pub listen: Option<String>,
    /// Signing key.
    pub key: Option<PathBuf>,
    /// ACL of the masters allowed.
    pub acl: Option<PathBuf>,
    /// mDNS interfaces.
    pub interfaces: Option<Vec<String>>,
    /// SSH fallback, `USER@PORT`.
    pub ssh: Option<String>,
    /// Whether to advertise over DNS-SD.
    pub advertise: Option<bool>,
    /// Lease lifetime in seconds.
    pub lease_seconds: Option<u64>,
    /// Drain deadline in seconds.
    pub drain_seconds: Option<u64>,
    /// Log limit per build.
    pub max_log_bytes: Option<u64>,
    /// Measurement interval in seconds.
    pub update_seconds: Option<f64>,
    /// Values for fixed-output derivations' `impureEnvVars`.
    pub impure_env: Option<std::collections::BTreeMap<String, String>>,
}

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not valid TOML or has unknown keys or wrong types.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        message: String,
    },
}

impl File {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        use std::io::Read as _;
        let read = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG).read_to_string(&mut text))
            .map_err(read)?;
        Self::parse(&text).map_err(|message| Error::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parse TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            format!("{place}{}", e.message())
        })
    }
}

/// The agent's state directory: `$STATE_DIRECTORY` (systemd) or
/// `/var/lib/offload-agent` (`offload_files::paths`).
pub fn default_state_dir() -> PathBuf {
    offload_files::paths::agent_state_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                let l = l.trim_start_matches("//!");
                format!("{}\n", l.strip_prefix(' ').unwrap_or(l))
            })
            .collect();
        let file = File::parse(&example).unwrap();
        assert_eq!(
            file.systems.as_deref(),
            Some(&["x86_64-linux".to_owned()][..])
        );
        assert_eq!(file.parallel_builds, Some(2));
        assert_eq!(file.update_seconds, Some(2.0));
        assert_eq!(file.advertise, Some(true));
        assert_eq!(
            file.impure_env
                .unwrap()
                .get("http_proxy")
                .map(String::as_str),
            Some("http://proxy.lan:3128")
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_place() {
        let err = File::parse("systems = [\"x86_64-linux\"]\nparalel-builds = 2\n").unwrap_err();
        assert!(
            err.starts_with("2:1: ") && err.contains("paralel-builds"),
            "{err}"
        );
        let err = File::parse("parallel-builds = \"two\"\n").unwrap_err();
        assert!(err.starts_with("1:19: "), "{err}");
    }
}
