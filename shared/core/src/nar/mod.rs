//! NAR, the Nix archive format (spec §2), streaming in both directions.
//!
//! ```text
//! NAR    := str("nix-archive-1") NODE
//! NODE   := str("(") str("type") BODY str(")")
//! BODY   := str("regular") [str("executable") str("")] str("contents") u64le(size) bytes pad8
//!         | str("symlink") str("target") str(target)
//!         | str("directory") ENTRY*
//! ENTRY  := str("entry") str("(") str("name") str(name) str("node") NODE str(")")
//! ```
//!
//! Restrictions enforced by [`NarReader`] (and by [`NarWriter`] on what it is
//! given): entry names are non-empty, not `.` or `..`, contain no `/` or NUL,
//! are at most [`Limits::max_name_len`] bytes and strictly increase
//! byte-wise within a directory; symlink targets are non-empty, NUL-free and
//! at most [`Limits::max_target_len`] bytes; nesting is at most
//! [`Limits::max_depth`]; file and total content sizes are bounded; padding
//! is zero; only the three node types exist. Memory use does not depend on
//! file sizes: contents stream through.

mod reader;
mod writer;

pub use reader::NarReader;
pub use writer::NarWriter;

use crate::wire;

/// The magic string that opens every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Limits on what a NAR may contain; every field has a safe default.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest entry name (Linux `NAME_MAX`).
    pub max_name_len: usize,
    /// Longest symlink target (Linux `PATH_MAX` − 1).
    pub max_target_len: usize,
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// Largest single file.
    pub max_file_size: u64,
    /// Largest sum of file sizes in one NAR.
    pub max_total_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_name_len: 255,
            max_target_len: 4095,
            max_depth: 256,
            max_file_size: 1 << 40,
            max_total_size: 1 << 42,
        }
    }
}

/// One step of a NAR, as the reader yields and the writer takes it.
///
/// `name` is `None` for the root node and the entry name inside a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A regular file of `size` bytes; its contents follow (see [`NarReader::contents`]).
    Regular {
        /// Entry name.
        name: Option<Vec<u8>>,
        /// Whether the owner-execute bit was set.
        executable: bool,
        /// Content length.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Entry name.
        name: Option<Vec<u8>>,
        /// Link target.
        target: Vec<u8>,
    },
    /// The start of a directory; its entries follow until [`Event::EndDirectory`].
    Directory {
        /// Entry name.
        name: Option<Vec<u8>>,
    },
    /// The end of the innermost open directory.
    EndDirectory,
}

/// Why a NAR is invalid or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Framing error from the underlying bytes (I/O, length, padding).
    #[error("NAR: {0}")]
    Wire(#[from] wire::Error),
    /// A different token than the grammar requires.
    #[error("NAR: expected {expected:?}, found {found:?}")]
    UnexpectedToken {
        /// What the grammar allows here.
        expected: &'static str,
        /// What was there (lossy text).
        found: String,
    },
    /// A node type other than regular, symlink and directory.
    #[error("NAR: unknown node type {0:?}")]
    UnknownType(String),
    /// A bad entry name.
    #[error("NAR: invalid entry name {name:?}: {why}")]
    BadName {
        /// The name (lossy text).
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Entry names not in strictly increasing byte order.
    #[error("NAR: entry {name:?} does not sort after {prev:?} (unsorted or duplicate)")]
    Unsorted {
        /// The previous name.
        prev: String,
        /// The offending name.
        name: String,
    },
    /// A bad symlink target.
    #[error("NAR: invalid symlink target: {0}")]
    BadTarget(&'static str),
    /// Too deeply nested.
    #[error("NAR: directories nested deeper than {0}")]
    TooDeep(usize),
    /// A file or the whole archive is larger than allowed.
    #[error("NAR: {what} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// "file" or "total contents".
        what: &'static str,
        /// The size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The writer was driven out of grammar order (a bug in the caller),
    /// or a file changed size while it was archived.
    #[error("NAR: {0}")]
    Usage(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Wire(wire::Error::Io(e))
    }
}

/// Check an entry name (see the module documentation).
pub fn check_name(name: &[u8], limits: &Limits) -> Result<(), Error> {
    let why = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "`.` and `..` are not allowed"
    } else if name.contains(&b'/') {
        "contains `/`"
    } else if name.contains(&0) {
        "contains NUL"
    } else if name.len() > limits.max_name_len {
        "too long"
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: String::from_utf8_lossy(name).into_owned(),
        why,
    })
}

/// Check a symlink target.
pub fn check_target(target: &[u8], limits: &Limits) -> Result<(), Error> {
    if target.is_empty() {
        Err(Error::BadTarget("empty"))
    } else if target.contains(&0) {
        Err(Error::BadTarget("contains NUL"))
    } else if target.len() > limits.max_target_len {
        Err(Error::BadTarget("too long"))
    } else {
        Ok(())
    }
}

/// Check that `name` sorts strictly after the directory's previous entry.
fn check_order(prev: Option<&[u8]>, name: &[u8]) -> Result<(), Error> {
    match prev {
        Some(prev) if prev >= name => Err(Error::Unsorted {
            prev: String::from_utf8_lossy(prev).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
