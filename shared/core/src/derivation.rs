//! ATerm derivations (stub, being written).
