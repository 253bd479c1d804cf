//! Noticing that a file changed (machines.scm, the ACL) without reading it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A file's identity for change detection: (device, inode, size, mtime
/// seconds, mtime nanoseconds). A rewrite by rename changes the inode; an
/// edit in place the size or mtime.
pub type FileKey = (u64, u64, u64, i64, i64);

/// The key of the file at `path`, `None` if it cannot be read.
pub fn file_key(path: &Path) -> Option<FileKey> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}
