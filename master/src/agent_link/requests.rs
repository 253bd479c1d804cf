//! The requests of a link.

use std::time::Duration;

use offload_core::proto::stream::{MasterEvent, MasterStream};
use offload_core::proto::{
    BuildOutcome, BuildRequest, MAX_CHUNK, MAX_PATHS, Reply, Request, Status, ToAgent, ToMaster,
};
use offload_net::framed;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AgentLink, LinkError, StreamPair, Transport};

/// Total bytes of paths sent in one query (well under a frame).
const QUERY_BYTES: usize = 512 << 10;

/// A build slot leased on an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: u64,
    /// How long it lasts unless renewed or used.
    pub ttl: Duration,
}

/// One request's stream.
enum Open<'a> {
    Quic(quinn::SendStream, quinn::RecvStream),
    Stream(tokio::sync::MutexGuard<'a, StreamPair>),
}

/// Marks a byte stream broken unless the request completes.
struct Turn<'a> {
    open: Open<'a>,
    done: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match &mut self.open {
            // Abandoned: reset, so the agent stops (a dropped stream would
            // only look finished).
            Open::Quic(send, _) => {
                let _ = send.reset(0u32.into());
            }
            Open::Stream(pair) => pair.broken = true,
        }
    }
}

impl Turn<'_> {
    fn parts(
        &mut self,
    ) -> (
        &mut (dyn AsyncRead + Send + Unpin),
        &mut (dyn AsyncWrite + Send + Unpin),
    ) {
        match &mut self.open {
            Open::Quic(send, recv) => (recv, send),
            Open::Stream(pair) => {
                let StreamPair { r, w, .. } = &mut **pair;
                (r.as_mut(), w.as_mut())
            }
        }
    }

    /// Send a frame (flushed over a byte stream).
    async fn send(&mut self, frame: &ToAgent) -> Result<(), LinkError> {
        let (_, w) = self.parts();
        framed::write_frame(w, frame).await?;
        w.flush().await.map_err(|e| LinkError::Lost(e.to_string()))
    }

    /// Nothing more will be sent on this request (QUIC: finish the stream).
    fn finish_sending(&mut self) {
        if let Open::Quic(send, _) = &mut self.open {
            let _ = send.finish();
        }
    }

    /// The next event of the answer.
    async fn next(&mut self, machine: &mut MasterStream) -> Result<MasterEvent, LinkError> {
        let (r, _) = self.parts();
        let frame = framed::read_frame::<ToMaster, _>(r)
            .await?
            .ok_or_else(|| LinkError::Lost("the agent ended the stream before answering".into()))?;
        let event = machine
            .handle(frame)
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        if machine.is_done() {
            self.done = true;
        }
        match event {
            MasterEvent::Failed(f) => Err(LinkError::Failed(f)),
            e => Ok(e),
        }
    }
}

fn unexpected(what: &str) -> LinkError {
    LinkError::Protocol(format!("unexpected answer to {what}"))
}

