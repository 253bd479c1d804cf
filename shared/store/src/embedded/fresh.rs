//! Copying a fixed-output derivation's outputs to fresh inodes before they
//! are checked, as Nix ≥ 2.18.2 does (CVE-2024-27297): a fixed-output
//! builder keeps the host's network, so it can hand descriptors of its
//! outputs (a file open for writing, a directory) to a process outside the
//! sandbox, which could change them after they were hashed and
//! registered. The copy is made by us into a directory of ours of which
//! no one else holds a descriptor; the builder's files are deleted with
//! its scratch directory.
//!
//! The builder's tree is read without following symlinks: entries are
//! opened with `O_PATH | O_NOFOLLOW` relative to their directory's
//! descriptor, and their type and owner are taken from that descriptor.
//! Every file must belong to the builder's user, or be a hard link to a
//! file already copied (the rule of module `canonical`); only regular
//! files (contents and owner-execute bit), directories and symlinks are
//! copied, at most [`MAX_DEPTH`] directories deep, a file no longer than
//! it was when opened. The copy is ours and is then canonicalised like any
//! output.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use super::canonical::{Error, MAX_DEPTH, dir_names, fd_path, io_at, open_parent, open_path};

/// Copy the tree the builder (running as `builder_uid`) left at `from` to
/// `to` (which must not exist), in fresh inodes.
pub(crate) fn copy_fresh(from: &Path, to: &Path, builder_uid: u32) -> Result<(), Error> {
    let (src_dir, src_name) = open_parent(from)?;
    let (dst_dir, dst_name) = open_parent(to)?;
    let mut copier = Copier {
        builder_uid,
        root: rustix::process::geteuid().is_root(),
        seen: HashSet::new(),
    };
    copier.copy(
        src_dir.as_fd(),
        src_name,
        dst_dir.as_fd(),
        dst_name,
        from,
        0,
    )
}

struct Copier {
    builder_uid: u32,
    root: bool,
    seen: HashSet<(u64, u64)>,
}

impl Copier {
    fn copy(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        path: &Path,
        depth: usize,
    ) -> Result<(), Error> {
        let errno = |e: rustix::io::Errno| io_at(path)(e.into());
        let (fd, st) = open_path(src_dir, src_name, path)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let inode = (st.st_dev, st.st_ino);
        if st.st_uid != self.builder_uid
            && (ft == FileType::Directory || !self.seen.contains(&inode))
        {
            return Err(Error::Ownership(path.to_owned()));
        }
        self.seen.insert(inode);
        match ft {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(errno)?;
                rustix::fs::symlinkat(target.as_c_str(), dst_dir, dst_name).map_err(errno)
            }
            FileType::RegularFile => {
                self.readable(fd.as_fd(), st.st_mode, 0o400, path)?;
                // Through `/proc/self/fd/N`: exactly the inode checked.
                let src = rustix::fs::open(
                    fd_path(fd.as_fd()),
                    OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?;
                let exec = st.st_mode & 0o100;
                let dst = rustix::fs::openat(
                    dst_dir,
                    dst_name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600 | exec),
                )
                .map_err(errno)?;
                // No more than its size when opened: a descriptor holder
                // appending forever cannot make the copy endless.
                let size = rustix::fs::fstat(&src).map_err(errno)?.st_size;
                let mut src = io::Read::take(File::from(src), u64::try_from(size).unwrap_or(0));
                io::copy(&mut src, &mut File::from(dst)).map_err(io_at(path))?;
                Ok(())
            }
            FileType::Directory => {
                if depth >= MAX_DEPTH {
                    return Err(Error::TooDeep(path.to_owned()));
                }
                self.readable(fd.as_fd(), st.st_mode, 0o500, path)?;
                rustix::fs::mkdirat(dst_dir, dst_name, Mode::from_raw_mode(0o700))
                    .map_err(errno)?;
                let (dst, _) = open_path(dst_dir, dst_name, path)?;
                for child in dir_names(fd.as_fd(), path)? {
                    self.copy(
                        fd.as_fd(),
                        &child,
                        dst.as_fd(),
                        &child,
                        &path.join(&child),
                        depth + 1,
                    )?;
                }
                Ok(())
            }
            _ => Err(Error::UnsupportedType(path.to_owned())),
        }
    }

    /// Give the owner the permission bits `need` on the file of path
    /// descriptor `fd` (the builder's, about to be discarded), unless we
    /// are root and need none.
    fn readable(&self, fd: BorrowedFd<'_>, mode: u32, need: u32, path: &Path) -> Result<(), Error> {
        if self.root || mode & need == need {
            return Ok(());
        }
        rustix::fs::chmod(fd_path(fd), Mode::from_raw_mode((mode | need) & 0o7777))
            .map_err(|e| io_at(path)(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn a_fresh_copy_of_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::write(out.join("f"), b"data").unwrap();
        fs::write(out.join("sub/x"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(out.join("sub/x"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::hard_link(out.join("f"), out.join("h")).unwrap();
        std::os::unix::fs::symlink("../f", out.join("sub/l")).unwrap();
        let uid = fs::metadata(&out).unwrap().uid();
        let copy = tmp.path().join("copy");
        copy_fresh(&out, &copy, uid).unwrap();

        let before = offload_files::dump::dump_path(&out, Vec::new()).unwrap();
        let after = offload_files::dump::dump_path(&copy, Vec::new()).unwrap();
        assert_eq!(before, after);
        for p in ["f", "h", "sub", "sub/x"] {
            assert_ne!(
                fs::metadata(out.join(p)).unwrap().ino(),
                fs::metadata(copy.join(p)).unwrap().ino(),
                "{p}"
            );
        }
        // Writing to the original changes nothing in the copy.
        fs::write(out.join("f"), b"changed").unwrap();
        assert_eq!(fs::read(copy.join("f")).unwrap(), b"data");
        assert_eq!(fs::read(copy.join("h")).unwrap(), b"data");

        // Someone else's file, or a FIFO, is refused.
        let err = copy_fresh(&out, &tmp.path().join("c2"), uid + 1).unwrap_err();
        assert!(err.to_string().contains("invalid ownership"), "{err}");
        let fifo = tmp.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = copy_fresh(&fifo, &tmp.path().join("c3"), uid).unwrap_err();
        assert!(err.to_string().contains("unsupported type"), "{err}");
    }
}
