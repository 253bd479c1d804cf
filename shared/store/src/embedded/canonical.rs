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
//!
//! Nothing is done through a symlink: only the output's parent directory
//! is opened by name; every file is then opened with `O_PATH |
//! O_NOFOLLOW` relative to its directory's descriptor, its type and owner
//! are taken from that descriptor, and its mode and extended attributes
//! are changed through `/proc/self/fd/N`, which names exactly that inode
//! (there is no `fchmod` on a path descriptor, and `fchmodat` cannot
//! refuse to follow a symlink). Times and owner are set relative to the
//! directory with `AT_SYMLINK_NOFOLLOW`. Outputs are canonicalised while
//! they are still in the build's private scratch directory, after the
//! builder's namespace is gone.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use offload_core::hashing::HashingWriter;
use offload_core::refscan::RefScanner;
use offload_files::dump;
use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT, Uid,
};

/// The mtime of store files.
const STORE_MTIME: i64 = 1;

/// Most directories an output may nest (the NAR reader's default limit:
/// deeper outputs could not be imported anywhere).
pub(crate) const MAX_DEPTH: usize = 256;

/// Why an output could not be made canonical.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A socket, FIFO or device.
    #[error("file '{}' has an unsupported type", .0.display())]
    UnsupportedType(PathBuf),
    /// Owned by someone else, and not a hard link seen before.
    #[error("invalid ownership on file '{}'", .0.display())]
    Ownership(PathBuf),
    /// Directories nested more than [`MAX_DEPTH`] deep.
    #[error("'{}' is nested more than {MAX_DEPTH} directories deep", .0.display())]
    TooDeep(PathBuf),
    /// A system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn errno_at(path: &Path) -> impl FnOnce(rustix::io::Errno) -> Error + '_ {
    move |e| io_at(path)(e.into())
}

/// `/proc/self/fd/N`: exactly the file `fd` refers to.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The parent directory of `path` (opened by name: it is ours) and
/// `path`'s last component.
pub(crate) fn open_parent(path: &Path) -> Result<(OwnedFd, &OsStr), Error> {
    let name = path
        .file_name()
        .ok_or_else(|| io_at(path)(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => Path::new("/"),
    };
    let fd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_at(parent))?;
    Ok((fd, name))
}

/// `name` in `dir` as a path descriptor (never following a symlink), and
/// its status.
pub(crate) fn open_path(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> Result<(OwnedFd, rustix::fs::Stat), Error> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_at(path))?;
    let st = rustix::fs::fstat(&fd).map_err(errno_at(path))?;
    Ok((fd, st))
}

