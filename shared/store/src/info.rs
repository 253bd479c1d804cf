//! What a store knows about one valid item.

use offload_core::store_path::StorePath;

/// The registration of a valid store item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The item.
    pub path: StorePath,
    /// The derivation that produced it, if known.
    pub deriver: Option<StorePath>,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: [u8; 32],
    /// The items it refers to (possibly itself), sorted.
    pub references: Vec<StorePath>,
    /// When it was registered, in seconds since the epoch.
    pub registration_time: u64,
    /// Length of its NAR serialisation.
    pub nar_size: u64,
}
