//! Stores: where an agent imports inputs, builds and exports outputs, and
//! where the hook registers what comes back.
//!
//! * [`daemon`]: the worker-protocol client for the Guix and Nix daemons.
//! * [`info`]: what a store knows about an item.

pub mod daemon;
pub mod info;
