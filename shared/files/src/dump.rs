//! NAR of a file tree, like `nix-store --dump`.
//!
//! Entries are written in byte order of their names; a regular file is
//! executable when its owner-execute bit is set; sockets, FIFOs and devices
//! are errors. File contents stream through a fixed buffer.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use offload_core::nar::{self, NarWriter};
use rustix::fs::{Mode, OFlags};

/// Why a tree could not be archived. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the tree failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file type that NAR cannot hold.
    #[error("{0}: cannot archive a socket, FIFO or device file")]
    Unsupported(PathBuf),
    /// The NAR writer refused (a name it cannot hold, a file that changed).
    #[error("{path}: {source}")]
    Nar {
        /// The path being archived.
        path: PathBuf,
        /// The cause.
        source: nar::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write the NAR of `path` (a file, symlink or directory) to `w`.
pub fn dump_path<W: Write>(path: &Path, w: W) -> Result<W, Error> {
    // Fail before writing anything when the root is missing.
    fs::symlink_metadata(path).map_err(io_err(path))?;
    let mut nar = NarWriter::new(w).map_err(|source| Error::Nar {
        path: path.to_owned(),
        source,
    })?;
    node(&mut nar, path, None)?;
    nar.finish().map_err(|source| Error::Nar {
        path: path.to_owned(),
        source,
    })
}

fn node<W: Write>(nar: &mut NarWriter<W>, path: &Path, name: Option<&[u8]>) -> Result<(), Error> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    let nar_err = |source| Error::Nar {
        path: path.to_owned(),
        source,
    };
    let ft = meta.file_type();
    if ft.is_file() {
        // Open without following a symlink, and take type, mode and size from
        // the open file itself: what was checked is what is read.
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let mut file = File::from(fd);
        let meta = file.metadata().map_err(io_err(path))?;
        if !meta.is_file() {
            return Err(Error::Io {
                path: path.to_owned(),
                source: io::Error::other("changed while being archived"),
            });
        }
        let executable = meta.permissions().mode() & 0o100 != 0;
        nar.regular(name, executable, meta.len(), &mut file)
            .map_err(nar_err)
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(io_err(path))?;
        nar.symlink(name, target.as_os_str().as_bytes())
            .map_err(nar_err)
    } else if ft.is_dir() {
        let mut names = fs::read_dir(path)
            .map_err(io_err(path))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err(path))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        nar.start_directory(name).map_err(nar_err)?;
        for child in &names {
            node(nar, &path.join(child), Some(child.as_bytes()))?;
        }
        nar.end_directory().map_err(nar_err)
    } else {
        Err(Error::Unsupported(path.to_owned()))
    }
}
