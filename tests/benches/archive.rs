//! Benchmark (not a test): export + verify + import of a large tree through
//! the real `offload-master` binaries, against `sha256sum` of the same bytes.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p offload-tests --bench archive
//! OFFLOAD_BENCH_MIB=256 cargo bench -p offload-tests --bench archive   # smaller tree
//! ```
//!
//! Prints, per run and as medians: the pipeline's throughput as a ratio to
//! `sha256sum` (target ≥ 0.7) and the peak RSS of the exporting and the
//! importing process (target ≤ 64 MiB each). Runs are interleaved so both
//! sides see the same page cache and machine load.

#![allow(clippy::print_stdout, missing_docs)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn main() {
    let mib: u64 = std::env::var("OFFLOAD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let master = offload_tests::bin("offload-master");
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let item = store.join("0123456789abcdfghijklmnpqrsvwxyz-bench-tree");
    let (bytes, files) = make_tree(&item, mib << 20);
    println!(
        "tree: {} MiB in {} files ({})",
        bytes >> 20,
        files.len(),
        item.display()
    );

    let keys = tmp.path().join("keys");
    let acl = tmp.path().join("acl");
    offload_tests::key_and_acl(&keys, &acl);

    // Warm the page cache once for both sides.
    sha256sum(&files);
    let mut ratios = Vec::new();
    let mut rss = Vec::new();
    for i in 0..RUNS {
        let base = sha256sum(&files);
        let out = tmp.path().join(format!("imported-{i}"));
        let (ours, export_rss, import_rss) = pipeline(&master, &keys, &acl, &item, &out);
        let ratio = base.as_secs_f64() / ours.as_secs_f64();
        println!(
            "run {i}: sha256sum {:.0} MiB/s, export|import {:.0} MiB/s, ratio {ratio:.2}; peak RSS export {} MiB, import {} MiB",
            mib_per_s(bytes, base),
            mib_per_s(bytes, ours),
            export_rss >> 20,
            import_rss >> 20
        );
        ratios.push(ratio);
        rss.push(export_rss.max(import_rss));
        offload_files::atomic::remove_tree(&out).expect("clean up");
    }
    ratios.sort_by(f64::total_cmp);
    rss.sort_unstable();
    println!(
        "median ratio to sha256sum: {:.2} (target >= 0.70); worst peak RSS: {} MiB (target <= 64)",
        ratios[RUNS / 2],
        rss[RUNS - 1] >> 20
    );
}

fn mib_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / f64::from(1 << 20)
}

/// A tree of `total` bytes: mostly 16 MiB files, plus small files and links.
fn make_tree(root: &Path, total: u64) -> (u64, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut written = 0u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    fs::create_dir_all(root.join("small")).expect("mkdir");
    for i in 0..2000u64 {
        let path = root.join("small").join(format!("f{i:04}"));
        fs::write(&path, format!("small file {i}\n").repeat(200)).expect("write");
        written += fs::metadata(&path).expect("stat").len();
        files.push(path);
        if i % 100 == 0 {
            std::os::unix::fs::symlink(
                format!("f{i:04}"),
                root.join("small").join(format!("l{i:04}")),
            )
            .expect("symlink");
        }
    }
    let mut n = 0;
    while written < total {
        let path = root.join(format!("big-{n:03}.bin"));
        let mut f = fs::File::create(&path).expect("create");
        let size = (16u64 << 20).min(total - written);
        let mut left = size;
        while left > 0 {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let take = left.min(block.len() as u64) as usize;
            f.write_all(&block[..take]).expect("write");
            left -= take as u64;
        }
        written += size;
        files.push(path);
        n += 1;
    }
    (written, files)
}

/// Write back dirty pages first, so neither side pays for the other's writes.
fn settle() {
    run(&mut Command::new("sync"));
}

fn sha256sum(files: &[PathBuf]) -> Duration {
    settle();
    let start = Instant::now();
    for chunk in files.chunks(500) {
        let status = Command::new("sha256sum")
            .args(chunk)
            .stdout(Stdio::null())
            .status()
            .expect("sha256sum");
        assert!(status.success());
    }
    start.elapsed()
}

fn run(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

/// `offload-master archive export … | offload-master archive import …`,
/// returning wall time and each process's peak RSS in bytes. Both
/// children are reaped by `wait_rss` (wait4), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn pipeline(
    master: &Path,
    keys: &Path,
    acl: &Path,
    item: &Path,
    out: &Path,
) -> (Duration, u64, u64) {
    settle();
    let start = Instant::now();
    let mut export = Command::new(master)
        .args(["archive", "export", "--key"])
        .arg(keys.join("signing-key.sec"))
        .arg(item)
        .stdout(Stdio::piped())
        .spawn()
        .expect("export");
    let pipe = export.stdout.take().expect("piped stdout");
    let import = Command::new(master)
        .args(["archive", "import", "--acl"])
        .arg(acl)
        .arg("--to")
        .arg(out)
        .stdin(pipe)
        .stdout(Stdio::null())
        .spawn()
        .expect("import");
    let export_rss = wait_rss(export.id());
    let import_rss = wait_rss(import.id());
    (start.elapsed(), export_rss, import_rss)
}

/// Reap a child and return its peak RSS in bytes.
fn wait_rss(pid: u32) -> u64 {
    let mut status = 0;
    // SAFETY: `rusage` is plain old data; all-zero bytes are a valid value.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are valid for writes.
    #[allow(unsafe_code)]
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} failed: status {status}"
    );
    usage.ru_maxrss as u64 * 1024
}
