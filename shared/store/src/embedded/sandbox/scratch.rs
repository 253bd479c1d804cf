//! A build's host-side sandbox directory, `tmp/<build dir name>.sandbox`
//! (0700, ours): the set-up script and the **scratch store** `store/`,
//! which the builder sees at the logical store path.
//!
//! The scratch store is on the store's file system (under the same root),
//! so that outputs are moved into the real store by `rename`. It is 1775:
//! when we are root it belongs to root and the build user's group, as
//! Nix's chroot store does, so the builder may create entries but not
//! remove ours. It holds one mount point per input path — a directory or
//! an empty file, on which the set-up script binds the real item
//! read-only; a symlink item is copied instead (a bind would follow it).
//! Nothing in it is trusted: once the builder's namespace is gone its
//! outputs are checked and canonicalised where they are (a fixed output
//! after being copied into `fresh/`, module `fresh`), only then moved
//! into the store, and the rest is deleted (without following symlinks,
//! `offload_files::atomic::remove_tree`).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use offload_files::atomic;
use rustix::fs::{FileType, Mode, OFlags};

use super::User;
use crate::embedded::canonical::{fd_path, set_store_mtime};

/// One input path, bound read-only at `STORE/base`.
pub(crate) struct Input {
    /// Its files in the real store.
    pub(crate) real: PathBuf,
    /// Its base name.
    pub(crate) base: String,
}

/// The host-side sandbox directory of one build, deleted when dropped.
pub(crate) struct Scratch {
    dir: PathBuf,
    binds: Vec<Input>,
    /// Left in place when dropped: set by [`leave`](Self::leave), or by
    /// the kill of a build whose namespace would not end.
    left: Arc<AtomicBool>,
}

impl Scratch {
    /// Make `dir` (replacing a leftover) with the scratch store and the
    /// mount points of `inputs`.
    pub(crate) fn create(
        dir: PathBuf,
        inputs: impl IntoIterator<Item = Input>,
        user: User,
    ) -> io::Result<Self> {
        atomic::remove_tree(&dir)?;
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut scratch = Self {
            dir,
            binds: Vec::new(),
            left: Arc::new(AtomicBool::new(false)),
        };
        // On error, dropping it removes it.
        scratch.binds = scratch.fill(inputs, user)?;
        Ok(scratch)
    }

    fn fill(&self, inputs: impl IntoIterator<Item = Input>, user: User) -> io::Result<Vec<Input>> {
        let store = self.store();
        fs::create_dir(&store)?;
        if let User::Build { gid, .. } = user {
            std::os::unix::fs::chown(&store, None, Some(gid))?;
        }
        fs::set_permissions(&store, fs::Permissions::from_mode(0o1775))?;
        let mut binds = Vec::new();
        for input in inputs {
            let at = store.join(&input.base);
            let meta = fs::symlink_metadata(&input.real)?;
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&input.real)?, &at)?;
                continue;
            }
            if meta.is_dir() {
                fs::create_dir(&at)?;
            } else {
                fs::File::create(&at)?;
            }
            binds.push(input);
        }
        Ok(binds)
    }

    /// The scratch store.
    pub(crate) fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Where a fixed output's fresh copy is made (a directory of ours).
    pub(crate) fn fresh(&self) -> PathBuf {
        self.dir.join("fresh")
    }

    /// Where the builder's environment is written for the set-up script.
    pub(crate) fn environment(&self) -> PathBuf {
        self.dir.join("environment")
    }

    /// Where the set-up script is written.
    pub(crate) fn script(&self) -> PathBuf {
        self.dir.join("setup.sh")
    }

    /// The input paths to bind read-only.
    pub(crate) fn binds(&self) -> &[Input] {
        &self.binds
    }

    /// Leave the directory in place (its builder's processes may still
    /// use it; the next `open` of the store sweeps it).
    pub(crate) fn leave(self) {
        self.left.store(true, Ordering::SeqCst);
    }

    /// The flag that keeps this directory in place when dropped.
    pub(crate) fn leave_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.left)
    }

    /// Move a checked, canonical output from `from` (in this directory)
    /// to `real` in the real store, replacing an invalid leftover there.
    /// Only once the builder and its namespace are gone.
    pub(crate) fn take_output(&self, from: &Path, real: &Path) -> io::Result<()> {
        atomic::remove_tree(real)?;
        let fd = rustix::fs::open(
            from,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let is_dir =
            FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Directory;
        // Moving a directory to another parent rewrites its `..`, which
        // needs write permission on it: a canonical (0555) directory lends
        // it to its owner for the move, unless we are root.
        let lend = is_dir && !rustix::process::geteuid().is_root();
        let mode = |m| rustix::fs::chmod(fd_path(fd.as_fd()), Mode::from_raw_mode(m));
        if lend {
            mode(0o755)?;
        }
        let moved = fs::rename(from, real);
        if lend {
            mode(0o555)?;
        }
        moved?;
        if is_dir {
            // In case the move touched its times.
            let parent = real.parent().unwrap_or(Path::new("/"));
            let name = real.file_name().unwrap_or_default();
            let dir = rustix::fs::open(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
            set_store_mtime(dir.as_fd(), name)?;
        }
        Ok(())
    }
}

/// Deletes the whole directory, with whatever the builder left there (on
/// every path, cancellation included; from the host the mount points are
/// plain directories and files, so nothing is deleted through them) —
/// unless left in place.
impl Drop for Scratch {
    fn drop(&mut self) {
        if self.left.load(Ordering::SeqCst) {
            tracing::warn!("leaving {} in place", self.dir.display());
            return;
        }
        if let Err(e) = atomic::remove_tree(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_copies_and_outputs() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir_all(real.join("aaa-dir")).unwrap();
        fs::write(real.join("bbb-file"), b"x").unwrap();
        std::os::unix::fs::symlink("aaa-dir", real.join("ccc-link")).unwrap();
        let inputs = ["aaa-dir", "bbb-file", "ccc-link"].map(|b| Input {
            real: real.join(b),
            base: b.to_owned(),
        });
        let scratch = Scratch::create(tmp.path().join("s"), inputs, User::MapRoot).unwrap();
        let store = scratch.store();
        assert_eq!(
            fs::metadata(&store).unwrap().permissions().mode() & 0o7777,
            0o1775
        );
        assert!(store.join("aaa-dir").is_dir());
        assert_eq!(fs::read(store.join("bbb-file")).unwrap(), b"");
        assert_eq!(
            fs::read_link(store.join("ccc-link")).unwrap(),
            Path::new("aaa-dir")
        );
        let bound: Vec<&str> = scratch.binds().iter().map(|i| i.base.as_str()).collect();
        assert_eq!(bound, ["aaa-dir", "bbb-file"]);

        fs::write(store.join("ddd-out"), b"built").unwrap();
        let out = real.join("ddd-out");
        scratch.take_output(&store.join("ddd-out"), &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"built");
        // A canonical directory, over a leftover.
        fs::create_dir(store.join("eee-dir")).unwrap();
        fs::write(store.join("eee-dir/f"), b"x").unwrap();
        fs::set_permissions(store.join("eee-dir"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::create_dir(real.join("eee-dir")).unwrap();
        scratch
            .take_output(&store.join("eee-dir"), &real.join("eee-dir"))
            .unwrap();
        assert_eq!(fs::read(real.join("eee-dir/f")).unwrap(), b"x");
        let meta = fs::metadata(real.join("eee-dir")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 1);
        fs::set_permissions(real.join("eee-dir"), fs::Permissions::from_mode(0o755)).unwrap();
        drop(scratch);
        assert!(!tmp.path().join("s").exists());
    }
}
