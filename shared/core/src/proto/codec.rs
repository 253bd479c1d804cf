//! The one place that knows how messages become bytes: a `u32le` length,
//! then the message in bincode 2 (standard configuration). bincode is
//! unmaintained (RUSTSEC-2025-0141) and pinned at 2.0.1; replacing it
//! means changing this module only.
//!
//! Every decode runs with bincode's limit set to the frame's length, so a
//! claimed length (a `Vec` of 2⁴⁰ bytes) fails before anything is
//! allocated, and must consume the whole body: trailing bytes are an error.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::MAX_FRAME;
use super::messages::LimitError;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The length prefix is zero or over [`MAX_FRAME`].
    #[error("frame of {0} bytes (1 to {MAX_FRAME} allowed)")]
    Length(usize),
    /// The body is not a message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body has bytes after the message.
    #[error("malformed frame: {0} bytes after the message")]
    Trailing(usize),
    /// The message breaks a limit.
    #[error("message over a limit: {0}")]
    Limit(#[from] LimitError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The frame carrying `msg`: its length, then its body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    let len = frame.len() - HEADER_LEN;
    if len == 0 || len > MAX_FRAME {
        return Err(CodecError::Length(len));
    }
    let prefix = u32::try_from(len).map_err(|_| CodecError::Length(len))?;
    frame[..HEADER_LEN].copy_from_slice(&prefix.to_le_bytes());
    Ok(frame)
}

/// The header of a frame whose message is `prefix` followed by a byte
/// string of `len` bytes (a `Data` or `Log` frame): write it, then the
/// bytes themselves, and the receiver decodes the same message as if it
/// had been [`encode`]d — without the payload being copied into a frame
/// first. `prefix` is the message with an empty payload.
pub fn bytes_frame_header<T: Serialize>(prefix: &T, len: usize) -> Result<Vec<u8>, CodecError> {
    let empty = encode(prefix)?;
    // An empty byte string is its length, 0, as one varint byte: last.
    let Some((&0, start)) = empty[HEADER_LEN..].split_last() else {
        return Err(CodecError::Malformed("not a byte-string message".into()));
    };
    let mut header = vec![0u8; HEADER_LEN];
    header.extend_from_slice(start);
    write_varint(&mut header, len as u64);
    let body = header.len() - HEADER_LEN + len;
    if body > MAX_FRAME {
        return Err(CodecError::Length(body));
    }
    let prefix = u32::try_from(body).map_err(|_| CodecError::Length(body))?;
    header[..HEADER_LEN].copy_from_slice(&prefix.to_le_bytes());
    Ok(header)
}

/// bincode's variable-length integer (standard configuration).
fn write_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// The body length announced by a frame's header.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME {
        Err(CodecError::Length(len))
    } else {
        Ok(len)
    }
}

/// The message in a frame's body (without its header).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    if body.is_empty() || body.len() > MAX_FRAME {
        return Err(CodecError::Length(body.len()));
    }
    let (msg, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config().with_limit::<MAX_FRAME>())
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(msg)
}

/// Frames cut out of a byte stream that arrives in pieces, for callers
/// that get bytes rather than a reader (and for the fuzzer).
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, `None` until one is complete. The
    /// length is checked as soon as the header is in, so a hostile peer
    /// cannot make the buffer grow past one frame.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = body_len(*header)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Bytes received and not yet taken.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}
