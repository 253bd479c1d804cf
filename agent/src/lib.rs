//! offload-agent: the build machine's side of offload.
//!
//! Today it is the crate skeleton: advertising over DNS-SD, the QUIC service
//! and build supervision come with their issues. It already shares the
//! trust core (`offload-core`, `offload-files`) with the master.
