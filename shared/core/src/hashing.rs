//! SHA-256 adapters that hash what passes through a reader or writer.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The hash so far and the number of bytes hashed; hashing goes on.
    pub fn snapshot(&self) -> ([u8; 32], u64) {
        (self.hasher.clone().finalize().into(), self.count)
    }

    /// The hash so far and the number of bytes hashed; resets the hasher.
    pub fn take_hash(&mut self) -> ([u8; 32], u64) {
        let hash = std::mem::take(&mut self.hasher).finalize().into();
        (hash, std::mem::take(&mut self.count))
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what is read while hashing is switched on.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    active: bool,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`; hashing starts switched off.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            active: false,
            count: 0,
        }
    }

    /// Start hashing from a fresh state.
    pub fn start(&mut self) {
        self.hasher = Sha256::new();
        self.active = true;
        self.count = 0;
    }

    /// The hash and length of what was read since [`start`](Self::start),
    /// without stopping.
    pub fn snapshot(&self) -> ([u8; 32], u64) {
        (self.hasher.clone().finalize().into(), self.count)
    }

    /// Stop hashing and return the hash of what was read since [`start`](Self::start).
    pub fn finish(&mut self) -> [u8; 32] {
        self.active = false;
        std::mem::take(&mut self.hasher).finalize().into()
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.active {
            self.hasher.update(&buf[..n]);
            self.count += n as u64;
        }
        Ok(n)
    }
}