/// The names in the directory of path descriptor `fd` (made readable
/// first if it is ours).
pub(crate) fn dir_names(fd: BorrowedFd<'_>, path: &Path) -> Result<Vec<OsString>, Error> {
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_at(path))?;
    let mut names = Vec::new();
    for entry in Dir::new(dir).map_err(errno_at(path))? {
        let entry = entry.map_err(errno_at(path))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
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
        let (parent, name) = open_parent(path)?;
        self.entry(parent.as_fd(), name, path, 0)
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        depth: usize,
    ) -> Result<(), Error> {
        let (fd, st) = open_path(dir, name, path)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if !matches!(
            ft,
            FileType::RegularFile | FileType::Directory | FileType::Symlink
        ) {
            return Err(Error::UnsupportedType(path.to_owned()));
        }
        let is_link = ft == FileType::Symlink;
        remove_xattrs(dir, name, fd.as_fd(), is_link, path)?;
        let inode = (st.st_dev, st.st_ino);
        if st.st_uid != self.from_uid {
            if ft == FileType::Directory || !self.seen.contains(&inode) {
                return Err(Error::Ownership(path.to_owned()));
            }
            return Ok(());
        }
        self.seen.insert(inode);
        if !is_link {
            let mode = st.st_mode & 0o7777;
            if mode != 0o444 && mode != 0o555 {
                let exec = if mode & 0o100 != 0 { 0o111 } else { 0 };
                rustix::fs::chmod(fd_path(fd.as_fd()), Mode::from_raw_mode(0o444 | exec))
                    .map_err(errno_at(path))?;
            }
        }
        if st.st_mtime != STORE_MTIME {
            set_store_mtime(dir, name).map_err(errno_at(path))?;
        }
        if st.st_uid != self.euid {
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(self.euid)),
                Some(Gid::from_raw(self.egid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno_at(path))?;
        }
        if ft == FileType::Directory {
            if depth >= MAX_DEPTH {
                return Err(Error::TooDeep(path.to_owned()));
            }
            for child in dir_names(fd.as_fd(), path)? {
                self.entry(fd.as_fd(), &child, &path.join(&child), depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Set the mtime of `name` in `dir` (not following a symlink) to the
/// store's, keeping its atime.
pub(crate) fn set_store_mtime(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
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
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
}

/// Remove every extended attribute but `security.selinux`: through
/// `/proc/self/fd/N` for a file or directory, through the directory's
/// descriptor and the name (not following it) for a symlink.
fn remove_xattrs(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    fd: BorrowedFd<'_>,
    is_link: bool,
    path: &Path,
) -> Result<(), Error> {
    let at = if is_link {
        fd_path(dir).join(name)
    } else {
        fd_path(fd)
    };
    let list = |buf: &mut [u8]| {
        if is_link {
            rustix::fs::llistxattr(&at, buf)
        } else {
            rustix::fs::listxattr(&at, buf)
        }
    };
    // (An empty buffer is no size query to rustix: `*_query` is.)
    let query = if is_link {
        rustix::fs::llistxattr_query(&at)
    } else {
        rustix::fs::listxattr_query(&at)
    };
    let len = match query {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NOSYS) => return Ok(()),
        Err(e) => return Err(errno_at(path)(e)),
    };
    // The list may grow between the two calls: leave room.
    let mut buf = vec![0u8; len + 1024];
    let n = list(&mut buf).map_err(errno_at(path))?;
    buf.truncate(n);
    for attr in buf.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if attr == b"security.selinux" {
            continue;
        }
        if is_link {
            rustix::fs::lremovexattr(&at, attr)
        } else {
            rustix::fs::removexattr(&at, attr)
        }
        .map_err(errno_at(path))?;
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

/// The SHA-256 of a regular file's contents (not following a symlink).
pub(crate) fn file_hash(path: &Path) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut w)?;
    Ok(w.take_hash().0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"host file").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o4766)).unwrap();
        let before = fs::metadata(&outside).unwrap();
        let root = tmp.path().join("out");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("dir-link")).unwrap();
        let uid = fs::metadata(&root).unwrap().uid();
        Canonicaliser::new(uid).canonicalise(&root).unwrap();
        let after = fs::metadata(&outside).unwrap();
        assert_eq!(after.mode(), before.mode());
        assert_eq!(after.mtime(), before.mtime());
        assert_ne!(fs::metadata(tmp.path()).unwrap().mtime(), 1);
        // An output that is itself a symlink: only the link is touched.
        let link = tmp.path().join("top-link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        Canonicaliser::new(uid).canonicalise(&link).unwrap();
        assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 1);
        assert_eq!(fs::metadata(&outside).unwrap().mode(), before.mode());
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn user_xattrs_go_and_depth_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        fs::create_dir(&root).unwrap();
        let file = root.join("f");
        fs::write(&file, b"x").unwrap();
        let uid = fs::metadata(&root).unwrap().uid();
        let tagged = rustix::fs::setxattr(&file, "user.tag", b"v", rustix::fs::XattrFlags::empty());
        Canonicaliser::new(uid).canonicalise(&root).unwrap();
        if tagged.is_ok() {
            let mut buf = [0u8; 256];
            assert_eq!(rustix::fs::listxattr(&file, &mut buf[..]).unwrap(), 0);
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();

        let deep = tmp.path().join("deep");
        let mut at = deep.clone();
        for _ in 0..=MAX_DEPTH {
            at.push("d");
        }
        fs::create_dir_all(&at).unwrap();
        let err = Canonicaliser::new(uid).canonicalise(&deep).unwrap_err();
        assert!(err.to_string().contains("nested more than"), "{err}");
    }
}
