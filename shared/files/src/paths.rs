//! Default locations, honouring Guix's environment variables. Every
//! environment variable this crate reads is named here.

use std::path::PathBuf;

/// Guix's configuration directory variable.
pub const GUIX_CONFIGURATION_DIRECTORY: &str = "GUIX_CONFIGURATION_DIRECTORY";

/// `$GUIX_CONFIGURATION_DIRECTORY`, or `/etc/guix`.
pub fn guix_config_dir() -> PathBuf {
    std::env::var_os(GUIX_CONFIGURATION_DIRECTORY)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/etc/guix"), PathBuf::from)
}

/// Where `offload-master serve` listens by default.
pub const DEFAULT_MASTER_SOCKET: &str = "/run/offload/master.sock";

/// The ACL file: `<config dir>/acl`.
pub fn default_acl() -> PathBuf {
    guix_config_dir().join("acl")
}

/// The signing key: `<config dir>/signing-key.sec`.
pub fn default_secret_key() -> PathBuf {
    guix_config_dir().join("signing-key.sec")
}

/// The first executable file named `program` in `$PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The Guix daemon's socket: `$GUIX_DAEMON_SOCKET`, or
/// `/var/guix/daemon-socket/socket`.
pub fn guix_daemon_socket() -> PathBuf {
    non_empty_var("GUIX_DAEMON_SOCKET")
        .unwrap_or_else(|| PathBuf::from("/var/guix/daemon-socket/socket"))
}

/// Guix's state directory: `$GUIX_STATE_DIRECTORY`, or `/var/guix`.
pub fn guix_state_dir() -> PathBuf {
    non_empty_var("GUIX_STATE_DIRECTORY").unwrap_or_else(|| PathBuf::from("/var/guix"))
}

/// The directory of Guix's database: `$GUIX_DATABASE_DIRECTORY`, or the
/// state directory's `db`.
pub fn guix_database_dir() -> PathBuf {
    non_empty_var("GUIX_DATABASE_DIRECTORY").unwrap_or_else(|| guix_state_dir().join("db"))
}

/// The agent's state directory: the first of systemd's
/// `$STATE_DIRECTORY` (colon-separated), or `/var/lib/offload-agent`.
pub fn agent_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            let first = v.to_string_lossy().split(':').next().map(PathBuf::from);
            first.filter(|p| p.is_absolute())
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/offload-agent"))
}

fn non_empty_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
