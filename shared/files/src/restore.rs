//! Restoring a NAR to disk with Guix's canonicalisation (spec §2; Guix
//! `restore-file` + `canonicalize-path-metadata`).
//!
//! * regular files get mode 0444, executables 0555;
//! * directories get 0555 once filled;
//! * every file, directory and symlink gets atime = mtime = 1 s;
//! * symlinks are created as links, never followed.
//!
//! [`restore_atomically`] restores under a temporary sibling name and
//! renames into place only when the whole NAR was valid, so a failure
//! leaves nothing behind.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use offload_core::nar::{self, Event, NarReader};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use crate::atomic;

/// Canonical timestamp: 1 second after the epoch.
const CANONICAL_TIME: i64 = 1;
/// Buffer for copying file contents.
const COPY_BUF: usize = 256 << 10;

/// Why a NAR could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NAR itself is invalid.
    #[error(transparent)]
    Nar(#[from] nar::Error),
    /// Writing to disk failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The destination exists already.
    #[error("{0} already exists; restore into a new path")]
    Exists(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Restore `nar` to `dest`, which must not exist, atomically: on any
/// error nothing is left at `dest` (or at the temporary name).
pub fn restore_atomically<R: Read>(nar: &mut NarReader<R>, dest: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Exists(dest.to_owned()));
    }
    let tmp = atomic::temp_sibling(dest, "restore").map_err(io_err(dest))?;
    let result = restore(nar, &tmp).and_then(|()| {
        atomic::rename_noreplace(&tmp, dest).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::Exists(dest.to_owned()),
            _ => Error::Io {
                path: dest.to_owned(),
                source: e,
            },
        })
    });
    if result.is_err() {
        let _ = atomic::remove_tree(&tmp);
    }
    result
}

/// Restore `nar` to `dest` (which must not exist), canonicalising as it
/// goes. On error, what was created so far is left for the caller.
pub fn restore<R: Read>(nar: &mut NarReader<R>, dest: &Path) -> Result<(), Error> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];
    while let Some(event) = nar.next_event()? {
        let here = |name: &Option<Vec<u8>>| match (dirs.last(), name) {
            (Some(dir), Some(name)) => dir.join(std::ffi::OsStr::from_bytes(name)),
            _ => dest.to_owned(),
        };
        match event {
            Event::Regular {
                name, executable, ..
            } => {
                let path = here(&name);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?;
                loop {
                    let n = nar.contents(&mut buf).map_err(|e| Error::Nar(e.into()))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(io_err(&path))?;
                }
                let mode = if executable { 0o555 } else { 0o444 };
                canonicalise_file(&file, mode).map_err(io_err(&path))?;
            }
            Event::Symlink { name, target } => {
                let path = here(&name);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&path))?;
                set_canonical_times(&path).map_err(io_err(&path))?;
            }
            Event::Directory { name } => {
                let path = here(&name);
                fs::create_dir(&path).map_err(io_err(&path))?;
                dirs.push(path);
            }
            Event::EndDirectory => {
                let path = dirs
                    .pop()
                    .ok_or_else(|| Error::Nar(nar::Error::Usage("unbalanced directory".into())))?;
                set_canonical_times(&path).map_err(io_err(&path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o555))
                    .map_err(io_err(&path))?;
            }
        }
    }
    Ok(())
}

fn canonicalise_file(file: &File, mode: u32) -> io::Result<()> {
    let t = UNIX_EPOCH + Duration::from_secs(CANONICAL_TIME as u64);
    file.set_times(FileTimes::new().set_accessed(t).set_modified(t))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// atime = mtime = 1 s, without following a symlink.
fn set_canonical_times(path: &Path) -> io::Result<()> {
    let t = Timespec {
        tv_sec: CANONICAL_TIME,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}
