//! Build slots shared with Guix's own hook (spec §5.1): slot `i` of a
//! machine is the file `STATE/offload/NAME:PORT/i`, held by a POSIX record
//! lock (`fcntl(F_SETLK)` write lock on the whole file, not `flock`), so
//! that this hook and a stock `guix offload` on one daemon never run more
//! builds on a machine than its slots. The kernel drops the lock when the
//! process dies, however it dies.
//!
//! Record locks belong to the process: closing any descriptor of a file
//! drops the process's lock on it. A [`Slots`] opens each slot file at
//! most once and keeps it open while its slot is held.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, fcntl_lock};

/// Most slots tried on one machine.
pub const MAX_SLOTS: u32 = 256;

/// A held slot; dropping it (or the process dying) frees it.
#[derive(Debug)]
pub struct Slot {
    path: PathBuf,
}

impl Slot {
    /// The slot file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The slot files of this process, under one state directory.
#[derive(Debug)]
pub struct Slots {
    root: PathBuf,
    held: HashMap<PathBuf, File>,
}

impl Slots {
    /// Slots under `STATE_DIR/offload`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("offload"),
            held: HashMap::new(),
        }
    }

    /// The directory of machine `name` reached on `port`.
    pub fn machine_dir(&self, name: &str, port: u16) -> PathBuf {
        // A name is a host name, never a path; anything else is made safe.
        let safe: String = name
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        self.root.join(format!("{safe}:{port}"))
    }

    /// Take one free slot of machine `name:port`, which has `count`
    /// slots; `None` when all are taken (by any process).
    pub fn acquire(&mut self, name: &str, port: u16, count: u32) -> io::Result<Option<Slot>> {
        let dir = self.machine_dir(name, port);
        std::fs::create_dir_all(&dir)?;
        for i in 0..count.min(MAX_SLOTS) {
            let path = dir.join(i.to_string());
            if self.held.contains_key(&path) {
                continue;
            }
            // Guile opens it "w0": write-only, created, truncated.
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            match fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    self.held.insert(path.clone(), file);
                    return Ok(Some(Slot { path }));
                }
                Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Free `slot`.
    pub fn release(&mut self, slot: Slot) {
        // Closing the only descriptor drops the lock.
        self.held.remove(&slot.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_named_as_guix_names_them_and_not_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut slots = Slots::new(dir.path());
        let a = slots.acquire("arm1", 22, 2).unwrap().expect("slot 0");
        assert_eq!(a.path(), dir.path().join("offload/arm1:22/0"));
        let b = slots.acquire("arm1", 22, 2).unwrap().expect("slot 1");
        assert_eq!(b.path(), dir.path().join("offload/arm1:22/1"));
        assert!(slots.acquire("arm1", 22, 2).unwrap().is_none());
        slots.release(a);
        let c = slots.acquire("arm1", 22, 2).unwrap().expect("slot 0 again");
        assert_eq!(c.path(), dir.path().join("offload/arm1:22/0"));
        assert_eq!(
            slots.machine_dir("../x/y", 7),
            dir.path().join("offload/.._x_y:7")
        );
    }
}
