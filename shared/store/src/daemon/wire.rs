//! Worker-protocol framing over an async byte stream.
//!
//! Integers are u64 little-endian; strings are `u64 len ‖ bytes ‖ zero
//! padding to a multiple of 8`; lists are `u64 count ‖ items`. Every read
//! takes an explicit limit: the daemon is a peer, not a trusted party.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Error;

/// The longest store path, deriver or other path-like string accepted.
pub(crate) const MAX_PATH: usize = 4096;
/// The longest log line or error message accepted.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;
/// The most strings in one list.
pub(crate) const MAX_LIST: u64 = 1 << 20;

pub(crate) async fn read_u64(r: &mut (impl AsyncRead + Unpin)) -> Result<u64, Error> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf).await.map_err(Error::io)?;
    Ok(u64::from_le_bytes(buf))
}

/// A C++ `readInt`-style 32-bit value in a u64 field.
pub(crate) async fn read_u32(
    r: &mut (impl AsyncRead + Unpin),
    field: &'static str,
) -> Result<u32, Error> {
    let v = read_u64(r).await?;
    u32::try_from(v).map_err(|_| Error::Protocol(format!("{field} is {v}, out of range")))
}

pub(crate) async fn read_bool(
    r: &mut (impl AsyncRead + Unpin),
    field: &'static str,
) -> Result<bool, Error> {
    match read_u64(r).await? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Error::Protocol(format!("{field} is {v}, expected 0 or 1"))),
    }
}

pub(crate) async fn read_bytes(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
    field: &'static str,
) -> Result<Vec<u8>, Error> {
    let len = read_u64(r).await?;
    if len > max as u64 {
        return Err(Error::Protocol(format!(
            "{field} is {len} bytes, more than the limit of {max}"
        )));
    }
    let len = len as usize;
    let padded = len + offload_core::wire::padding(len as u64);
    let mut buf = vec![0u8; padded];
    r.read_exact(&mut buf).await.map_err(Error::io)?;
    if buf[len..].iter().any(|&b| b != 0) {
        return Err(Error::Protocol(format!("non-zero padding after {field}")));
    }
    buf.truncate(len);
    Ok(buf)
}

pub(crate) async fn read_string(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
    field: &'static str,
) -> Result<String, Error> {
    let bytes = read_bytes(r, max, field).await?;
    String::from_utf8(bytes).map_err(|_| Error::Protocol(format!("{field} is not UTF-8")))
}

pub(crate) async fn read_strings(
    r: &mut (impl AsyncRead + Unpin),
    max_each: usize,
    field: &'static str,
) -> Result<Vec<String>, Error> {
    let count = read_u64(r).await?;
    if count > MAX_LIST {
        return Err(Error::Protocol(format!(
            "{field} has {count} entries, more than the limit of {MAX_LIST}"
        )));
    }
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        out.push(read_string(r, max_each, field).await?);
    }
    Ok(out)
}

/// An output buffer for one request, sent with a single write.
#[derive(Default)]
pub(crate) struct Request(pub(crate) Vec<u8>);

impl Request {
    pub(crate) fn new(op: u64) -> Self {
        let mut r = Self::default();
        r.u64(op);
        r
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u64(u64::from(v))
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        let pad = offload_core::wire::padding(b.len() as u64);
        self.0.extend_from_slice(&[0u8; 8][..pad]);
        self
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub(crate) fn strings<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        self.u64(items.len() as u64);
        for s in items {
            self.str(s.as_ref());
        }
        self
    }

    pub(crate) async fn send(&self, w: &mut (impl AsyncWrite + Unpin)) -> Result<(), Error> {
        w.write_all(&self.0).await.map_err(Error::io)?;
        w.flush().await.map_err(Error::io)
    }
}
