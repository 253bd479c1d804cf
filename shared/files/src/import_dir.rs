//! Importing a signed export stream into a directory of store items.
//!
//! Each item is restored under a temporary name while its bytes are hashed,
//! then its signature is checked against the ACL and the recomputed H; only
//! a valid item is renamed to `DIR/<basename>`. An item that fails leaves
//! nothing behind; a stream that breaks off mid-item leaves nothing of
//! that item. References must be present in the directory or come earlier
//! in the stream, as the daemon requires.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use offload_core::acl::Acl;
use offload_core::export::{self, ExportReader, ItemCheck, Limits};
use offload_core::store_path::{StoreDir, StorePath};

use crate::atomic;
use crate::restore;

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is malformed (nothing of the current item was kept).
    #[error(transparent)]
    Stream(#[from] export::Error),
    /// Writing into the directory failed.
    #[error(transparent)]
    Restore(#[from] restore::Error),
}

/// What happened to one item.
#[derive(Debug)]
pub struct Outcome {
    /// The item's store path.
    pub path: StorePath,
    /// Its signature check.
    pub check: ItemCheck,
    /// `Ok(true)` if imported now, `Ok(false)` if it was already present,
    /// `Err(reason)` if rejected.
    pub result: Result<bool, String>,
}

/// Import every item of the stream `r` into `dir`. With `store_dir`, items
/// must belong to that logical store directory. Returns one outcome per
/// item; a malformed stream stops the import with an error (items before
/// it stay imported: each was verified on its own).
pub fn import_stream(
    r: impl Read,
    dir: &Path,
    store_dir: Option<&StoreDir>,
    acl: &Acl,
    limits: Limits,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    let mut reader = ExportReader::new(r, limits);
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(mut item) = reader.next_item()? {
        let pending = atomic::temp_sibling(&dir.join("item"), "import").map_err(|source| restore::Error::Io { path: dir.to_owned(), source })?;
        let restored = restore::restore(item.nar(), &pending);
        let trailer = restored.map_err(Error::from).and_then(|()| item.finish().map_err(Error::from));
        let trailer = match trailer {
            Ok(trailer) => trailer,
            Err(e) => {
                let _ = atomic::remove_tree(&pending);
                return Err(e);
            }
        };
        let check = export::check_item(&trailer, acl);
        let dest = dir.join(trailer.path.base());
        let result = decide(&trailer, &check, store_dir, dir, &seen).and_then(|()| place(&pending, &dest));
        if result.is_err() || result == Ok(false) {
            let _ = atomic::remove_tree(&pending);
        }
        if result.is_ok() {
            seen.insert(trailer.path.base().to_owned());
        }
        outcomes.push(Outcome { path: trailer.path, check, result });
    }
    Ok(())
}

fn decide(
    trailer: &export::Trailer,
    check: &ItemCheck,
    store_dir: Option<&StoreDir>,
    dir: &Path,
    seen: &HashSet<String>,
) -> Result<(), String> {
    if !check.is_valid() {
        return Err(match check.verdict {
            None => format!("imported archive of `{}' lacks a signature", trailer.path),
            Some(v) => v.explain().to_owned(),
        });
    }
    if let Some(expected) = store_dir {
        if trailer.path.dir() != expected {
            return Err(format!("not in the store directory {expected}"));
        }
    }
    for reference in &trailer.references {
        let base = reference.base();
        if reference != &trailer.path && !seen.contains(base) && fs::symlink_metadata(dir.join(base)).is_err() {
            return Err(format!("reference {reference} is neither in {} nor earlier in the stream; import its closure first", dir.display()));
        }
    }
    Ok(())
}

/// Move a verified item into place; an existing item is left as it is.
fn place(pending: &PathBuf, dest: &Path) -> Result<bool, String> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(false);
    }
    fs::rename(pending, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    atomic::sync_parent(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(true)
}
