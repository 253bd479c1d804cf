//! Exporting items of a directory of store items as a signed export stream.
//!
//! Each PATH is an entry `<hash>-<name>` of a directory; in the stream it
//! is `STORE_DIR/<hash>-<name>`. References are found by scanning each
//! item's NAR for the hash parts of the entries in the same directory (what
//! the daemon does after a build, against the build's inputs). Items are
//! written dependencies first.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use offload_core::export::{self, ItemWriter};
use offload_core::keys::SecretKey;
use offload_core::refscan::RefScanner;
use offload_core::signature::Signature;
use offload_core::store_path::{self, StoreDir, StorePath};

use crate::dump;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PATH is not named like a store item.
    #[error("{path}: not a store item ({source})")]
    NotAnItem {
        /// The path given.
        path: PathBuf,
        /// What is wrong with its name.
        source: store_path::Error,
    },
    /// Reading a tree failed.
    #[error(transparent)]
    Dump(#[from] dump::Error),
    /// Writing the stream failed.
    #[error("writing the export stream: {0}")]
    Write(#[from] io::Error),
    /// Listing the items' directory failed.
    #[error("{path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Items refer to each other in a cycle.
    #[error(
        "reference cycle: {0} and {1} refer to each other (directly or through other items); store items cannot"
    )]
    Cycle(String, String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] offload_core::keys::Error),
}

struct Item {
    fs_path: PathBuf,
    store_path: StorePath,
    /// Candidate references: hash part → store path, for the item's directory.
    candidates: HashMap<String, StorePath>,
}

/// Write a signed export stream of `paths` to `w`; returns the store paths
/// in stream order.
pub fn export_paths(
    paths: &[PathBuf],
    store_dir: &StoreDir,
    key: &SecretKey,
    mut w: impl Write,
) -> Result<Vec<StorePath>, Error> {
    let mut listings: HashMap<PathBuf, HashMap<String, StorePath>> = HashMap::new();
    let mut items = Vec::new();
    for path in paths {
        let base = path
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let store_path =
            StorePath::from_base(store_dir.clone(), &base).map_err(|source| Error::NotAnItem {
                path: path.clone(),
                source,
            })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !listings.contains_key(&parent) {
            listings.insert(parent.clone(), list_items(&parent, store_dir)?);
        }
        let candidates = listings.get(&parent).cloned().unwrap_or_default();
        items.push(Item {
            fs_path: path.clone(),
            store_path,
            candidates,
        });
    }
    let order = if items.len() > 1 {
        topological_order(&items)?
    } else {
        (0..items.len()).collect()
    };
    let mut written = Vec::new();
    for i in order {
        let item = &items[i];
        let mut writer = ItemWriter::begin(&mut w)?;
        let mut scanner = RefScanner::new(item.candidates.keys().map(String::as_str));
        dump::dump_path(&item.fs_path, Tee(writer.nar_sink(), &mut scanner))?;
        let refs: Vec<StorePath> = scanner
            .found()
            .filter_map(|h| item.candidates.get(h).cloned())
            .collect();
        let mut sign_error = None;
        writer.finish(&item.store_path, &refs, None, |h| {
            match Signature::create(key, h) {
                Ok(sig) => Some(sig.to_advanced()),
                Err(e) => {
                    sign_error = Some(e);
                    None
                }
            }
        })?;
        if let Some(e) = sign_error {
            return Err(e.into());
        }
        written.push(item.store_path.clone());
    }
    export::write_end(&mut w)?;
    w.flush()?;
    Ok(written)
}

fn list_items(dir: &Path, store_dir: &StoreDir) -> Result<HashMap<String, StorePath>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::List {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = HashMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::List {
            path: dir.to_owned(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && let Ok(p) = StorePath::from_base(store_dir.clone(), name)
        {
            out.insert(p.hash_part().to_owned(), p);
        }
    }
    Ok(out)
}

/// Order items so that each comes after the items it references.
fn topological_order(items: &[Item]) -> Result<Vec<usize>, Error> {
    let index: BTreeMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.store_path.hash_part(), i))
        .collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(items.len());
    for item in items {
        let mut scanner = RefScanner::new(index.keys().copied());
        dump::dump_path(&item.fs_path, &mut scanner)?;
        let own = item.store_path.hash_part();
        deps.push(
            scanner
                .found()
                .filter(|h| *h != own)
                .filter_map(|h| index.get(h).copied())
                .collect(),
        );
    }
    // Depth-first post-order; 1 = in progress, 2 = done.
    let mut state = vec![0u8; items.len()];
    let mut order = Vec::with_capacity(items.len());
    fn visit(
        i: usize,
        from: usize,
        deps: &[Vec<usize>],
        state: &mut [u8],
        order: &mut Vec<usize>,
        items: &[Item],
    ) -> Result<(), Error> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(Error::Cycle(
                    items[from].store_path.to_string(),
                    items[i].store_path.to_string(),
                ));
            }
            _ => {}
        }
        state[i] = 1;
        for &d in &deps[i] {
            visit(d, i, deps, state, order, items)?;
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..items.len() {
        visit(i, i, &deps, &mut state, &mut order, items)?;
    }
    // Duplicated PATH arguments are written once.
    let mut seen = std::collections::HashSet::new();
    order.retain(|i| seen.insert(items[*i].store_path.clone()));
    Ok(order)
}

/// Writes to two writers: the stream and the reference scanner.
struct Tee<A, B>(A, B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
