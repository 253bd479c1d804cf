//! The stores read and write export streams with blocking `Read`/`Write`
//! on a blocking thread (inside `Handle::block_on`, where tokio's blocking
//! channel calls are not allowed); the protocol moves them in frames on
//! the runtime. These pipes join the two: standard channels for the data,
//! a tokio semaphore for the async side to wait on, and neither side gets
//! ahead of the other by more than [`CHUNKS_IN_FLIGHT`] chunks.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;

use offload_core::proto::MAX_CHUNK;
use tokio::sync::Semaphore;

/// Chunks buffered between the two sides.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 16;

/// What the async side hands the reader.
pub(crate) enum Piece {
    /// More bytes.
    Bytes(Vec<u8>),
    /// The stream is complete.
    End,
}

/// The async side of a [`ChannelReader`].
pub(crate) struct PieceSender {
    tx: mpsc::Sender<Piece>,
    room: Arc<Semaphore>,
}

impl PieceSender {
    /// Hand over a piece, waiting while the reader is behind; false once
    /// the reader is gone.
    pub(crate) async fn send(&self, piece: Piece) -> bool {
        match self.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        self.tx.send(piece).is_ok()
    }
}

/// A blocking reader of the pieces sent to it; the end without
/// [`Piece::End`] (the sender dropped) is an error, so that a stream cut
/// short is never taken for a complete one.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    room: Arc<Semaphore>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ChannelReader {
    pub(crate) fn new() -> (PieceSender, Self) {
        let (tx, rx) = mpsc::channel();
        let room = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
        (
            PieceSender {
                tx,
                room: Arc::clone(&room),
            },
            Self {
                rx,
                room,
                current: Vec::new(),
                pos: 0,
                ended: false,
            },
        )
    }
}

impl Drop for ChannelReader {
    fn drop(&mut self) {
        // A sender waiting for room learns that no one reads any more.
        self.room.close();
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Bytes(b)) => {
                    self.room.add_permits(1);
                    self.current = b;
                    self.pos = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the master stopped sending in the middle of the stream",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking writer that sends chunks of at most [`MAX_CHUNK`] bytes.
pub(crate) struct ChannelWriter {
    tx: mpsc::SyncSender<Option<Vec<u8>>>,
    ready: Arc<Semaphore>,
    buf: Vec<u8>,
}

/// The async side of a [`ChannelWriter`].
pub(crate) struct ChunkReceiver {
    rx: mpsc::Receiver<Option<Vec<u8>>>,
    ready: Arc<Semaphore>,
}

impl ChunkReceiver {
    /// The next chunk; `None` once the writer is done (dropped).
    pub(crate) async fn recv(&mut self) -> Option<Vec<u8>> {
        self.ready.acquire().await.ok()?.forget();
        self.rx.try_recv().ok().flatten()
    }
}

impl ChannelWriter {
    pub(crate) fn new() -> (Self, ChunkReceiver) {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let ready = Arc::new(Semaphore::new(0));
        (
            Self {
                tx,
                ready: Arc::clone(&ready),
                buf: Vec::with_capacity(MAX_CHUNK),
            },
            ChunkReceiver { rx, ready },
        )
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_CHUNK));
        self.tx
            .send(Some(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the master went away"))?;
        self.ready.add_permits(1);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        // Unflushed bytes are dropped: the writer failed. The end marker
        // tells the receiver that nothing more comes.
        if self.tx.send(None).is_ok() {
            self.ready.add_permits(1);
        }
    }
}
