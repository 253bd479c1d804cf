//! A client of the daemons' worker protocol: the Nix daemon (protocol 1.34,
//! as Nix 2.8) and the Guix daemon (0x163), one implementation with
//! version-gated parts.
//!
//! The connection is any async byte stream: the daemon's Unix socket, or a
//! process speaking the protocol on its stdin/stdout (`nix-daemon --stdio`,
//! later SSH). After every request the daemon sends stderr messages; log
//! lines and activities go to the connection's logger as they arrive, data
//! requests are served from the request's source or sink, and an error ends
//! the request with [`Error::Daemon`], leaving the connection usable.

mod client;
mod proto;
mod stderr;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod transcript;
mod transport;
mod wire;

pub use client::{BuildMode, DaemonBuildResult, DaemonClient, Logger, Options};
pub use proto::{Dialect, GUIX_PROTOCOL, NIX_PROTOCOL};
pub use stderr::LogEvent;
pub use transport::{ChildIo, Connection, connect_unix, spawn_stdio};

use std::io;

/// Why a request to a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or closed.
    #[error("connection to the daemon: {0}")]
    Io(io::Error),
    /// The daemon sent something this client does not accept.
    #[error("protocol error from the daemon: {0}")]
    Protocol(String),
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Daemon {
        /// Its message, without terminal colour codes.
        message: String,
        /// Its status (1 unless the daemon says otherwise; Guix uses 100
        /// for a permanent build failure and 101 for a timeout).
        status: u64,
    },
    /// The request does not exist in this daemon's dialect.
    #[error("{0} does not support {1}")]
    Unsupported(Dialect, &'static str),
    /// Reading the data sent to the daemon or writing what it sent back failed.
    #[error("{what}: {source}")]
    Local {
        /// What was being read or written.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ))
        } else {
            Self::Io(e)
        }
    }
}
