//! One interface over the stores an agent or the hook works with: the
//! Guix and Nix daemons (worker protocol), the embedded store, and `local`
//! direct access to this host's store (the hook side).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;

use offload_core::export::{self, ItemWriter, Limits};
use offload_core::keys::SecretKey;
use offload_core::nixbase32;
use offload_core::signature::Signature;
use offload_core::store_path::{StoreDir, StorePath};
use offload_files::dump;

use crate::daemon::{self, Connection, DaemonClient, Dialect};
use crate::db::{self, Db};
use crate::embedded::EmbeddedStore;
use crate::embedded::build::{self, BuildEvent, BuildOptions, BuildResult};
use crate::info::PathInfo;
use crate::local::{self, Imported, LocalStore, Signatures};
use crate::resign::Resigner;
use crate::spec::StoreSpec;
use crate::sync_io::BlockingWriter;

mod daemon_build;
mod guix_import;
mod nix_import;
mod order;
#[cfg(test)]
mod tests;

use daemon_build::daemon_build;
use nix_import::import_nix;
use order::topo_sort;

/// The most items in one closure.
const MAX_CLOSURE: usize = 1 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon failed or refused.
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// An import failed.
    #[error(transparent)]
    Import(#[from] local::Error),
    /// Reading or writing a stream or a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// A path is not valid in the store.
    #[error("{0} is not valid in this store")]
    NotValid(StorePath),
    /// The store cannot do this.
    #[error("{store} cannot {what}")]
    Unsupported {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
    },
    /// Something else is wrong (named in the message).
    #[error("{0}")]
    Other(String),
    /// An item of an import was refused; the items before it were
    /// registered.
    #[error("{path}: {source}; {}", kept_text(kept))]
    Refused {
        /// The item.
        path: String,
        /// The items registered before it.
        kept: Vec<String>,
        /// Why.
        source: Box<Self>,
    },
}

