//! Scripted daemons for tests: a transcript of the bytes the client must
//! send and the bytes the daemon answers, played on any byte stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) use super::wire::Request;

/// One step of a transcript.
pub(crate) enum Step {
    /// The client must send exactly these bytes.
    Expect(Vec<u8>),
    /// The daemon sends these bytes.
    Send(Vec<u8>),
    /// The daemon answers nothing more, keeping the connection open (a
    /// daemon waiting for a lock).
    Stall,
}

pub(crate) fn bytes(build: impl FnOnce(&mut Request)) -> Vec<u8> {
    let mut r = Request::default();
    build(&mut r);
    r.0
}

pub(crate) fn expect(build: impl FnOnce(&mut Request)) -> Step {
    Step::Expect(bytes(build))
}

pub(crate) fn send(build: impl FnOnce(&mut Request)) -> Step {
    Step::Send(bytes(build))
}

pub(crate) const LAST: u64 = 0x616c_7473;
pub(crate) const NEXT: u64 = 0x6f6c_6d67;
pub(crate) const ERROR: u64 = 0x6378_7470;
pub(crate) const READ: u64 = 0x6461_7461;
pub(crate) const WRITE: u64 = 0x6461_7416;

/// The Guix handshake: magic, 0x163, client version, no affinity, no
/// reserved space, then LAST.
pub(crate) fn guix_handshake() -> Vec<Step> {
    vec![
        expect(|r| {
            r.u64(0x6e69_7863);
        }),
        send(|r| {
            r.u64(0x6478_696f).u64(0x163);
        }),
        expect(|r| {
            r.u64(0x163).u64(0).u64(0);
        }),
        send(|r| {
            r.u64(LAST);
        }),
    ]
}

pub(crate) async fn play(mut peer: impl AsyncRead + AsyncWrite + Unpin, steps: Vec<Step>) {
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Expect(want) => {
                let mut got = vec![0u8; want.len()];
                peer.read_exact(&mut got)
                    .await
                    .unwrap_or_else(|e| panic!("step {i}: reading the client: {e}"));
                assert_eq!(got, want, "step {i}: the client sent other bytes");
            }
            Step::Send(b) => peer.write_all(&b).await.expect("write to the client"),
            Step::Stall => std::future::pending::<()>().await,
        }
    }
}
