//! Stores: where an agent imports inputs, builds and exports outputs, and
//! where the hook registers what comes back.
//!
//! * [`daemon`]: the worker-protocol client for the Guix and Nix daemons.
//! * [`db`]: a store's SQLite database (Guix or Nix schema).
//! * [`embedded`]: the embedded store and its derivation builder.
//! * [`info`]: what a store knows about an item.
//! * [`local`]: direct registration in a store on this host (the hook side).
//! * [`spec`]: `--store SPEC`.
//! * [`store`]: one interface over all of them.
//! * [`sync_io`]: blocking readers and writers seen as async ones.

pub mod daemon;
pub mod db;
pub mod drv_maker;
pub mod embedded;
mod gc_lock;
pub mod info;
pub mod local;
mod resign;
pub mod spec;
pub mod store;
pub mod sync_io;
