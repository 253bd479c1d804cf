//! offload-master: the daemon host's side of offload.
//!
//! What it is (today): the operator commands for Guix-compatible keys, the
//! ACL and signed archives, and a self-check against the host's real Guile
//! and libgcrypt. Later: the `hook` front ends, the machine pool, the
//! scheduler and `serve`.
//!
//! `main.rs` only parses the command line and installs logging; everything
//! runs from here so tests can drive it in-process.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent_link;
pub mod cli;
pub mod demo;
pub mod discover;
pub mod hook;
pub mod links;
pub mod machines;
pub mod pool;
pub mod scheduler;
pub mod self_check;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod transfer;
pub mod why_not;
