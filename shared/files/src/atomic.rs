//! Writing files atomically: a temporary sibling, fsync, rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}
