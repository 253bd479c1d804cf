//! Worker-protocol constants: magic numbers, versions, opcodes and the
//! codes of the daemon's stderr messages.

/// The client's greeting, "nixc".
pub(crate) const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer, "dxio".
pub(crate) const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// The version this client speaks to a Nix daemon: 1.34, as Nix 2.8.
pub const NIX_PROTOCOL: u32 = 0x122;
/// The version this client speaks to a Guix daemon: 0x163.
pub const GUIX_PROTOCOL: u32 = 0x163;
/// Minor versions at or above this are Guix daemons; Nix has never come
/// close (2.8 is at 34), and Guix's has been above 0x60 for years.
pub(crate) const GUIX_MINOR_FLOOR: u32 = 0x60;

/// The major part of a protocol version.
pub(crate) const fn major(v: u32) -> u32 {
    v & 0xff00
}

/// The minor part of a protocol version.
pub(crate) const fn minor(v: u32) -> u32 {
    v & 0x00ff
}

/// Opcodes.
pub(crate) mod op {
    pub(crate) const IS_VALID_PATH: u64 = 1;
    pub(crate) const ADD_TEMP_ROOT: u64 = 11;
    pub(crate) const BUILD_PATHS: u64 = 9;
    pub(crate) const EXPORT_PATH: u64 = 16;
    pub(crate) const SET_OPTIONS: u64 = 19;
    pub(crate) const QUERY_PATH_INFO: u64 = 26;
    pub(crate) const IMPORT_PATHS: u64 = 27;
    pub(crate) const QUERY_VALID_PATHS: u64 = 31;
    pub(crate) const QUERY_DERIVATION_OUTPUTS: u64 = 22;
    pub(crate) const QUERY_DERIVATION_OUTPUT_NAMES: u64 = 28;
    pub(crate) const QUERY_DERIVATION_OUTPUT_MAP: u64 = 41;
    pub(crate) const ADD_TO_STORE_NAR: u64 = 39;
    pub(crate) const BUILD_PATHS_WITH_RESULTS: u64 = 46;
}

/// Codes of the daemon's stderr messages.
pub(crate) mod stderr {
    pub(crate) const NEXT: u64 = 0x6f6c_6d67;
    pub(crate) const READ: u64 = 0x6461_7461;
    pub(crate) const WRITE: u64 = 0x6461_7416;
    pub(crate) const LAST: u64 = 0x616c_7473;
    pub(crate) const ERROR: u64 = 0x6378_7470;
    pub(crate) const START_ACTIVITY: u64 = 0x5354_5254;
    pub(crate) const STOP_ACTIVITY: u64 = 0x5354_4f50;
    pub(crate) const RESULT: u64 = 0x5253_4c54;
}

/// Nix result types carrying a build log line as their first field.
pub(crate) const RES_BUILD_LOG_LINE: u64 = 101;
/// Nix's "post-build hook" log line result.
pub(crate) const RES_POST_BUILD_LOG_LINE: u64 = 107;

/// Which daemon is on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The Nix daemon (protocol 1.x up to 1.34 understood).
    Nix,
    /// The Guix daemon (protocol 0x163).
    Guix,
}

impl Dialect {
    /// The daemon's program name, for messages.
    pub fn daemon_name(self) -> &'static str {
        match self {
            Self::Nix => "nix-daemon",
            Self::Guix => "guix-daemon",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.daemon_name())
    }
}
