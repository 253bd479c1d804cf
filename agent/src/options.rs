//! What `run` and `stdio` share: the store, key and ACL options, the
//! configuration file, and opening them with errors that name the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use offload_agent::config::{self, File};
use offload_agent::service::{self, Service};
use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::store_path::StoreDir;
use offload_files::{acl_file, key_file, paths};
use offload_store::spec::StoreSpec;
use offload_store::store::Store;

/// Options of every serving command.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The configuration file (TOML; flags override it; every key is
    /// documented in the README).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The store: embedded:DIR, guix-daemon[:SOCKET] or nix-daemon[:SOCKET]
    /// [default: embedded:STATE_DIR/store].
    #[arg(long, value_name = "SPEC")]
    pub(crate) store: Option<String>,
    /// The logical store directory [default: /gnu/store].
    #[arg(long, value_name = "DIR")]
    pub(crate) store_dir: Option<String>,
    /// The agent's state directory [default: $STATE_DIRECTORY or /var/lib/offload-agent].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The signing key the agent proves and signs outputs with
    /// [default: $GUIX_CONFIGURATION_DIRECTORY/signing-key.sec].
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// The keys of the masters allowed to use this agent
    /// [default: $GUIX_CONFIGURATION_DIRECTORY/acl].
    #[arg(long, value_name = "FILE")]
    pub(crate) acl: Option<PathBuf>,
    /// Build slots [default: 1].
    #[arg(long)]
    pub(crate) parallel_builds: Option<u32>,
    /// Systems this machine builds for, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) systems: Vec<String>,
    /// Supported features, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) features: Vec<String>,
    /// Relative speed [default: measured by a short benchmark].
    #[arg(long)]
    pub(crate) speed: Option<f64>,
    /// Cores per build (NIX_BUILD_CORES; 0: all) [default: 0].
    #[arg(long)]
    pub(crate) cores: Option<u32>,
    /// Instance and host name to advertise [default: the host name].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// NAME=VALUE for fixed-output derivations' `impureEnvVars`
    /// (repeatable; replaces the file's `[impure-env]`): builders get only
    /// these, never the agent's environment.
    #[arg(long = "impure-env", value_name = "NAME=VALUE")]
    pub(crate) impure_env: Vec<String>,
}

/// Everything resolved.
pub(crate) struct Opened {
    pub(crate) file: File,
    pub(crate) state_dir: PathBuf,
    pub(crate) acl_path: PathBuf,
    pub(crate) store_spec: StoreSpec,
    pub(crate) service: Arc<Service>,
}

