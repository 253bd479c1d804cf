//! The agent↔master protocol, sans IO (design overview §3–§5): the
//! messages, their codec, and the state machines both ends run. Nothing
//! here opens a socket or reads a clock: callers feed bytes and `now` in
//! and take frames and deadlines out, as quinn-proto does.
//!
//! # Transport
//!
//! A **session** is one authenticated connection between a master and an
//! agent: a QUIC connection (both keys proven in the TLS handshake, ALPN
//! [`ALPN`]) or one byte stream (`offload-agent stdio` under SSH), where
//! the keys are proven by the [`auth`] exchange first. Inside a session
//! every request has a **request stream**: a QUIC bidirectional stream of
//! its own, or, on a byte stream, the single stream used for one request
//! after another.
//!
//! # Framing (module [`codec`])
//!
//! ```text
//! frame   = length:u32le body      ; 1 ≤ length ≤ MAX_FRAME
//! body    = bincode 2 (standard config, varint integers) of ToAgent | ToMaster
//! ```
//!
//! # Grammar of a request stream
//!
//! ```text
//! first stream  = Hello → Welcome | Error            (once per session, first)
//! status        = Request(Status) → Reply(Status)
//! lease         = Request(Lease) → Reply(Leased) | Error(Busy | Draining)
//! renew         = Request(Renew) → Reply(Renewed) | Error(UnknownLease)
//! release       = Request(Release) → Reply(Released)
//! query-missing = Request(QueryMissing) → Reply(Missing)
//! import        = Request(Import) Data* End → Reply(Imported) | Error
//! build         = Request(Build) [Cancel] → Reply(BuildStarted) Log* Reply(BuildFinished) | Error
//! export        = Request(Export) → Reply(Exporting) Data* End | Error
//! ```
//!
//! Any frame out of this order is a protocol error: the receiver answers
//! `Error(Protocol)` where it still can and closes the stream (on a byte
//! stream, the session). A master that goes away cancels its builds and
//! releases its leases (module [`admission`]).
//!
//! # Limits
//!
//! Every frame is at most [`MAX_FRAME`] bytes and decoded with that limit
//! (bincode counts claimed lengths before allocating); data and log chunks
//! at most [`MAX_CHUNK`]; path lists at most [`MAX_PATHS`] entries of
//! [`MAX_PATH_LEN`] bytes; messages at most [`MAX_MESSAGE_LEN`]. Exceeding
//! one is an error naming it, never an allocation.

pub mod admission;
pub mod auth;
pub mod codec;
pub mod messages;
pub mod stream;

#[cfg(test)]
mod tests;

pub use messages::*;

/// The protocol version this code speaks.
pub const VERSION: u32 = 1;
/// The versions this code accepts, best first.
pub const VERSIONS: &[u32] = &[VERSION];
/// The TLS application protocol: carries the version, so that a peer of
/// another version fails in the handshake with a clear alert.
pub const ALPN: &[u8] = b"offload/1";

/// Longest frame body.
pub const MAX_FRAME: usize = 1 << 20;
/// Longest data or log chunk in one frame.
pub const MAX_CHUNK: usize = 256 << 10;
/// Most store paths in one request or reply.
pub const MAX_PATHS: usize = 8192;
/// Longest store path (as in export streams).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest free-text message (errors, build failures).
pub const MAX_MESSAGE_LEN: usize = 16 << 10;
/// Most systems or features in a status.
pub const MAX_NAMES: usize = 64;
/// Longest system or feature name.
pub const MAX_NAME_LEN: usize = 256;
