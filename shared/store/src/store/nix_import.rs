//! Importing into a Nix daemon: each item of the export stream is checked
//! here (the Nix daemon trusts root and checks no signatures), then its NAR
//! — exactly the verified bytes, spooled to a private temporary file — goes
//! to the daemon with add-to-store-nar.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use offload_core::export::{self, ExportReader, Limits};
use offload_core::store_path::StorePath;

use super::{Error, io_err};
use crate::daemon::{self, Connection, DaemonClient};
use crate::info::PathInfo;
use crate::local::{self, Imported, Signatures};
use crate::sync_io::BlockingReader;

/// Nix: verify each item here, then hand its NAR to the daemon with
/// add-to-store-nar (the Nix daemon trusts root and checks no signatures).
pub(super) async fn import_nix(
    client: &mut DaemonClient<Connection>,
    r: impl Read + Send + Unpin,
    signatures: Signatures<'_>,
    progress: &mut dyn FnMut(&Imported),
) -> Result<Vec<StorePath>, Error> {
    let spool = Arc::new(Mutex::new(None::<std::fs::File>));
    // The export reader reads exactly what each item holds, so the tee
    // above the buffer copies precisely the current item's bytes.
    let tee = Tee {
        inner: io::BufReader::with_capacity(1 << 16, r),
        spool: Arc::clone(&spool),
    };
    let mut reader = ExportReader::new(tee, Limits::default());
    let mut done = Vec::new();
    loop {
        let index = done.len() + 1;
        let stream = |source| local::Error::Stream { index, source };
        let Some(mut item) = reader.next_item().map_err(stream)? else {
            break;
        };
        // From here the tee spools the item: its NAR, then its trailer.
        let file = tempfile_spool()?;
        *spool
            .lock()
            .map_err(|_| Error::Other("spool lock".into()))? = Some(file);
        while item
            .nar()
            .next_event()
            .map_err(|e| stream(e.into()))?
            .is_some()
        {}
        let trailer = item.finish().map_err(stream)?;
        let check = match signatures {
            Signatures::Ignore => None,
            Signatures::Check(acl) => Some(export::check_item(&trailer, acl)),
        };
        if let Some(c) = &check
            && !c.is_valid()
        {
            return Err(local::Error::Refused {
                path: trailer.path.to_string(),
                why: c
                    .verdict
                    .map_or("imported file lacks a signature", |v| v.explain())
                    .into(),
            }
            .into());
        }
        let mut file = spool
            .lock()
            .map_err(|_| Error::Other("spool lock".into()))?
            .take()
            .ok_or_else(|| Error::Other("spool missing".into()))?;
        let nar = nar_from_spool(&mut file, trailer.nar_size)?;
        let info = PathInfo {
            path: trailer.path.clone(),
            deriver: trailer.deriver.clone(),
            nar_hash: trailer.nar_hash,
            references: trailer.references.clone(),
            registration_time: 0,
            nar_size: trailer.nar_size,
        };
        let mut source = BlockingReader(nar);
        client
            .add_to_store_nar(&info, &mut source)
            .await
            .map_err(|e| match e {
                daemon::Error::Daemon { message, status } if message.contains("lacks a valid signature") => {
                    daemon::Error::Daemon {
                        message: format!(
                            "{message} (the Nix daemon trusts only its trusted-users with unsigned items: run as root or add this user to trusted-users)"
                        ),
                        status,
                    }
                }
                e => e,
            })?;
        let imported = Imported {
            path: trailer.path,
            added: true,
            signer: check.and_then(|c| c.signer.map(|k| k.fingerprint())),
        };
        progress(&imported);
        done.push(imported.path);
    }
    Ok(done)
}

fn tempfile_spool() -> Result<std::fs::File, Error> {
    // Unlinked at once: nothing is left whatever happens to this process.
    tempfile::tempfile().map_err(io_err("creating a spool file for the NAR"))
}

/// The first `size` bytes of the spool: the item's NAR.
fn nar_from_spool(file: &mut std::fs::File, size: u64) -> Result<io::Take<std::fs::File>, Error> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))
        .map_err(io_err("reading the spooled NAR"))?;
    let f = file
        .try_clone()
        .map_err(io_err("reading the spooled NAR"))?;
    Ok(f.take(size))
}

/// Copies what is read into the current spool file, if any.
struct Tee<R> {
    inner: R,
    spool: Arc<Mutex<Option<std::fs::File>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut guard) = self.spool.lock()
            && let Some(f) = guard.as_mut()
        {
            f.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}
