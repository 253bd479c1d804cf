//! The agent's build service: the protocol of `offload_core::proto` over
//! QUIC ([`quic`]) or one byte stream ([`stdio`]), on top of a store.
//!
//! One [`Service`] per agent holds what every session shares: the key, the
//! ACL (replaced when the file changes), the store, the lease table
//! (`offload_core::proto::admission`, so no more builds run than there
//! are slots, whichever masters ask) and the measured load and disk.
//! Each session (module `session`) handles its request streams; `requests`
//! does the work of each request against the store.

mod bridge;
pub mod quic;
mod requests;
mod session;
pub mod stdio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::proto::admission::Admission;
use offload_core::proto::{self, auth};
use offload_core::store_path::StoreDir;
use offload_store::store::Store;
use tokio::sync::{Notify, watch};

/// How long a lease lasts unless renewed or used.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// What the service is and offers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Its name (the advertised instance).
    pub name: String,
    /// Systems it builds for.
    pub systems: Vec<String>,
    /// Features it supports.
    pub features: Vec<String>,
    /// Relative speed.
    pub speed: f64,
    /// Build slots.
    pub slots: u32,
    /// How long a lease lasts unless renewed or used.
    pub lease_ttl: Duration,
    /// Cores per build (`NIX_BUILD_CORES`; 0: all).
    pub cores: u32,
    /// Kill a builder that writes more log than this.
    pub max_log_size: Option<u64>,
    /// The only values fixed-output derivations' `impureEnvVars` get.
    pub impure_env: std::collections::BTreeMap<String, String>,
}

/// Live measurements, refreshed by the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    /// Normalized load.
    pub load: f64,
    /// Free store bytes.
    pub disk: u64,
}

/// What all sessions share.
pub struct Service {
    config: Config,
    key: Arc<SecretKey>,
    acl: RwLock<Arc<Acl>>,
    store: tokio::sync::Mutex<Store>,
    store_dir: StoreDir,
    admission: Mutex<Admission>,
    /// Wakes the lease timer when leases change.
    leases_changed: Notify,
    measured: Mutex<Measured>,
    next_session: AtomicU64,
    /// Bumped when slots or draining change (the advertisement follows).
    changes: watch::Sender<u64>,
}

impl Service {
    /// A service on `store`, proving `key`, serving masters in `acl`.
    pub fn new(config: Config, key: Arc<SecretKey>, acl: Acl, store: Store) -> Arc<Self> {
        let store_dir = store.store_dir().clone();
        Arc::new(Self {
            admission: Mutex::new(Admission::new(config.slots, config.lease_ttl)),
            config,
            key,
            acl: RwLock::new(Arc::new(acl)),
            store: tokio::sync::Mutex::new(store),
            store_dir,
            leases_changed: Notify::new(),
            measured: Mutex::new(Measured::default()),
            next_session: AtomicU64::new(1),
            changes: watch::Sender::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key the agent proves.
    pub fn key(&self) -> &Arc<SecretKey> {
        &self.key
    }

    /// The ACL now.
    pub fn acl(&self) -> Arc<Acl> {
        Arc::clone(&self.acl.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Use `acl` from now on (the file changed). Sessions already
    /// established go on.
    pub fn set_acl(&self, acl: Acl) {
        *self.acl.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(acl);
    }

    /// Whether a master proving the key `q` may use this agent.
    pub fn authorize(&self, q: &[u8; 32]) -> Result<(), String> {
        if self.acl().fingerprint_of_q(q).is_some() {
            Ok(())
        } else {
            Err(format!(
                "key {} is not in this agent's ACL",
                auth::fingerprint(q)
            ))
        }
    }

    /// Record new measurements.
    pub fn set_measured(&self, m: Measured) {
        *self.measured.lock().unwrap_or_else(PoisonError::into_inner) = m;
    }

    /// Stop granting leases; running builds go on.
    pub fn start_draining(&self) {
        self.admission().set_draining();
        self.changed();
    }

    /// Builds running now.
    pub fn running(&self) -> u32 {
        self.admission().running()
    }

    /// Sessions opened so far (masters that proved an authorized key).
    pub fn sessions_opened(&self) -> u64 {
        self.next_session.load(Ordering::Relaxed) - 1
    }

    /// Hears of every change of slots or draining.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The agent's state, as the protocol reports it.
    pub fn status(&self) -> proto::Status {
        let (slots, free, running, draining) = {
            let a = self.admission();
            (a.slots(), a.free(), a.running(), a.draining())
        };
        let m = *self.measured.lock().unwrap_or_else(PoisonError::into_inner);
        proto::Status {
            name: self.config.name.clone(),
            systems: self.config.systems.clone(),
            features: self.config.features.clone(),
            store_dir: self.store_dir.to_string(),
            slots,
            free,
            running,
            load_milli: milli(m.load),
            disk: m.disk,
            draining,
            speed_milli: milli(self.config.speed),
        }
    }

    /// Expire leases as they come due. Run it once, beside the sessions,
    /// and abort it when the service stops.
    pub async fn run_lease_timer(self: Arc<Self>) {
        loop {
            let notified = self.leases_changed.notified();
            let due = self.admission().poll_timeout();
            match due {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {
                            let expired = self.admission().handle_timeout(Instant::now());
                            if !expired.is_empty() {
                                tracing::info!(?expired, "leases expired");
                                self.changed();
                            }
                        }
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases or slots changed.
    fn changed(&self) {
        self.leases_changed.notify_one();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn new_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Another handle on the store, for one request.
    async fn store(&self) -> Result<Store, offload_store::store::Error> {
        self.store.lock().await.fork().await
    }
}

fn milli(x: f64) -> u32 {
    if x.is_finite() && x > 0.0 {
        (x * 1000.0).round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}
