//! The filesystem side of offload's trust core.
//!
//! What it is: NAR dump of directory trees and restore with Guix's
//! canonicalisation, Guix key files and the ACL file (modes, atomic
//! writes), and moving signed export streams in and out of a plain
//! directory of store items. Every item read from a stream is verified
//! before it becomes visible under its final name.
//!
//! What it is not: a store. There is no database here and no daemon
//! protocol; those come with the store layer.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod acl_file;
pub mod atomic;
pub mod bounded;
pub mod dump;
pub mod export_dir;
pub mod file_key;
pub mod import_dir;
pub mod key_file;
pub mod paths;
pub mod restore;
