//! Direct registration in a store on this host, as both upstream hooks do
//! (`guix-offload.md` §6.4–§6.5): the daemon holds the locks of the outputs
//! being built, so its import RPC would deadlock; the items are written to
//! the store directory and registered in its database here.
//!
//! Per item of an export stream:
//! 1. restore its NAR under a temporary name in the store directory
//!    (canonical modes, mtime 1), hashing as it goes;
//! 2. check its signature against the ACL (unless told not to), its store
//!    directory, and that its references are valid or itself;
//! 3. in one immediate transaction: if it is already valid, drop the copy;
//!    otherwise remove whatever invalid leftover is at its path, rename the
//!    copy into place and insert its rows; commit.
//!
//! A crash at any point leaves each item either registered with its full
//! contents, or unregistered (an invalid leftover that the next import
//! replaces). Items are registered one by one, in stream order, which is
//! topological; importing the same stream again changes nothing.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use offload_core::acl::Acl;
use offload_core::derivation::{Derivation, MAX_DRV_LEN};
use offload_core::export::{self, ExportReader, Limits, Trailer};
use offload_core::store_path::{StoreDir, StorePath};
use offload_files::{atomic, restore};

use crate::db::{self, Db, Registration};
use crate::gc_lock::GcLock;
use crate::info::PathInfo;

/// Prefix of the temporary names in the store directory.
const TEMP_PREFIX: &str = ".offload-import-";

/// How signatures are treated.
#[derive(Clone, Copy)]
pub enum Signatures<'a> {
    /// Each item must be signed by a key in this ACL.
    Check(&'a Acl),
    /// Accept unsigned and unauthorised items (`--no-check-sigs`).
    Ignore,
}

/// Why an import stopped. Items before the failing one stay registered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is malformed.
    #[error("item {index} of the stream: {source}")]
    Stream {
        /// Which item, from 1.
        index: usize,
        /// The cause.
        source: export::Error,
    },
    /// The item was refused.
    #[error("{path}: {why}")]
    Refused {
        /// The item.
        path: String,
        /// Why.
        why: String,
    },
    /// The store directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The database refused.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// Bytes follow the end marker.
    #[error("trailing data after the end of the export stream")]
    Trailing,
}

/// An item imported (or found already valid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The item.
    pub path: StorePath,
    /// Whether it was registered now (`false`: it was valid already).
    pub added: bool,
    /// Fingerprint of the signer, when signed by an authorised key.
    pub signer: Option<String>,
}

/// A store on this host: its logical directory, where its files really
/// are, and its database.
pub struct LocalStore {
    store_dir: StoreDir,
    real_dir: PathBuf,
    db: Db,
    /// Where the daemon's `gc.lock` is, when a collector may run beside us.
    state_dir: Option<PathBuf>,
}

impl LocalStore {
    /// A store whose items `STORE_DIR/x` are the files `real_dir/x`,
    /// registered in `db`.
    pub fn new(store_dir: StoreDir, real_dir: PathBuf, db: Db) -> Self {
        let store = Self {
            store_dir,
            real_dir,
            db,
            state_dir: None,
        };
        store.sweep_temporaries();
        store
    }

    /// Hold the garbage-collector lock of the daemon whose state directory
    /// is `state_dir` while importing.
    pub fn with_gc_lock(mut self, state_dir: PathBuf) -> Self {
        self.state_dir = Some(state_dir);
        self
    }

    /// The logical store directory.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// Where the items' files are.
    pub fn real_dir(&self) -> &Path {
        &self.real_dir
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The file of item `path`.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.real_dir.join(path.base())
    }

