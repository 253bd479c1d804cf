//! Keeping the daemon's garbage collector away while items are written
//! into the store directly.
//!
//! Both collectors hold `STATE_DIR/gc.lock` exclusively for the whole of a
//! collection, and processes adding temporary roots take it shared (Nix
//! with `flock`, Guix with `fcntl` record locks). Holding it shared for an
//! import means no collection starts while a temporary copy or a renamed,
//! not yet registered item sits in the store directory — the collector
//! would delete either.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::db::Flavour;

/// A shared hold on `gc.lock`, released when dropped.
pub(crate) struct GcLock {
    _file: File,
}

impl GcLock {
    /// Take `state_dir/gc.lock` shared, the way the daemon of `flavour`
    /// does, waiting while a collection runs.
    pub(crate) fn shared(state_dir: &Path, flavour: Flavour) -> io::Result<Self> {
        let path = state_dir.join("gc.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let lock = |op| match flavour {
            Flavour::Nix => rustix::fs::flock(&file, op),
            Flavour::Guix => rustix::fs::fcntl_lock(&file, op),
        };
        match lock(FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::ACCESS) => {
                tracing::info!(
                    "waiting for the garbage collector to finish ({})",
                    path.display()
                );
                lock(FlockOperation::LockShared)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Self { _file: file })
    }
}
