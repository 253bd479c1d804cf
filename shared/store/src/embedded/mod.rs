//! The embedded store (`--store embedded:DIR`): a self-contained store with
//! the daemons' layout and database schema, and a derivation builder.
//!
//! Layout under DIR: `store/` holds the items (the real directory of the
//! logical store directory, `/gnu/store` by default), `var/db/db.sqlite`
//! the Guix-schema database (`var/db/schema` = `7`), `var/log/` build logs
//! and `tmp/` build directories.
//!
//! One process at a time uses a store: `open` takes an exclusive `flock` on
//! `var/lock` (waiting, and saying so, while another process holds it), so
//! that two processes never build or import the same outputs at once.

pub mod build;
mod canonical;
mod drv_paths;
mod outputs;
mod runner;
mod sandbox;

use std::path::{Path, PathBuf};

use offload_core::store_path::StoreDir;

use crate::db::{self, Db};
use crate::local::LocalStore;

/// An embedded store.
pub struct EmbeddedStore {
    root: PathBuf,
    local: LocalStore,
    _lock: std::fs::File,
}

impl EmbeddedStore {
    /// Open the store under `root`, creating its layout if needed; its
    /// items are named in the logical directory `store_dir`.
    pub fn open(root: &Path, store_dir: StoreDir) -> Result<Self, db::Error> {
        for sub in ["store", "var/db", "var/log", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| db::Error::Io { path: dir, source })?;
        }
        let lock = lock(&root.join("var/lock"))?;
        let db = Db::open_or_create(&root.join("var/db"))?;
        Ok(Self {
            root: root.to_owned(),
            local: LocalStore::new(store_dir, root.join("store"), db),
            _lock: lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its items and database.
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// Its items and database, for writing.
    pub fn local_mut(&mut self) -> &mut LocalStore {
        &mut self.local
    }
}

/// Take the store's lock, waiting while another process has it.
fn lock(path: &Path) -> Result<std::fs::File, db::Error> {
    use rustix::fs::FlockOperation;
    let io = |source| db::Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        tracing::info!(
            "waiting for another process using the embedded store ({})",
            path.display()
        );
        rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(|e| io(e.into()))?;
    }
    Ok(file)
}
