//! Importing a signed export stream into a directory of store items.
//!
//! Each item is restored under a temporary name while its bytes are hashed,
//! then its signature is checked against the ACL and the recomputed H. An
//! item that fails verification is deleted at once and reported; the others
//! stay staged. Only when the whole stream has been read — end marker and
//! nothing after it — are the staged items renamed to `DIR/<basename>`, in
//! stream order. A malformed or truncated stream therefore restores
//! nothing at all. References must be present in the directory or come
//! earlier in the stream, as the daemon requires.

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
    /// Bytes follow the end marker.
    #[error("trailing data after the end of the export stream")]
    Trailing,
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
/// must belong to that logical store directory. Fills `outcomes` with one
/// entry per item read; on a malformed stream returns the error and
/// imports nothing (outcomes then describe the verification only).
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
    let mut staged: Vec<(PathBuf, usize)> = Vec::new();
    let result = stage_all(
        &mut reader,
        dir,
        store_dir,
        acl,
        &mut seen,
        &mut staged,
        outcomes,
    );
    let result = result.and_then(|()| {
        let mut byte = [0u8; 1];
        match reader.into_inner().read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::Trailing),
            Err(e) => Err(Error::Stream(e.into())),
        }
    });
    if let Err(e) = result {
        for (pending, i) in staged {
            let _ = atomic::remove_tree(&pending);
            outcomes[i].result = Err("not imported: the stream is malformed".into());
        }
        return Err(e);
    }
    for (pending, i) in staged {
        let dest = dir.join(outcomes[i].path.base());
        let placed = place(&pending, &dest);
        if !matches!(placed, Ok(true)) {
            let _ = atomic::remove_tree(&pending);
        }
        outcomes[i].result = placed;
    }
    Ok(())
}

fn stage_all<R: Read>(
    reader: &mut ExportReader<R>,
    dir: &Path,
    store_dir: Option<&StoreDir>,
    acl: &Acl,
    seen: &mut HashSet<String>,
    staged: &mut Vec<(PathBuf, usize)>,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    while let Some(mut item) = reader.next_item()? {
        let pending = atomic::temp_sibling(&dir.join("item"), "import").map_err(|source| {
            restore::Error::Io {
                path: dir.to_owned(),
                source,
            }
        })?;
        let restored = restore::restore(item.nar(), &pending);
        let trailer = restored
            .map_err(Error::from)
            .and_then(|()| item.finish().map_err(Error::from));
        let trailer = match trailer {
            Ok(trailer) => trailer,
            Err(e) => {
                let _ = atomic::remove_tree(&pending);
                return Err(e);
            }
        };
        let check = export::check_item(&trailer, acl);
        let result = decide(&trailer, &check, store_dir, dir, seen);
        match result {
            Ok(()) => {
                seen.insert(trailer.path.base().to_owned());
                staged.push((pending, outcomes.len()));
            }
            Err(_) => {
                let _ = atomic::remove_tree(&pending);
            }
        }
        outcomes.push(Outcome {
            path: trailer.path,
            check,
            result: result.map(|()| false),
        });
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
    if let Some(expected) = store_dir
        && trailer.path.dir() != expected
    {
        return Err(format!("not in the store directory {expected}"));
    }
    for reference in &trailer.references {
        let base = reference.base();
        if reference != &trailer.path
            && !seen.contains(base)
            && fs::symlink_metadata(dir.join(base)).is_err()
        {
            return Err(format!(
                "reference {reference} is neither in {} nor earlier in the stream; import its closure first",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Move a verified item into place; an existing item is left as it is.
fn place(pending: &Path, dest: &Path) -> Result<bool, String> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(false);
    }
    fs::rename(pending, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    atomic::sync_parent(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(true)
}