fn kept_text(kept: &[String]) -> String {
    if kept.is_empty() {
        "nothing was registered".into()
    } else {
        format!("kept: {}", kept.join(", "))
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// An open store.
pub enum Store {
    /// A Guix or Nix daemon, through its worker protocol.
    Daemon {
        /// The connection.
        client: Box<DaemonClient<Connection>>,
        /// Its logical store directory.
        store_dir: StoreDir,
        /// What was opened, for messages.
        spec: StoreSpec,
    },
    /// The embedded store.
    Embedded(Arc<EmbeddedStore>),
    /// This host's store, written directly.
    Local(Arc<LocalStore>),
}

impl Store {
    /// Open the store `spec`, whose items live in the logical directory
    /// `store_dir` (daemons imply theirs; it must match).
    pub async fn open(spec: &StoreSpec, store_dir: StoreDir) -> Result<Self, Error> {
        match spec {
            StoreSpec::GuixDaemon(socket) | StoreSpec::NixDaemon(socket) => {
                let expect = match spec {
                    StoreSpec::GuixDaemon(_) => Dialect::Guix,
                    _ => Dialect::Nix,
                };
                let conn = daemon::connect_unix(socket)
                    .await
                    .map_err(io_err(format!("connecting to the {expect}")))?;
                let client = DaemonClient::handshake(conn, Some(expect)).await?;
                Ok(Self::Daemon {
                    client: Box::new(client),
                    store_dir,
                    spec: spec.clone(),
                })
            }
            StoreSpec::Embedded(root) => {
                let store = EmbeddedStore::open(root, store_dir)?;
                same_store_dir(store.local().db(), store.local().store_dir())?;
                Ok(Self::Embedded(Arc::new(store)))
            }
            StoreSpec::Local { state_dir, db_dir } => {
                let db = Db::open(&db_dir.join("db.sqlite"))?;
                same_store_dir(&db, &store_dir)?;
                let real = std::path::PathBuf::from(store_dir.as_str());
                let local = LocalStore::new(store_dir, real, db).with_gc_lock(state_dir.clone());
                Ok(Self::Local(Arc::new(local)))
            }
        }
    }

    /// A daemon reached over `conn` (such as `ssh HOST nix-daemon
    /// --stdio`), which must speak `expect`; `label` names it in messages.
    pub async fn over(
        conn: Connection,
        expect: Dialect,
        store_dir: StoreDir,
        label: StoreSpec,
    ) -> Result<Self, Error> {
        let client = DaemonClient::handshake(conn, Some(expect)).await?;
        Ok(Self::Daemon {
            client: Box::new(client),
            store_dir,
            spec: label,
        })
    }

    /// Another handle on the same store, usable at the same time as this
    /// one (from another task): the same embedded or local store, or a
    /// new connection to the same daemon.
    pub async fn fork(&self) -> Result<Self, Error> {
        match self {
            Self::Daemon {
                spec, store_dir, ..
            } => Self::open(spec, store_dir.clone()).await,
            Self::Embedded(e) => Ok(Self::Embedded(Arc::clone(e))),
            Self::Local(l) => Ok(Self::Local(Arc::clone(l))),
        }
    }

    /// The daemon's dialect, for a daemon store.
    pub fn dialect(&self) -> Option<Dialect> {
        match self {
            Self::Daemon { client, .. } => Some(client.dialect()),
            _ => None,
        }
    }

    /// The logical store directory.
    pub fn store_dir(&self) -> &StoreDir {
        match self {
            Self::Daemon { store_dir, .. } => store_dir,
            Self::Embedded(e) => e.local().store_dir(),
            Self::Local(l) => l.store_dir(),
        }
    }

    fn local(&self) -> Option<&LocalStore> {
        match self {
            Self::Daemon { .. } => None,
            Self::Embedded(e) => Some(e.local()),
            Self::Local(l) => Some(l),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Daemon { spec, .. } => spec.to_string(),
            Self::Embedded(e) => format!("embedded:{}", e.root().display()),
            Self::Local(l) => format!("local store {}", l.db().file().display()),
        }
    }

    /// What the store knows about `path`, or `None` if it is not valid.
    pub async fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        match self {
            Self::Daemon { client, .. } => Ok(client.query_path_info(path).await?),
            _ => Ok(self
                .local()
                .and_then(|l| l.db().path_info(path).transpose())
                .transpose()?),
        }
    }

    /// Keep `path` from the garbage collector while the store is open (a
    /// no-op for stores without a collector running beside them).
    pub async fn add_temp_root(&mut self, path: &StorePath) -> Result<(), Error> {
        if let Self::Daemon { client, .. } = self {
            client.add_temp_root(&path.to_string()).await?;
        }
        Ok(())
    }

    /// `paths` and everything they refer to, dependencies first.
    pub async fn closure(&mut self, paths: &[StorePath]) -> Result<Vec<StorePath>, Error> {
        let refs = self.references(paths, true).await?;
        topo_sort(&refs.keys().cloned().collect(), &refs)
    }

    /// `paths` (all valid) ordered so that an item comes after those of
    /// them it refers to.
    pub async fn sort(&mut self, paths: &[StorePath]) -> Result<Vec<StorePath>, Error> {
        let refs = self.references(paths, false).await?;
        topo_sort(&paths.iter().cloned().collect(), &refs)
    }

    /// The references of each of `paths` (all valid) and, with `follow`,
    /// of everything they refer to.
    async fn references(
        &mut self,
        paths: &[StorePath],
        follow: bool,
    ) -> Result<HashMap<StorePath, Vec<StorePath>>, Error> {
        let mut refs: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        let mut todo: Vec<StorePath> = paths.to_vec();
        while let Some(p) = todo.pop() {
            if refs.contains_key(&p) {
                continue;
            }
            if refs.len() >= MAX_CLOSURE {
                return Err(Error::Other(format!(
                    "closure of more than {MAX_CLOSURE} items"
                )));
            }
            let info = self
                .path_info(&p)
                .await?
                .ok_or_else(|| Error::NotValid(p.clone()))?;
            if follow {
                todo.extend(info.references.iter().filter(|r| **r != p).cloned());
            }
            refs.insert(p, info.references);
        }
        Ok(refs)
    }

    /// Import an export stream. `progress` hears of each item registered.
    /// With a Guix daemon, the daemon checks signatures against its own
    /// ACL and `signatures` must be `Check`.
    pub async fn import(
        &mut self,
        r: impl Read + Send + Unpin,
        signatures: Signatures<'_>,
        progress: &mut dyn FnMut(&Imported),
    ) -> Result<Vec<StorePath>, Error> {
        let name = self.name();
        match self {
            Self::Daemon { client, .. } if client.dialect() == Dialect::Guix => {
                if matches!(signatures, Signatures::Ignore) {
                    return Err(Error::Unsupported {
                        store: name,
                        what: "import without checking signatures (the Guix daemon always checks them against its ACL)",
                    });
                }
                guix_import::import_guix(client, r, progress).await
            }
            Self::Daemon { client, .. } => import_nix(client, r, signatures, progress).await,
            Self::Embedded(e) => Ok(paths_of(e.local().import(
                r,
                signatures,
                Limits::default(),
                progress,
            )?)),
            Self::Local(l) => Ok(paths_of(l.import(
                r,
                signatures,
                Limits::default(),
                progress,
            )?)),
        }
    }

    /// Write `paths` (in this order) as an export stream signed with `key`.
    pub async fn export(
        &mut self,
        paths: &[StorePath],
        key: &SecretKey,
        w: &mut (impl Write + Send + Unpin),
    ) -> Result<(), Error> {
        for path in paths {
            match self {
                Self::Daemon { client, .. } => {
                    let mut resigner = Resigner::new(w).map_err(io_err("writing the stream"))?;
                    client
                        .export_path(&path.to_string(), false, &mut BlockingWriter(&mut resigner))
                        .await?;
                    resigner
                        .finish(key)
                        .map_err(io_err(format!("exporting {path}")))?;
                }
                _ => {
                    let local = self
                        .local()
                        .ok_or_else(|| Error::Other("no local store".into()))?;
                    let info = local
                        .db()
                        .path_info(path)?
                        .ok_or_else(|| Error::NotValid(path.clone()))?;
                    write_local_item(local, &info, key, w)?;
                }
            }
        }
        export::write_end(w).map_err(io_err("writing the stream"))?;
        w.flush().map_err(io_err("writing the stream"))
    }

    /// Build `drvs` (valid `.drv` items in this store) and their missing
    /// dependencies; `events` hears of every step as it happens (build log
    /// lines included). One result per derivation, in order; a failed
    /// build is a result, not an error.
    pub async fn build(
        &mut self,
        drvs: &[StorePath],
        opts: &BuildOptions,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<Vec<BuildResult>, Error> {
        let name = self.name();
        match self {
            Self::Embedded(e) => build::build(e, drvs, opts, events)
                .await
                .map_err(|err| Error::Other(err.to_string())),
            Self::Daemon {
                client, store_dir, ..
            } => daemon_build(client, store_dir, drvs, opts, events).await,
            Self::Local(_) => Err(Error::Unsupported {
                store: name,
                what: "build (use the daemon or an embedded store)",
            }),
        }
    }

    /// The embedded store, when this is one.
    pub fn embedded(&self) -> Option<&EmbeddedStore> {
        match self {
            Self::Embedded(e) => Some(e),
            _ => None,
        }
    }

    /// Set the function that receives the daemon's log (daemon stores only).
    pub fn set_daemon_logger(&mut self, log: impl FnMut(daemon::LogEvent) + Send + Sync + 'static) {
        if let Self::Daemon { client, .. } = self {
            client.set_logger(log);
        }
    }
}

/// A database whose items live in another store directory than the one
/// given is refused before anything is written: the usual mistake is a
/// Nix store used with the default `/gnu/store`.
fn same_store_dir(db: &Db, store_dir: &StoreDir) -> Result<(), Error> {
    let Some(item) = db.any_path()? else {
        return Ok(());
    };
    match StorePath::parse(&item) {
        Ok(p) if p.dir() == store_dir => Ok(()),
        Ok(p) => Err(Error::Other(format!(
            "{} holds items of {}, not {store_dir}: pass --store-dir {}",
            db.file().display(),
            p.dir(),
            p.dir()
        ))),
        Err(e) => Err(Error::Other(format!(
            "{}: {item}: {e}",
            db.file().display()
        ))),
    }
}

/// The outputs of the derivation in file `file`.
pub fn drv_output_paths(
    file: &std::path::Path,
    drv: &StorePath,
) -> Result<BTreeMap<String, StorePath>, Error> {
    local::read_derivation(file, drv)?
        .outputs
        .into_iter()
        .map(|(name, o)| {
            StorePath::parse(&o.path)
                .map(|p| (name, p))
                .map_err(|e| Error::Other(format!("{drv}: output {}: {e}", o.path)))
        })
        .collect()
}

fn paths_of(imported: Vec<Imported>) -> Vec<StorePath> {
    imported.into_iter().map(|i| i.path).collect()
}

/// Write one signed item from a local store's files and database. The
/// NAR dumped from disk must still have the registered hash and size (as
/// the daemons check before exporting); otherwise nothing is signed and the
/// stream is left unfinished.
fn write_local_item(
    local: &LocalStore,
    info: &PathInfo,
    key: &SecretKey,
    w: &mut impl Write,
) -> Result<(), Error> {
    let what = || format!("exporting {}", info.path);
    let mut item = ItemWriter::begin(w).map_err(io_err(what()))?;
    dump::dump_path(&local.real_path(&info.path), item.nar_sink())
        .map_err(|e| Error::Other(format!("{}: {e}", what())))?;
    // The item's hash H covers the NAR first: its state there is the
    // NAR's hash (one pass over the bytes for both).
    let (hash, size) = item.nar_sink().snapshot();
    if hash != info.nar_hash || (info.nar_size != 0 && size != info.nar_size) {
        return Err(Error::Other(format!(
            "{} was modified since it was registered (its NAR hash is now sha256:{}, registered sha256:{}); \
             refusing to sign it: repair or delete it",
            info.path,
            nixbase32::encode(&hash),
            nixbase32::encode(&info.nar_hash)
        )));
    }
    let mut failure = None;
    item.finish(
        &info.path,
        &info.references,
        info.deriver.as_ref(),
        |h| match Signature::create(key, h) {
            Ok(sig) => Some(sig.to_advanced()),
            Err(e) => {
                failure = Some(e);
                None
            }
        },
    )
    .map_err(io_err(what()))?;
    match failure {
        Some(e) => Err(Error::Other(format!("{}: signing: {e}", what()))),
        None => Ok(()),
    }
}
