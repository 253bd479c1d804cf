//! The embedded store (`--store embedded:DIR`): a self-contained store with
//! the daemons' layout and database schema, and a derivation builder.
//!
//! Layout under DIR: `store/` holds the items (the real directory of the
//! logical store directory, `/gnu/store` by default), `var/db/db.sqlite`
//! the Guix-schema database (`var/db/schema` = `7`), `var/log/` build logs
//! and `tmp/` build directories.

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
}

impl EmbeddedStore {
    /// Open the store under `root`, creating its layout if needed; its
    /// items are named in the logical directory `store_dir`.
    pub fn open(root: &Path, store_dir: StoreDir) -> Result<Self, db::Error> {
        for sub in ["store", "var/db", "var/log", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| db::Error::Io { path: dir, source })?;
        }
        let db = Db::open_or_create(&root.join("var/db"))?;
        Ok(Self {
            root: root.to_owned(),
            local: LocalStore::new(store_dir, root.join("store"), db),
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