    /// Import every item of the export stream `r`; `progress` hears of each
    /// item as it is registered.
    pub fn import(
        &self,
        r: impl Read,
        signatures: Signatures<'_>,
        limits: Limits,
        progress: &mut dyn FnMut(&Imported),
    ) -> Result<Vec<Imported>, Error> {
        let _gc = match &self.state_dir {
            Some(dir) => {
                Some(
                    GcLock::shared(dir, self.db.flavour()).map_err(|source| Error::Io {
                        path: dir.join("gc.lock"),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut reader = ExportReader::new(BufReader::with_capacity(1 << 20, r), limits);
        let mut done = Vec::new();
        loop {
            let index = done.len() + 1;
            let stream = |source| Error::Stream { index, source };
            let Some(mut item) = reader.next_item().map_err(stream)? else {
                break;
            };
            let temp = self.temp_name()?;
            let staged = match restore::restore(item.nar(), &temp) {
                Ok(()) => item.finish().map_err(stream),
                Err(restore::Error::Nar(e)) => Err(stream(e.into())),
                Err(e) => Err(Error::Io {
                    path: temp.clone(),
                    source: io::Error::other(e.to_string()),
                }),
            };
            let result = staged.and_then(|trailer| {
                let signer = self.accept(&trailer, signatures)?;
                fault("after-restore");
                let added = self.place(&trailer, &temp)?;
                Ok(Imported {
                    path: trailer.path,
                    added,
                    signer,
                })
            });
            // The copy stays behind unless it was moved into place.
            if !matches!(&result, Ok(i) if i.added) {
                let _ = atomic::remove_tree(&temp);
            }
            let imported = result?;
            progress(&imported);
            done.push(imported);
        }
        let mut byte = [0u8; 1];
        match reader.into_inner().read(&mut byte) {
            Ok(0) => Ok(done),
            Ok(_) => Err(Error::Trailing),
            Err(e) => Err(Error::Stream {
                index: done.len() + 1,
                source: e.into(),
            }),
        }
    }

    /// Register the text item `path` (a `.drv`, a script) holding
    /// `contents` and referring to `references` (valid already), unless it
    /// is valid; whether it was added.
    pub fn add_text(
        &self,
        path: &StorePath,
        contents: &[u8],
        references: &[StorePath],
    ) -> Result<bool, Error> {
        let io = |source: io::Error| Error::Io {
            path: self.real_path(path),
            source,
        };
        let nar = {
            let mut w = offload_core::nar::NarWriter::new(Vec::new())
                .map_err(|e| io(io::Error::other(e.to_string())))?;
            w.regular(None, false, contents.len() as u64, &mut &contents[..])
                .map_err(|e| io(io::Error::other(e.to_string())))?;
            w.finish()
                .map_err(|e| io(io::Error::other(e.to_string())))?
        };
        let (nar_hash, nar_size) = {
            let mut h = offload_core::hashing::HashingWriter::new(io::sink());
            io::Write::write_all(&mut h, &nar).map_err(io)?;
            h.take_hash()
        };
        let temp = self.temp_name()?;
        let mut reader = offload_core::nar::NarReader::new(&nar[..], Default::default());
        restore::restore(&mut reader, &temp).map_err(|e| io(io::Error::other(e.to_string())))?;
        let trailer = Trailer {
            path: path.clone(),
            references: references.to_vec(),
            deriver: None,
            signature: None,
            hash: nar_hash,
            nar_hash,
            nar_size,
        };
        let result = self.place(&trailer, &temp);
        if !matches!(result, Ok(true)) {
            let _ = atomic::remove_tree(&temp);
        }
        result
    }

    /// Check the item's signature and store directory; the signer's
    /// fingerprint when signed by an authorised key.
    fn accept(&self, t: &Trailer, signatures: Signatures<'_>) -> Result<Option<String>, Error> {
        let refused = |why: String| Error::Refused {
            path: t.path.to_string(),
            why,
        };
        if let Some(p) = std::iter::once(&t.path)
            .chain(&t.references)
            .chain(&t.deriver)
            .find(|p| p.dir() != &self.store_dir)
        {
            return Err(refused(format!(
                "{p} is not in the store directory {} (use --store-dir for another store's items)",
                self.store_dir
            )));
        }
        let check = match signatures {
            Signatures::Ignore => return Ok(None),
            Signatures::Check(acl) => export::check_item(t, acl),
        };
        if !check.is_valid() {
            return Err(refused(
                check
                    .explain()
                    .unwrap_or_else(|| "imported file lacks a signature".into()),
            ));
        }
        Ok(check.signer.map(|k| k.fingerprint()))
    }

    /// Move the restored copy into place and register it, in one
    /// transaction; `false` if it was valid already.
    fn place(&self, t: &Trailer, temp: &Path) -> Result<bool, Error> {
        let dest = self.real_path(&t.path);
        let drv_outputs = if t.path.name().ends_with(".drv") {
            drv_outputs(temp, &t.path, &self.store_dir)?
        } else {
            Vec::new()
        };
        let reg = Registration {
            info: PathInfo {
                path: t.path.clone(),
                deriver: t.deriver.clone(),
                nar_hash: t.nar_hash,
                references: t.references.clone(),
                registration_time: now(),
                nar_size: t.nar_size,
            },
            drv_outputs,
        };
        let printed = t.path.to_string();
        // Everything below runs once, holding the database's write lock, so
        // no other registrar can touch this path in between.
        let added = self.db.write(|tx| {
            if tx.path_id(&printed)?.is_some() {
                return Ok(false);
            }
            for r in t.references.iter().filter(|r| **r != t.path) {
                if tx.path_id(&r.to_string())?.is_none() {
                    return Err(db::Error::MissingReference {
                        path: printed.clone(),
                        reference: r.to_string(),
                    });
                }
            }
            let io = |source| db::Error::Io {
                path: dest.clone(),
                source,
            };
            if fs::symlink_metadata(&dest).is_ok() {
                // An invalid leftover (a crashed import, a failed build).
                atomic::remove_tree(&dest).map_err(io)?;
            }
            fault("before-rename");
            fs::rename(temp, &dest).map_err(io)?;
            fault("after-rename");
            if let Err(e) = tx.register(&reg) {
                // Not registered: leave nothing that looks like the item.
                let _ = atomic::remove_tree(&dest);
                return Err(e);
            }
            fault("before-commit");
            Ok(true)
        })?;
        // A failed commit leaves an invalid copy at `dest`: harmless, and
        // replaced by the next import of the item.
        if added {
            fault("after-commit");
        }
        Ok(added)
    }

    fn temp_name(&self) -> Result<PathBuf, Error> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| Error::Io {
            path: self.real_dir.clone(),
            source: io::Error::other(format!("no randomness: {e}")),
        })?;
        Ok(self.real_dir.join(format!(
            "{TEMP_PREFIX}{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        )))
    }

    /// Remove temporaries left by imports whose process is gone.
    fn sweep_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.real_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = atomic::remove_tree(&entry.path());
            }
        }
    }
}

/// The outputs of a restored `.drv`, for `DerivationOutputs`: it must be
/// a regular file of at most [`MAX_DRV_LEN`] bytes naming output paths in
/// `store_dir`.
fn drv_outputs(
    file: &Path,
    path: &StorePath,
    store_dir: &StoreDir,
) -> Result<Vec<(String, String)>, Error> {
    read_derivation(file, path)?
        .outputs
        .into_iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| match StorePath::parse_in(store_dir, &o.path) {
            Ok(_) => Ok((name, o.path)),
            Err(e) => Err(Error::Refused {
                path: path.to_string(),
                why: format!("output {name}: {e}"),
            }),
        })
        .collect()
}

/// The derivation `path`, read from `file`: a regular file of at most
/// [`MAX_DRV_LEN`] bytes that parses.
pub(crate) fn read_derivation(file: &Path, path: &StorePath) -> Result<Derivation, Error> {
    let refused = |why: String| Error::Refused {
        path: path.to_string(),
        why,
    };
    let io = |source| Error::Io {
        path: file.to_owned(),
        source,
    };
    if !fs::symlink_metadata(file).map_err(io)?.is_file() {
        return Err(refused("a derivation must be a regular file".into()));
    }
    let text = offload_files::bounded::read_file_at_most(file, MAX_DRV_LEN as u64).map_err(io)?;
    Derivation::parse(&text).map_err(|e| refused(format!("not a derivation: {e}")))
}

fn now() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

/// Crash-injection points for the tests: `OFFLOAD_TEST_CRASH_AT=POINT`
/// aborts the process the first time it reaches POINT, `POINT@N` the Nth
/// time, as a power cut or `kill -9` would. Compiled in only with the
/// `crash-injection` feature, which the test suite turns on (release
/// binaries built on their own never read the variable).
#[cfg(not(feature = "crash-injection"))]
fn fault(_point: &str) {}

#[cfg(feature = "crash-injection")]
fn fault(point: &str) {
    static HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(wanted) = std::env::var_os("OFFLOAD_TEST_CRASH_AT") else {
        return;
    };
    let wanted = wanted.to_string_lossy();
    let (name, nth) = match wanted.split_once('@') {
        Some((n, k)) => (n, k.parse().unwrap_or(1)),
        None => (&*wanted, 1),
    };
    if name == point && HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth {
        std::process::abort();
    }
}
