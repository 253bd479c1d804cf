//! Static build machines: `/etc/guix/machines.scm` and Nix machines files.

pub mod nix_file;
pub mod record;
pub mod scheme;
