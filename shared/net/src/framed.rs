//! Frames of the protocol (`offload_core::proto::codec`) over any async
//! byte stream: a QUIC stream, or stdin/stdout.

use offload_core::proto::codec::{self, CodecError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The frame is malformed or over a limit.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
}

/// Write one frame.
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = codec::encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// Write a `Data` or `Log` frame (`empty` is the message with an empty
/// payload) carrying `payload`, without copying it into a frame first.
pub async fn write_bytes_frame<T: Serialize, W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    empty: &T,
    payload: &[u8],
) -> Result<(), FrameError> {
    let header = codec::bytes_frame_header(empty, payload.len())?;
    w.write_all(&header).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Read one frame; `None` at a clean end of stream (before any byte of a
/// frame).
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = codec::body_len(header)?;
    // Filled as it is read (no zeroing first); at most one frame.
    let mut body = Vec::with_capacity(len);
    let got = (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(codec::decode(&body)?))
}
