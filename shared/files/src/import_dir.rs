//! Importing a signed export stream into a directory of store items.
//!
//! Each item is restored under a temporary name while its bytes are hashed,
//! then its signature is checked against the ACL and the recomputed H. An
//! item that fails verification is deleted at once and reported; the others
//! stay staged. Only when the whole stream has been read — end marker and
//! nothing after it — are the staged items renamed to `DIR/<basename>`, in
//! stream order, never replacing an existing entry. A malformed or
//! truncated stream therefore restores nothing at all. The item, its
//! references and its deriver must be in the expected store directory, and
//! references must be present in the directory or come earlier in the
//! stream, as the daemon requires.
//!
//! Memory: per item, only its path, verdict and signer fingerprint are
//! kept, for at most [`MAX_ITEMS`] items.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use offload_core::acl::Acl;
use offload_core::export::{self, ExportReader, Limits, Trailer};
use offload_core::signature::Verdict;
use offload_core::store_path::{StoreDir, StorePath};

use crate::atomic;
use crate::restore;

/// Most items in one stream (a large closure has tens of thousands).
pub const MAX_ITEMS: usize = 1 << 20;

/// Why an import stopped; nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is malformed inside item `index` (counting from 1).
    #[error("item {index} of the stream{}: {source}", after.as_ref().map(|p| format!(" (after {p})")).unwrap_or_default())]
    Stream {
        /// Which item.
        index: usize,
        /// The last item read completely, if any.
        after: Option<String>,
        /// The cause.
        source: export::Error,
    },
    /// Writing item `index` into the directory failed.
    #[error("writing item {index} into {dir}: {source}")]
    Write {
        /// Which item.
        index: usize,
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Bytes follow the end marker.
    #[error("trailing data after the end of the export stream")]
    Trailing,
    /// More than [`MAX_ITEMS`] items.
    #[error("more than {MAX_ITEMS} items in one stream")]
    TooManyItems,
}

/// What happened to one item.
#[derive(Debug)]
pub struct Outcome {
    /// The item's store path.
    pub path: StorePath,
    /// Its signature verdict; `None` when it carries no signature.
    pub verdict: Option<Verdict>,
    /// The fingerprint of the key that signed it, when the signature names one.
    pub signer: Option<String>,
    /// `Ok(true)` if imported now, `Ok(false)` if it was already present,
    /// `Err(reason)` if rejected.
    pub result: Result<bool, String>,
}

/// Import every item of the stream `r` into `dir`; items must belong to the
/// logical store directory `store_dir`. Fills `outcomes` with one entry per
/// item read; on a malformed stream returns the error and imports nothing
/// (outcomes then describe the verification only).
pub fn import_stream(
    r: impl Read,
    dir: &Path,
    store_dir: &StoreDir,
    acl: &Acl,
    limits: Limits,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    let mut reader = ExportReader::new(r, limits);
    let mut staged: Vec<(PathBuf, usize)> = Vec::new();
    let result =
        stage_all(&mut reader, dir, store_dir, acl, &mut staged, outcomes).and_then(|()| {
            let mut byte = [0u8; 1];
            match reader.into_inner().read(&mut byte) {
                Ok(0) => Ok(()),
                Ok(_) => Err(Error::Trailing),
                Err(e) => Err(Error::Stream {
                    index: outcomes.len() + 1,
                    after: None,
                    source: e.into(),
                }),
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
        let placed = match atomic::rename_noreplace(&pending, &dest) {
            Ok(()) => atomic::sync_parent(&dest)
                .map(|()| true)
                .map_err(|e| format!("{}: {e}", dest.display())),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(format!("{}: {e}", dest.display())),
        };
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
    store_dir: &StoreDir,
    acl: &Acl,
    staged: &mut Vec<(PathBuf, usize)>,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    let mut accepted: HashSet<String> = HashSet::new();
    loop {
        let index = outcomes.len() + 1;
        let after = outcomes.last().map(|o| o.path.to_string());
        let stream_err = |source: export::Error| Error::Stream {
            index,
            after: after.clone(),
            source,
        };
        let Some(mut item) = reader.next_item().map_err(stream_err)? else {
            return Ok(());
        };
        if index > MAX_ITEMS {
            return Err(Error::TooManyItems);
        }
        let pending =
            atomic::temp_sibling(&dir.join("item"), "import").map_err(|source| Error::Write {
                index,
                dir: dir.to_owned(),
                source,
            })?;
        let trailer = match restore::restore(item.nar(), &pending) {
            Ok(()) => item.finish().map_err(stream_err),
            Err(restore::Error::Nar(e)) => Err(stream_err(e.into())),
            Err(restore::Error::Io { source, .. }) => Err(Error::Write {
                index,
                dir: dir.to_owned(),
                source,
            }),
            Err(restore::Error::Exists(_)) => Err(Error::Write {
                index,
                dir: dir.to_owned(),
                source: io::ErrorKind::AlreadyExists.into(),
            }),
        };
        let trailer = match trailer {
            Ok(trailer) => trailer,
            Err(e) => {
                let _ = atomic::remove_tree(&pending);
                return Err(e);
            }
        };
        let check = export::check_item(&trailer, acl);
        let result = decide(&trailer, &check, store_dir, dir, &accepted);
        match result {
            Ok(()) => {
                accepted.insert(trailer.path.base().to_owned());
                staged.push((pending, outcomes.len()));
            }
            Err(_) => {
                let _ = atomic::remove_tree(&pending);
            }
        }
        outcomes.push(Outcome {
            path: trailer.path,
            verdict: check.verdict,
            signer: check.signer.map(|k| k.fingerprint()),
            result: result.map(|()| false),
        });
    }
}

fn decide(
    trailer: &Trailer,
    check: &export::ItemCheck,
    store_dir: &StoreDir,
    dir: &Path,
    accepted: &HashSet<String>,
) -> Result<(), String> {
    if !check.is_valid() {
        return Err(match check.verdict {
            None => format!("imported archive of `{}' lacks a signature", trailer.path),
            Some(v) => v.explain().to_owned(),
        });
    }
    let foreign = std::iter::once(&trailer.path)
        .chain(&trailer.references)
        .chain(&trailer.deriver)
        .find(|p| p.dir() != store_dir);
    if let Some(p) = foreign {
        return Err(format!(
            "{p} is not in the store directory {store_dir} (use --store-dir to import another store's items)"
        ));
    }
    for reference in &trailer.references {
        let base = reference.base();
        if reference != &trailer.path
            && !accepted.contains(base)
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
