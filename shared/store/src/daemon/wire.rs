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
/// The most bytes of strings in one list (a closure of a million paths
/// is ~100 MiB; a million strings of 4 KiB would be 4 GiB).
pub(crate) const MAX_LIST_BYTES: usize = 128 << 20;

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
    let mut total = 0usize;
    for _ in 0..count {
        let s = read_string(r, max_each.min(MAX_LIST_BYTES - total), field).await?;
        total += s.len();
        if total >= MAX_LIST_BYTES {
            return Err(Error::Protocol(format!(
                "{field}: more than {} MiB of strings in one list",
                MAX_LIST_BYTES >> 20
            )));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_of_strings_is_bounded_in_total_too() {
        // A million strings of 4 KiB each claimed: refused once the total
        // passes the limit, long before 4 GiB were read.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(1u64 << 20).to_le_bytes());
        let one = vec![b'a'; 4096];
        for _ in 0..(MAX_LIST_BYTES / 4096 + 2) {
            bytes.extend_from_slice(&4096u64.to_le_bytes());
            bytes.extend_from_slice(&one);
        }
        let err = read_strings(&mut &bytes[..], MAX_PATH, "paths")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("MiB of strings"), "{err}");
        // Within the limits, read as before.
        let mut small = Vec::new();
        small.extend_from_slice(&1u64.to_le_bytes());
        small.extend_from_slice(&3u64.to_le_bytes());
        small.extend_from_slice(b"abc\0\0\0\0\0");
        assert_eq!(
            read_strings(&mut &small[..], MAX_PATH, "x").await.unwrap(),
            ["abc"]
        );
    }
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
