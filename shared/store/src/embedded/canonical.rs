//! Canonical metadata for build outputs, as Nix 2.8's
//! `canonicalisePathMetaData` (`builder.md` §3.2), and their NAR hash and
//! references.
//!
//! Per file, top down: only regular files, directories and symlinks are
//! allowed; extended attributes other than `security.selinux` are removed;
//! a file not owned by the builder's user is refused unless it is a hard
//! link to an inode already seen in this build (Nix's rule with build
//! users: a foreign owner means a hard link to someone else's file); the
//! mode becomes 0444, or 0555 when the owner could execute (no write,
//! setuid, setgid or sticky bits); the mtime becomes 1 (atime kept); a
//! file of the build user becomes ours (`lchown` to our uid and gid).

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use offload_core::hashing::HashingWriter;
use offload_core::refscan::RefScanner;
use offload_files::dump;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};

/// The mtime of store files.
const STORE_MTIME: i64 = 1;

/// Why an output could not be made canonical.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A socket, FIFO or device.
    #[error("file '{}' has an unsupported type", .0.display())]
    UnsupportedType(PathBuf),
    /// Owned by someone else, and not a hard link seen before.
    #[error("invalid ownership on file '{}'", .0.display())]
    Ownership(PathBuf),
    /// A system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Canonicalises the outputs of one build; hard links between them are
/// recognised through the inodes seen.
pub(crate) struct Canonicaliser {
    from_uid: u32,
    euid: u32,
    egid: u32,
    seen: HashSet<(u64, u64)>,
}

impl Canonicaliser {
    /// For files that should belong to `from_uid` (the user the builder
    /// ran as), made ours.
    pub(crate) fn new(from_uid: u32) -> Self {
        Self {
            from_uid,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            seen: HashSet::new(),
        }
    }

    /// Canonicalise the tree at `path`.
    pub(crate) fn canonicalise(&mut self, path: &Path) -> Result<(), Error> {
        let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            return Err(Error::UnsupportedType(path.to_owned()));
        }
        remove_xattrs(path)?;
        let inode = (meta.dev(), meta.ino());
        if meta.uid() != self.from_uid {
            if ft.is_dir() || !self.seen.contains(&inode) {
                return Err(Error::Ownership(path.to_owned()));
            }
            return Ok(());
        }
        self.seen.insert(inode);
        if !ft.is_symlink() {
            let mode = meta.mode() & 0o7777;
            if mode != 0o444 && mode != 0o555 {
                let exec = if mode & 0o100 != 0 { 0o111 } else { 0 };
                fs::set_permissions(path, fs::Permissions::from_mode(0o444 | exec))
                    .map_err(io_at(path))?;
            }
        }
        if meta.mtime() != STORE_MTIME {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: Timespec {
                    tv_sec: STORE_MTIME,
                    tv_nsec: 0,
                },
            };
            rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_at(path)(e.into()))?;
        }
        if meta.uid() != self.euid {
            std::os::unix::fs::lchown(path, Some(self.euid), Some(self.egid))
                .map_err(io_at(path))?;
        }
        if ft.is_dir() {
            let mut names = Vec::new();
            for entry in fs::read_dir(path).map_err(io_at(path))? {
                names.push(entry.map_err(io_at(path))?.file_name());
            }
            for name in names {
                self.canonicalise(&path.join(name))?;
            }
        }
        Ok(())
    }
}

/// Remove every extended attribute but `security.selinux`.
fn remove_xattrs(path: &Path) -> Result<(), Error> {
    let len = match rustix::fs::llistxattr(path, &mut [0u8; 0][..]) {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NOSYS) => return Ok(()),
        Err(e) => return Err(io_at(path)(e.into())),
    };
    // The list may grow between the two calls: leave room.
    let mut buf = vec![0u8; len + 1024];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).map_err(|e| io_at(path)(e.into()))?;
    buf.truncate(n);
    for name in buf.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        rustix::fs::lremovexattr(path, name).map_err(|e| io_at(path)(e.into()))?;
    }
    Ok(())
}

/// The SHA-256 and length of the NAR of `path`, and which of the 32-char
/// hash parts `candidates` occur in it.
pub(crate) fn nar_hash_and_references(
    path: &Path,
    candidates: &[&str],
) -> Result<([u8; 32], u64, BTreeSet<String>), dump::Error> {
    let mut w = dump::dump_path(
        path,
        HashingWriter::new(RefScanner::new(candidates.iter().copied())),
    )?;
    let (hash, size) = w.take_hash();
    let found = w.get_mut().found().map(str::to_owned).collect();
    Ok((hash, size, found))
}

/// The SHA-256 of a regular file's contents.
pub(crate) fn file_hash(path: &Path) -> io::Result<[u8; 32]> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut fs::File::open(path)?, &mut w)?;
    Ok(w.take_hash().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_times_and_types() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("f"), b"x").unwrap();
        fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o4666)).unwrap();
        fs::write(root.join("x"), b"y").unwrap();
        fs::set_permissions(root.join("x"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
        fs::hard_link(root.join("f"), root.join("h")).unwrap();
        let uid = fs::metadata(&root).unwrap().uid();
        Canonicaliser::new(uid).canonicalise(&root).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(""), 0o555);
        assert_eq!(mode("f"), 0o444);
        assert_eq!(mode("h"), 0o444);
        assert_eq!(mode("x"), 0o555);
        for p in ["", "f", "x", "l"] {
            assert_eq!(
                fs::symlink_metadata(root.join(p)).unwrap().mtime(),
                1,
                "{p}"
            );
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();

        let fifo = tmp.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = Canonicaliser::new(uid).canonicalise(&fifo).unwrap_err();
        assert!(err.to_string().contains("unsupported type"), "{err}");
        let err = Canonicaliser::new(uid + 1).canonicalise(&root).unwrap_err();
        assert!(err.to_string().contains("invalid ownership"), "{err}");
    }
}
