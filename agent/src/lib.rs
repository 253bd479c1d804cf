//! offload-agent: the build machine's side of offload.
//!
//! What it is today: [`advertise`] makes the machine visible to masters
//! over DNS-SD (systems, features, speed, slots, live load and free disk,
//! its signing-key fingerprint), restricted to chosen interfaces, with
//! goodbye packets on shutdown; [`probe`] measures what it advertises.
//! What it is not yet: the QUIC service that accepts archives and runs
//! builds (the advertised port has no service behind it in this version).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod advertise;
pub mod config;
pub mod probe;
pub mod service;
pub mod subtypes;
