//! Static build machines: `/etc/guix/machines.scm` and Nix machines files.

pub mod nix_file;