impl AgentLink {
    async fn open(&self) -> Result<Turn<'_>, LinkError> {
        let open = match &self.transport {
            Transport::Quic { conn, .. } => {
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| LinkError::Lost(e.to_string()))?;
                Open::Quic(send, recv)
            }
            Transport::Stream(pair) => {
                let pair = pair.lock().await;
                if pair.broken {
                    return Err(LinkError::Lost(
                        "an earlier request was abandoned half-way; reconnect".into(),
                    ));
                }
                Open::Stream(pair)
            }
        };
        Ok(Turn { open, done: false })
    }

    /// Send `request` alone and read its one reply.
    async fn simple(&self, request: Request) -> Result<Reply, LinkError> {
        let mut machine = MasterStream::for_request(&request);
        let mut turn = self.open().await?;
        turn.send(&ToAgent::Request(request)).await?;
        turn.finish_sending();
        match turn.next(&mut machine).await? {
            MasterEvent::Reply(r) => Ok(r),
            _ => Err(unexpected("a request")),
        }
    }

    /// The agent's state now.
    pub async fn status(&self) -> Result<Status, LinkError> {
        match self.simple(Request::Status).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(unexpected("status")),
        }
    }

    /// Lease a build slot (`Failed` with kind `Busy` or `Draining` when
    /// none is to be had).
    pub async fn lease(&self) -> Result<Lease, LinkError> {
        match self.simple(Request::Lease).await? {
            Reply::Leased { lease, ttl_ms } => Ok(Lease {
                id: lease,
                ttl: Duration::from_millis(ttl_ms),
            }),
            _ => Err(unexpected("lease")),
        }
    }

    /// Extend a lease.
    pub async fn renew(&self, lease: u64) -> Result<Duration, LinkError> {
        match self.simple(Request::Renew { lease }).await? {
            Reply::Renewed { ttl_ms } => Ok(Duration::from_millis(ttl_ms)),
            _ => Err(unexpected("renew")),
        }
    }

    /// Give a lease back.
    pub async fn release(&self, lease: u64) -> Result<(), LinkError> {
        match self.simple(Request::Release { lease }).await? {
            Reply::Released => Ok(()),
            _ => Err(unexpected("release")),
        }
    }

    /// Which of `paths` the agent lacks (in batches that fit a frame).
    pub async fn query_missing(&self, paths: &[String]) -> Result<Vec<String>, LinkError> {
        let mut missing = Vec::new();
        let mut start = 0;
        while start < paths.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < paths.len()
                && end - start < MAX_PATHS
                && bytes + paths[end].len() < QUERY_BYTES
            {
                bytes += paths[end].len() + 8;
                end += 1;
            }
            let end = end.max(start + 1);
            let batch = paths[start..end].to_vec();
            match self.simple(Request::QueryMissing { paths: batch }).await? {
                Reply::Missing { paths } => missing.extend(paths),
                _ => return Err(unexpected("query-missing")),
            }
            start = end;
        }
        Ok(missing)
    }

    /// Send the export stream read from `source` to be imported; the
    /// items the agent now holds, in stream order.
    pub async fn import(
        &self,
        source: &mut (impl AsyncRead + Unpin),
    ) -> Result<Vec<String>, LinkError> {
        let request = Request::Import;
        let mut machine = MasterStream::for_request(&request);
        let mut turn = self.open().await?;
        turn.send(&ToAgent::Request(request)).await?;
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let n = source
                .read(&mut buf)
                .await
                .map_err(|e| LinkError::Lost(format!("reading the export stream: {e}")))?;
            if n == 0 {
                break;
            }
            let (_, w) = turn.parts();
            // An agent that refused the stream early stops reading: its
            // answer says why.
            if framed::write_bytes_frame(w, &ToAgent::Data(Vec::new()), &buf[..n])
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = turn.send(&ToAgent::End).await;
        turn.finish_sending();
        match turn.next(&mut machine).await? {
            MasterEvent::Reply(Reply::Imported { paths }) => Ok(paths),
            _ => Err(unexpected("import")),
        }
    }

    /// Build under a lease; `log` hears the log as it arrives. Dropping
    /// the future cancels the build.
    pub async fn build(
        &self,
        request: BuildRequest,
        log: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<BuildOutcome, LinkError> {
        let request = Request::Build(request);
        let mut machine = MasterStream::for_request(&request);
        let mut turn = self.open().await?;
        turn.send(&ToAgent::Request(request)).await?;
        loop {
            match turn.next(&mut machine).await? {
                MasterEvent::Reply(Reply::BuildStarted) => {}
                MasterEvent::Log(chunk) => log(&chunk),
                MasterEvent::Reply(Reply::BuildFinished(outcome)) => {
                    turn.finish_sending();
                    return Ok(outcome);
                }
                _ => return Err(unexpected("build")),
            }
        }
    }

    /// Have the agent export `paths` (and sort them, references first);
    /// the signed stream is written to `sink`. Returns its size.
    pub async fn export(
        &self,
        paths: &[String],
        sink: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, LinkError> {
        let request = Request::Export {
            paths: paths.to_vec(),
        };
        let mut machine = MasterStream::for_request(&request);
        let mut turn = self.open().await?;
        turn.send(&ToAgent::Request(request)).await?;
        turn.finish_sending();
        let mut total = 0u64;
        loop {
            match turn.next(&mut machine).await? {
                MasterEvent::Reply(Reply::Exporting) => {}
                MasterEvent::Data(d) => {
                    total += d.len() as u64;
                    sink.write_all(&d)
                        .await
                        .map_err(|e| LinkError::Lost(format!("writing the export stream: {e}")))?;
                }
                MasterEvent::End => {
                    sink.flush()
                        .await
                        .map_err(|e| LinkError::Lost(format!("writing the export stream: {e}")))?;
                    return Ok(total);
                }
                _ => return Err(unexpected("export")),
            }
        }
    }
}
