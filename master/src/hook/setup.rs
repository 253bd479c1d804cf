//! What a hook is given: the daemon's four arguments, and where things
//! are, from the daemon's environment.

use std::path::PathBuf;
use std::time::Duration;

use offload_core::store_path::StoreDir;
use offload_store::spec::StoreSpec;

/// The four arguments the daemon passes.
#[derive(Clone, Debug)]
pub struct Args {
    /// The daemon's system.
    pub system: String,
    /// Silence allowed, seconds (0: unlimited).
    pub max_silent_secs: u64,
    /// Print `@ build-remote` traces.
    pub trace: bool,
    /// Build time allowed, seconds (0: unlimited).
    pub timeout_secs: u64,
}

/// Where things are, from the daemon's environment.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The logical store directory (`NIX_STORE_DIR`, else `/gnu/store`).
    pub store_dir: StoreDir,
    /// The daemon's store and database, written directly.
    pub store: StoreSpec,
    /// `GUIX_STATE_DIRECTORY` (slots live under its `offload/`).
    pub state_dir: PathBuf,
    /// Our signing key.
    pub key: PathBuf,
    /// The ACL outputs must be signed under.
    pub acl: PathBuf,
    /// machines.scm.
    pub machines: PathBuf,
    /// `serve`'s socket.
    pub socket: PathBuf,
    /// How long to browse for agents without `serve`.
    pub browse: Duration,
    /// Static machines from Nix's `builders` setting (the Nix hook; these
    /// make the hook look by itself, as `serve` does not know them).
    pub nix_machines: Vec<crate::machines::from_nix::NixEntry>,
}

impl Setup {
    /// From the environment the daemon passes on (Guix's variables, plus
    /// `OFFLOAD_MASTER_SOCKET` and `OFFLOAD_DISCOVER_MS`).
    pub fn from_env() -> anyhow::Result<Self> {
        use offload_files::paths;
        let store_dir = match std::env::var("NIX_STORE_DIR") {
            Ok(d) if !d.is_empty() => {
                StoreDir::new(&d).map_err(|e| anyhow::anyhow!("NIX_STORE_DIR={d:?}: {e}"))?
            }
            _ => StoreDir::default(),
        };
        let socket = std::env::var_os("OFFLOAD_MASTER_SOCKET")
            .filter(|s| !s.is_empty())
            .map_or_else(
                || PathBuf::from(paths::DEFAULT_MASTER_SOCKET),
                PathBuf::from,
            );
        let browse_ms = match std::env::var("OFFLOAD_DISCOVER_MS") {
            Ok(v) => v
                .parse::<u64>()
                .map_err(|e| anyhow::anyhow!("OFFLOAD_DISCOVER_MS={v:?}: {e}"))?,
            Err(_) => 1500,
        };
        Ok(Self {
            store_dir,
            store: StoreSpec::Local {
                state_dir: paths::guix_state_dir(),
                db_dir: paths::guix_database_dir(),
            },
            state_dir: paths::guix_state_dir(),
            key: paths::default_secret_key(),
            acl: paths::default_acl(),
            machines: paths::guix_config_dir().join("machines.scm"),
            socket,
            browse: Duration::from_millis(browse_ms),
            nix_machines: Vec::new(),
        })
    }
}
