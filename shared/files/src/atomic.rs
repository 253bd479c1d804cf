//! Writing files atomically: a temporary sibling, fsync, rename.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// A sibling of `path` with a random suffix, in the same directory (so a
/// rename is atomic). The name starts with `.` so it never looks like a
/// store item.
pub fn temp_sibling(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let base = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut name = std::ffi::OsString::from(format!(".{tag}-{:016x}-", u64::from_le_bytes(random)));
    name.push(base);
    Ok(path.with_file_name(name))
}

/// Rename `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`),
/// so a concurrent writer's file is never replaced. Fails with
/// `AlreadyExists` if `to` exists. On filesystems without the flag, falls
/// back to a check followed by a plain rename.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", to.display()),
                ));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Create `path` with `contents` and mode `mode`, atomically, failing with
/// `AlreadyExists` if it exists (never replacing it).
pub fn create_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, contents, mode, rename_noreplace)
}

/// Replace `path` with `contents` atomically, with permission bits `mode`.
/// The file is created with `mode` from the start, so a secret is never
/// readable by others, not even briefly.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, contents, mode, |from, to| fs::rename(from, to))
}

fn write_with(
    path: &Path,
    contents: &[u8],
    mode: u32,
    rename: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_sibling(path, "tmp")?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        // The umask may have cleared bits of `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync the directory holding `path`, so a rename survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Remove a tree that may contain read-only directories (as restored
/// store items do). Missing paths are fine.
///
/// Only `path`'s parent is looked up by name. Below it every step goes
/// through directory descriptors: entries are opened with `O_NOFOLLOW`
/// and removed with `unlinkat`, a directory is made writable by `fchmod`
/// on its own descriptor, and a symlink is removed, never followed. A tree
/// that changes meanwhile (a directory swapped for a symlink) can make
/// this fail, never reach outside the tree. Going back up opens `..`,
/// checked (device and inode) to be the directory that was left, so a
/// few descriptors are open whatever the depth: trees deeper than
/// `PATH_MAX` are removed too.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_at(parent.as_fd(), name)
}

/// A directory being emptied: its identity, its name in its parent, and
/// the subdirectories still to remove.
struct Level {
    id: (u64, u64),
    name: OsString,
    subdirs: Vec<OsString>,
}

fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return unlink_entry(parent, name);
    }
    let Some((mut cur, id)) = open_dir(parent, name)? else {
        return Ok(());
    };
    let mut stack = vec![Level {
        id,
        name: name.to_owned(),
        subdirs: clear(cur.as_fd())?,
    }];
    while let Some(level) = stack.last_mut() {
        if let Some(sub) = level.subdirs.pop() {
            if let Some((fd, id)) = open_dir(cur.as_fd(), &sub)? {
                let subdirs = clear(fd.as_fd())?;
                stack.push(Level {
                    id,
                    name: sub,
                    subdirs,
                });
                cur = fd;
            }
            continue;
        }
        let Some(done) = stack.pop() else { break };
        let Some(up) = stack.last() else { break };
        let parent_fd = rustix::fs::openat(
            cur.as_fd(),
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&parent_fd)?;
        if (st.st_dev, st.st_ino) != up.id {
            return Err(io::Error::other(format!(
                "{}: moved while being removed",
                OsStr::new(&done.name).display()
            )));
        }
        remove_dir_entry(parent_fd.as_fd(), &done.name)?;
        cur = parent_fd;
    }
    drop(cur);
    remove_dir_entry(parent, name)
}

/// Open the directory `name` in `parent` (not following a symlink),
/// writable by us; `None` if it is gone, or was not a directory (then
/// it is removed).
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<(OwnedFd, (u64, u64))>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::NOTDIR | Errno::LOOP) => return unlink_entry(parent, name).map(|()| None),
        Err(Errno::ACCESS) => {
            // Not readable by us (we own it, or could not chmod it): make
            // it so through a path descriptor, which needs no permission.
            let path = rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::chmod(
                format!("/proc/self/fd/{}", path.as_raw_fd()),
                Mode::from_raw_mode(0o700),
            )?;
            rustix::fs::openat(&path, ".", flags, Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        match rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)) {
            // Not ours: its permissions may still allow removing entries.
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some((fd, (st.st_dev, st.st_ino))))
}

/// Remove every entry of `dir` that is not a directory; the names of its
/// subdirectories.
fn clear(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            _ => false,
        };
        if is_dir {
            subdirs.push(name.to_owned());
        } else {
            files.push(name.to_owned());
        }
    }
    for name in files {
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // It became a directory meanwhile.
            Err(Errno::ISDIR) => subdirs.push(name),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(subdirs)
}

fn unlink_entry(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn remove_dir_entry(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_read_only_trees_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let top = tmp.path().join("top");
        fs::create_dir_all(top.join("a/b")).unwrap();
        fs::write(top.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), top.join("file-link")).unwrap();
        for d in ["a/b", "a", ""] {
            fs::set_permissions(top.join(d), fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&top).unwrap();
        assert!(fs::symlink_metadata(&top).is_err());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"k");
        assert_eq!(
            fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777
        );

        // A symlink at the top is removed, its target kept; missing is fine.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("keep").exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }

    #[test]
    fn removes_trees_deeper_than_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("deep");
        fs::create_dir(&top).unwrap();
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut fd = rustix::fs::open(&top, dir_flags, Mode::empty()).unwrap();
        // 3000 levels of "dd/": 9000 bytes of path, beyond PATH_MAX.
        for level in 0..3000 {
            rustix::fs::mkdirat(&fd, "dd", Mode::from_raw_mode(0o755)).unwrap();
            rustix::fs::mkdirat(&fd, "side", Mode::from_raw_mode(0o755)).unwrap();
            let next = rustix::fs::openat(&fd, "dd", dir_flags, Mode::empty()).unwrap();
            if level % 7 == 0 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o555)).unwrap();
            }
            fd = next;
        }
        drop(
            rustix::fs::openat(
                &fd,
                "bottom",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o444),
            )
            .unwrap(),
        );
        drop(fd);
        remove_tree(&top).unwrap();
        assert!(fs::symlink_metadata(&top).is_err());
    }
}