impl Common {
    /// Read the configuration, the key, the ACL and open the store
    /// (inside a runtime); `measure_speed`: run the benchmark when no
    /// speed is given.
    pub(crate) async fn open(&self, measure_speed: bool) -> anyhow::Result<Opened> {
        let file = match &self.config {
            Some(path) => File::load(path)?,
            None => File::default(),
        };
        let state_dir = self
            .state_dir
            .clone()
            .or_else(|| file.state_dir.clone())
            .unwrap_or_else(config::default_state_dir);
        let key_path = self
            .key
            .clone()
            .or_else(|| file.key.clone())
            .unwrap_or_else(paths::default_secret_key);
        let key = load_key(&key_path)?;
        let acl_path = self
            .acl
            .clone()
            .or_else(|| file.acl.clone())
            .unwrap_or_else(paths::default_acl);
        let acl = load_acl(&acl_path)?;
        let store_spec: StoreSpec = match self.store.clone().or_else(|| file.store.clone()) {
            Some(s) => s
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--store: {e}"))?,
            None => StoreSpec::Embedded(state_dir.join("store")),
        };
        let store_dir_text = self
            .store_dir
            .clone()
            .or_else(|| file.store_dir.clone())
            .unwrap_or_else(|| "/gnu/store".into());
        let store_dir = StoreDir::new(&store_dir_text)
            .with_context(|| format!("store directory {store_dir_text:?}"))?;
        let store = Store::open(&store_spec, store_dir).await.with_context(|| {
            format!("opening the store {store_spec} (is it writable by this user?)")
        })?;
        let systems = if self.systems.is_empty() {
            file.systems.clone().unwrap_or_default()
        } else {
            self.systems.clone()
        };
        let features = if self.features.is_empty() {
            file.features.clone().unwrap_or_default()
        } else {
            self.features.clone()
        };
        let speed = match self.speed.or(file.speed) {
            Some(s) => s,
            None if measure_speed => offload_agent::probe::measure_speed(),
            None => 1.0,
        };
        let slots = self.parallel_builds.or(file.parallel_builds).unwrap_or(1);
        anyhow::ensure!(
            (1..=offload_core::dnssd::MAX_SLOTS).contains(&slots),
            "parallel-builds must be 1 to {}",
            offload_core::dnssd::MAX_SLOTS
        );
        {
            use offload_store::embedded::users::{BUILD_USERS, FIRST_BUILD_UID};
            anyhow::ensure!(
                !(matches!(store_spec, StoreSpec::Embedded(_))
                    && rustix::process::geteuid().is_root()
                    && slots > BUILD_USERS),
                "parallel-builds {slots}: as root the embedded store runs at most {BUILD_USERS} builds at once (one build user each, uids {FIRST_BUILD_UID}–{})",
                FIRST_BUILD_UID + BUILD_USERS - 1
            );
        }
        let config = service::Config {
            name: self
                .name
                .clone()
                .or_else(|| file.name.clone())
                .unwrap_or_else(hostname),
            systems,
            features,
            speed,
            slots,
            lease_ttl: Duration::from_secs(file.lease_seconds.unwrap_or(60).max(1)),
            cores: self.cores.or(file.cores).unwrap_or(0),
            max_log_size: file.max_log_bytes,
            impure_env: self.impure_env(&file)?,
        };
        let service = Service::new(config, Arc::new(key), acl, store);
        Ok(Opened {
            file,
            state_dir,
            acl_path,
            store_spec,
            service,
        })
    }
}

impl Common {
    /// The state directory: the flag, the configuration's, or the default.
    pub(crate) fn state_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Ok(d.clone());
        }
        let from_file = match &self.config {
            Some(path) => File::load(path)?.state_dir,
            None => None,
        };
        Ok(from_file.unwrap_or_else(config::default_state_dir))
    }

    fn impure_env(
        &self,
        file: &File,
    ) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        if self.impure_env.is_empty() {
            return Ok(file.impure_env.clone().unwrap_or_default());
        }
        self.impure_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("--impure-env {kv:?}: expected NAME=VALUE"))
            })
            .collect()
    }
}

fn load_key(path: &std::path::Path) -> anyhow::Result<SecretKey> {
    let key = key_file::load_secret(path).with_context(|| {
        format!(
            "the agent's signing key {} (make one with `offload-master key generate --dir DIR`)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        key.public_key().ecc_q().is_some(),
        "{}: an RSA key cannot identify the agent; generate an ECC key with `offload-master key generate`",
        path.display()
    );
    Ok(key)
}

/// The ACL, with an error that says how to make one.
pub(crate) fn load_acl(path: &std::path::Path) -> anyhow::Result<Acl> {
    acl_file::load(path).map_err(|e| match e {
        acl_file::Error::Missing(_) => anyhow::anyhow!(
            "no ACL at {p}: no master could use this agent; authorize a master's key with `offload-master key authorize --acl {p} < MASTER-KEY.pub`",
            p = path.display()
        ),
        other => anyhow::Error::new(other).context("reading the masters' ACL"),
    })
}

/// The host name's first label (a DNS-SD instance name has no dots).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| h.trim().split('.').next().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "offload-agent".into())
}

/// Outputs get their modes from the builder's umask, as under Nix; deep
/// outputs are checked with a descriptor per level, for several builds
/// at once: allow what the hard limit allows.
pub(crate) fn prepare_process() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Hold the state directory for this process (`run`, or `stdio` without
/// a running agent): two processes serving from one state directory
/// would each count slots of their own.
pub(crate) fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        anyhow::anyhow!(
            "{} is in use: another offload-agent serves from {} (run `offload-agent run` to serve several masters at once)",
            path.display(),
            state_dir.display()
        )
    })?;
    Ok(file)
}

/// The Unix socket on which `run` takes byte-stream sessions handed over
/// by `stdio`.
pub(crate) fn local_socket(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("agent.sock")
}
