//! Re-signing an exported item on its way through: a daemon exports an
//! item as `NAR ‖ magic ‖ path ‖ references ‖ deriver ‖ signature slot`;
//! this writer passes it on, hashes everything before the slot (H,
//! `formats-and-signatures.md` §3) and, at the end, replaces the slot with
//! a signature by our key.

use std::io::{self, Write};

use offload_core::keys::SecretKey;
use offload_core::signature::Signature;
use sha2::{Digest, Sha256};

/// Passes an item through, holding back its tail until [`finish`](Self::finish).
pub(crate) struct Resigner<'a, W: Write> {
    out: &'a mut W,
    hasher: Sha256,
    /// Bytes not yet known to precede the signature slot.
    tail: Vec<u8>,
}

/// How much is held back before passing bytes on (more than the slot).
const MAX_TAIL: usize = 64 * 1024;

impl<'a, W: Write> Resigner<'a, W> {
    /// Start an item on `out` (writes the item marker `1`).
    pub(crate) fn new(out: &'a mut W) -> io::Result<Self> {
        out.write_all(&1u64.to_le_bytes())?;
        Ok(Self {
            out,
            hasher: Sha256::new(),
            tail: Vec::new(),
        })
    }

    /// End the item: the held-back tail must end with the unsigned slot
    /// (`u64 0`, as both daemons write it when not asked to sign); it is
    /// replaced by a signature of H with `key`.
    pub(crate) fn finish(mut self, key: &SecretKey) -> io::Result<()> {
        let t = &self.tail;
        if t.len() < 8 || t[t.len() - 8..] != [0u8; 8] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the exported item does not end with an empty signature slot",
            ));
        }
        let body = &t[..t.len() - 8];
        self.hasher.update(body);
        self.out.write_all(body)?;
        let hash: [u8; 32] = self.hasher.finalize().into();
        let sig = Signature::create(key, &hash)
            .map_err(|e| io::Error::other(format!("signing: {e}")))?
            .to_advanced();
        self.out.write_all(&1u64.to_le_bytes())?;
        self.out.write_all(&(sig.len() as u64).to_le_bytes())?;
        self.out.write_all(&sig)?;
        let pad = offload_core::wire::padding(sig.len() as u64);
        self.out.write_all(&[0u8; 8][..pad])
    }
}

impl<W: Write> Write for Resigner<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 2 * MAX_TAIL {
            let passed = self.tail.len() - MAX_TAIL;
            self.hasher.update(&self.tail[..passed]);
            self.out.write_all(&self.tail[..passed])?;
            self.tail.drain(..passed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
