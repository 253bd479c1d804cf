//! Nix 2.8 machines files (stub, being written).
