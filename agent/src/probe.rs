//! What the agent measures about its machine: normalized load, free store
//! space, and a start-up speed benchmark.

use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// SHA-256 throughput that counts as speed 1.0 (bytes per second).
pub const REFERENCE_THROUGHPUT: f64 = 500e6;

/// The 1-minute load average divided by the number of processors (Guix's
/// normalization), or `None` when unreadable.
pub fn normalized_load() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load: f64 = text.split_whitespace().next()?.parse().ok()?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some(load / cpus as f64)
}

/// Free bytes for unprivileged use on the filesystem holding `dir` (or its
/// nearest existing parent).
pub fn free_disk(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// A short CPU benchmark (hashing 32 MiB): this machine's speed relative to
/// [`REFERENCE_THROUGHPUT`], rounded to 2 decimals, at least 0.01.
pub fn measure_speed() -> f64 {
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut hasher = Sha256::new();
    for _ in 0..32 {
        hasher.update(&buf);
    }
    std::hint::black_box(hasher.finalize());
    let throughput = (32u64 << 20) as f64 / start.elapsed().as_secs_f64().max(1e-6);
    ((throughput / REFERENCE_THROUGHPUT) * 100.0)
        .round()
        .max(1.0)
        / 100.0
}
