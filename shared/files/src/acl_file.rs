//! The ACL file (`/etc/guix/acl`): reading, and authorizing a key by an
//! atomic rewrite, as `guix archive --authorize` does (spec §12).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use offload_core::acl::{self, Acl};
use offload_core::keys::PublicKey;

use crate::atomic;
use crate::key_file::{self, read_limited};

/// Largest ACL file read.
pub const MAX_ACL_FILE: u64 = 16 << 20;

/// Why the ACL could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not exist.
    #[error(
        "ACL file {0} does not exist; authorize a key with `offload-master key authorize --acl {0} < KEY.pub`"
    )]
    Missing(PathBuf),
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The contents are not a valid ACL.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: acl::Error,
    },
}

/// Read the ACL at `path`.
pub fn load(path: &Path) -> Result<Acl, Error> {
    let text = match read_limited(path, MAX_ACL_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Missing(path.to_owned()));
        }
        Err(source) => {
            return Err(Error::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    Acl::parse(&text).map_err(|source| Error::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Prepend `key` to the ACL at `path`, atomically, mode 0644. A symlink is
/// replaced by a regular file, with a warning. Returns false when the key
/// was already authorized.
///
/// A missing ACL starts, as with Guix's `ensure-acl`, from the machine's own
/// key when `signing-key.pub` exists next to it: authorizing another key
/// must not lock the machine out of its own archives.
pub fn authorize(path: &Path, key: &PublicKey) -> Result<bool, Error> {
    let mut created = false;
    let mut acl = match load(path) {
        Ok(acl) => acl,
        Err(Error::Missing(_)) => {
            created = true;
            let mut acl = Acl::default();
            let own = path.with_file_name("signing-key.pub");
            if own.exists() {
                let own_key = key_file::load_public(&own).map_err(|e| Error::Io {
                    path: own.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
                acl.authorize(&own_key);
            }
            acl
        }
        Err(e) => return Err(e),
    };
    // A new ACL seeded with this machine's own key is written even when
    // that is the key being authorized.
    if !acl.authorize(key) && !created {
        return Ok(false);
    }
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        tracing::warn!(
            "replacing symbolic link {} with a regular file",
            path.display()
        );
    }
    atomic::write_file(path, &acl.to_advanced(), 0o644).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}
