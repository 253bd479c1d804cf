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
//!
//! Holding the lock, `open` sweeps `tmp/`: whatever is there was left by
//! an earlier process (one that crashed, or whose builders outlived it),
//! since builds of this one start only after the store is open. Every
//! build's `.sandbox` directory goes, and every build directory but the
//! kept ones (`--keep-failed` makes them 0755; a running build's is
//! 0700). Removal never follows a symlink, so even the files of a build
//! whose processes still ran could not lead it outside `tmp/`.

pub mod build;
mod canonical;
mod claims;
pub(crate) mod drv_paths;
mod fresh;
mod outputs;
mod runner;
mod sandbox;
pub mod users;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use offload_core::store_path::StoreDir;
use tokio::sync::watch;

use crate::db::{self, Db};
use crate::local::LocalStore;

/// An embedded store.
pub struct EmbeddedStore {
    root: PathBuf,
    local: LocalStore,
    _lock: std::fs::File,
    /// Outputs being built now, by any build of this process.
    claims: Arc<claims::Claims>,
    /// Bumped whenever outputs stop being busy or a build user is free.
    released: Arc<watch::Sender<u64>>,
    /// The build users (when we are root).
    users: Arc<users::BuildUsers>,
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
        sweep(&root.join("tmp"));
        let db = Db::open_or_create(&root.join("var/db"))?;
        let released = Arc::new(watch::Sender::new(0));
        Ok(Self {
            root: root.to_owned(),
            local: LocalStore::new(store_dir, root.join("store"), db),
            _lock: lock,
            claims: claims::Claims::new(Arc::clone(&released)),
            users: users::BuildUsers::new(Arc::clone(&released)),
            released,
        })
    }

    /// The store's build users.
    pub(crate) fn users(&self) -> &Arc<users::BuildUsers> {
        &self.users
    }

    /// The outputs claimed by builds of this process.
    pub(crate) fn claims(&self) -> &Arc<claims::Claims> {
        &self.claims
    }

    /// Hears of every claim given back and every build user freed.
    pub(crate) fn releases(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its items and database.
    pub fn local(&self) -> &LocalStore {
        &self.local
    }
}

/// Delete what earlier processes left in `tmp/` (see the module
/// documentation); only with the store's lock held.
fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = if name.ends_with(".sandbox") {
            true
        } else if name.starts_with("nix-build-") || name.starts_with("guix-build-") {
            // Not followed: a symlink here is no kept directory. A kept
            // one is ours and 0755 (a builder can set the mode, not the
            // owner).
            let uid = rustix::process::geteuid().as_raw();
            entry.metadata().map_or(true, |m| {
                !m.is_dir() || m.permissions().mode() & 0o777 != 0o755 || m.uid() != uid
            })
        } else {
            false
        };
        if stale {
            let path = entry.path();
            tracing::info!("removing {}, left by an earlier build", path.display());
            if let Err(e) = offload_files::atomic::remove_tree(&path) {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sweeps_what_earlier_builds_left() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let t = root.join("tmp");
        for (name, mode) in [
            ("nix-build-a-0", 0o700),
            ("nix-build-a-0.sandbox", 0o700),
            ("guix-build-b.drv-0", 0o700),
            ("nix-build-kept-0", 0o755),
            ("unrelated", 0o700),
        ] {
            std::fs::create_dir_all(t.join(name).join("sub")).unwrap();
            std::fs::set_permissions(
                t.join(name).join("sub"),
                std::fs::Permissions::from_mode(0o555),
            )
            .unwrap();
            std::fs::set_permissions(t.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(root.join("var"), t.join("nix-build-link-0")).unwrap();
        // A builder made its own directory look kept: 0755, but not ours.
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir_all(t.join("nix-build-forged-0")).unwrap();
            std::fs::set_permissions(
                t.join("nix-build-forged-0"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            rustix::fs::chown(
                t.join("nix-build-forged-0"),
                Some(rustix::process::Uid::from_raw(30001)),
                Some(rustix::process::Gid::from_raw(30001)),
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(root, StoreDir::default()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&t)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["nix-build-kept-0", "unrelated"]);
        assert!(root.join("var/db").is_dir());
        drop(store);
    }
}
