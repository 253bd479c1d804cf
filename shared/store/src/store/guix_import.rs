//! Importing an export stream into a Guix daemon one item at a time: the
//! stream is spooled and split (so that nothing reaches the daemon before
//! it is known to be well formed), each item goes in an `import-paths`
//! request of its own under a time limit, and a refusal names the item and
//! the items registered before it (the daemon keeps those).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use offload_core::export::{ExportReader, Limits};
use offload_core::store_path::StorePath;

use super::{Error, io_err};
use crate::daemon::{Connection, DaemonClient};
use crate::local::Imported;
use crate::sync_io::BlockingReader;

/// Reads through, copying every byte consumed to a spool and counting.
struct Tee<R> {
    inner: R,
    spool: std::fs::File,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.spool, &buf[..n])?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How long the daemon may take over one item: a minute, plus a second
/// per 4 MiB. A daemon waiting for a lock (an import inside a build hook,
/// whose daemon holds the outputs' locks) would otherwise wait for ever.
pub(super) fn time_limit(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (4 << 20))
}

/// Spool `r` and find its items: each item's path and byte range (after
/// its marker).
fn split(r: impl Read, spool: std::fs::File) -> Result<Vec<(StorePath, u64, u64)>, Error> {
    let count = Arc::new(AtomicU64::new(0));
    let tee = Tee {
        inner: io::BufReader::with_capacity(1 << 20, r),
        spool,
        count: Arc::clone(&count),
    };
    let mut reader = ExportReader::new(tee, Limits::default());
    let mut items = Vec::new();
    loop {
        let index = items.len() + 1;
        let stream = |source| Error::Import(crate::local::Error::Stream { index, source });
        let start = count.load(Ordering::Relaxed) + 8;
        let Some(mut item) = reader.next_item().map_err(stream)? else {
            break;
        };
        while item
            .nar()
            .next_event()
            .map_err(|e| stream(e.into()))?
            .is_some()
        {}
        let trailer = item.finish().map_err(stream)?;
        items.push((trailer.path, start, count.load(Ordering::Relaxed)));
    }
    let mut byte = [0u8; 1];
    if reader
        .into_inner()
        .inner
        .read(&mut byte)
        .map_err(io_err("reading the stream"))?
        != 0
    {
        return Err(Error::Import(crate::local::Error::Trailing));
    }
    Ok(items)
}

/// Import `r` into the Guix daemon behind `client`, item by item.
pub(super) async fn import_guix(
    client: &mut DaemonClient<Connection>,
    r: impl Read,
    progress: &mut dyn FnMut(&Imported),
) -> Result<Vec<StorePath>, Error> {
    let spool = tempfile::tempfile().map_err(io_err("creating a spool file"))?;
    let mut file = spool
        .try_clone()
        .map_err(io_err("opening the spool file"))?;
    let items = split(r, spool)?;
    let mut kept: Vec<StorePath> = Vec::new();
    for (path, start, end) in items {
        let refused = |kept: &[StorePath], source: Error| Error::Refused {
            path: path.to_string(),
            kept: kept.iter().map(ToString::to_string).collect(),
            source: Box::new(source),
        };
        file.seek(SeekFrom::Start(start))
            .map_err(io_err("reading the spool file"))?;
        let body = (&file).take(end - start);
        let one = io::Cursor::new(1u64.to_le_bytes())
            .chain(body)
            .chain(io::Cursor::new(0u64.to_le_bytes()));
        let mut source = BlockingReader(one);
        let limit = time_limit(end - start);
        let imported = match tokio::time::timeout(limit, client.import_paths(&mut source)).await {
            Err(_) => {
                return Err(refused(
                    &kept,
                    Error::Other(format!(
                        "the daemon did not finish importing it within {} s (is it waiting for a lock it holds itself, as inside a build hook?)",
                        limit.as_secs()
                    )),
                ));
            }
            Ok(Err(e)) => return Err(refused(&kept, e.into())),
            Ok(Ok(imported)) => imported,
        };
        if imported != [path.to_string()] {
            return Err(refused(
                &kept,
                Error::Other(format!("the daemon reported importing {imported:?}")),
            ));
        }
        progress(&Imported {
            path: path.clone(),
            added: true,
            signer: None,
        });
        kept.push(path);
    }
    Ok(kept)
}
