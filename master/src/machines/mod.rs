//! Static build machines: `/etc/guix/machines.scm` and Nix machines files.

pub mod from_nix;
pub mod load;
pub mod nix_file;
pub mod output;
pub mod record;
pub mod scheme;
