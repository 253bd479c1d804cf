//! Benchmark (not a test): importing export streams into a Nix 2.8 store by
//! direct registration (`archive import --store local:…`, what the hook
//! does) against `nix-store --import` of the same stream into the same
//! (fresh) store path on the same machine.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p offload-tests --bench store_import
//! OFFLOAD_BENCH_MIB=256 OFFLOAD_BENCH_ITEMS=1000 cargo bench -p offload-tests --bench store_import
//! ```
//!
//! Two streams: a closure of large items (1 GiB in all by default, 16 MiB
//! items each referring to the previous one) and many small items (5,000
//! by default). Runs are interleaved, alternating which side goes first;
//! each prints both wall times and CPU times (user + system, from
//! `wait4`) and the ratios ours / Nix (target ≤ 1.0: not slower than Nix).
//! With thousands of small files most of the time is the kernel creating
//! inodes, the same work for both sides, and wall times vary with other
//! load on the machine: read the medians. Ours checks every signature
//! against the ACL; Nix checks none.

#![allow(clippy::print_stdout, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offload_tests::nixd::IsolatedNix;

const RUNS: usize = 5;

fn main() {
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mib = env_num("OFFLOAD_BENCH_MIB", 1024);
    let small = env_num("OFFLOAD_BENCH_ITEMS", 5000);
    let master = offload_tests::bin("offload-master");
    let tmp = tempfile::tempdir().expect("temp dir");
    let keys = tmp.path().join("keys");
    let acl = tmp.path().join("acl");
    offload_tests::key_and_acl(&keys, &acl);
    let target = tmp.path().join("target");
    let store_dir = target.join("store");

    let big_items = (mib / 16).max(1);
    let big = make_stream(
        &master,
        &keys,
        tmp.path(),
        "big",
        &store_dir,
        big_items,
        16 << 20,
    );
    let many = make_stream(&master, &keys, tmp.path(), "many", &store_dir, small, 200);
    for (label, stream, items) in [
        (
            format!("{} MiB closure ({big_items} items)", big_items * 16),
            &big,
            big_items,
        ),
        (format!("{small} small items"), &many, small),
    ] {
        let mut ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        for i in 0..RUNS {
            let (nix, ours) = if i % 2 == 0 {
                let nix = time_nix(&target, stream, items);
                (nix, time_ours(&master, &acl, &target, stream, items))
            } else {
                let ours = time_ours(&master, &acl, &target, stream, items);
                (time_nix(&target, stream, items), ours)
            };
            let ratio = ours.wall.as_secs_f64() / nix.wall.as_secs_f64();
            let cpu_ratio = ours.cpu.as_secs_f64() / nix.cpu.as_secs_f64();
            println!(
                "{label}, run {i}: nix-store --import {:.2} s (cpu {:.2} s), ours {:.2} s (cpu {:.2} s), ratio {ratio:.2} (cpu {cpu_ratio:.2})",
                nix.wall.as_secs_f64(),
                nix.cpu.as_secs_f64(),
                ours.wall.as_secs_f64(),
                ours.cpu.as_secs_f64()
            );
            ratios.push(ratio);
            cpu_ratios.push(cpu_ratio);
        }
        ratios.sort_by(f64::total_cmp);
        cpu_ratios.sort_by(f64::total_cmp);
        println!(
            "{label}: median ratio ours/nix {:.2} wall, {:.2} cpu (target <= 1.00)",
            ratios[RUNS / 2],
            cpu_ratios[RUNS / 2]
        );
    }
}

/// Wall-clock and CPU time of one import.
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// A signed export stream of `count` items of `size` bytes each in
/// `store_dir`, each referring to the one before.
fn make_stream(
    master: &Path,
    keys: &Path,
    tmp: &Path,
    tag: &str,
    store_dir: &Path,
    count: u64,
    size: usize,
) -> PathBuf {
    let src = tmp.join(format!("src-{tag}"));
    fs::create_dir_all(&src).expect("mkdir");
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ count;
    let mut previous: Option<String> = None;
    let mut entries = Vec::new();
    for i in 0..count {
        let mut hash = String::new();
        for _ in 0..32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            hash.push(b"0123456789abcdfghijklmnpqrsvwxyz"[(state % 32) as usize] as char);
        }
        let name = format!("{hash}-{tag}-{i}");
        let mut data = vec![0u8; size];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        if let Some(p) = &previous {
            let text = format!("{}/{p}", store_dir.display());
            data[..text.len().min(size)].copy_from_slice(&text.as_bytes()[..text.len().min(size)]);
        }
        fs::write(src.join(&name), &data).expect("write");
        entries.push(src.join(&name));
        previous = Some(name);
    }
    let stream = tmp.join(format!("{tag}.stream"));
    let out = fs::File::create(&stream).expect("stream file");
    let status = Command::new(master)
        .args(["archive", "export", "--key"])
        .arg(keys.join("signing-key.sec"))
        .arg("--store-dir")
        .arg(store_dir)
        .args(&entries)
        .stdout(out)
        .status()
        .expect("export");
    assert!(status.success());
    offload_files::atomic::remove_tree(&src).expect("clean up");
    stream
}

fn fresh(target: &Path) -> IsolatedNix {
    offload_files::atomic::remove_tree(target).expect("clean up");
    fs::create_dir_all(target).expect("mkdir");
    run(&mut Command::new("sync"));
    IsolatedNix::at(target)
}

fn count_valid(nix: &IsolatedNix) -> u64 {
    let db = rusqlite::Connection::open(nix.db()).expect("db");
    db.query_row("select count(*) from ValidPaths", [], |r| {
        r.get::<_, i64>(0)
    })
    .expect("count") as u64
}

fn time_nix(target: &Path, stream: &Path, items: u64) -> Timing {
    let nix = fresh(target);
    let mut cmd = nix.command("nix-store");
    cmd.arg("--import")
        .stdin(fs::File::open(stream).expect("stream"))
        .stdout(Stdio::null());
    let t = timed(&mut cmd);
    assert_eq!(count_valid(&nix), items);
    t
}

fn time_ours(master: &Path, acl: &Path, target: &Path, stream: &Path, items: u64) -> Timing {
    let nix = fresh(target);
    // The same empty Nix database Nix would create on first use.
    nix.run("nix-store", &["--init"]);
    let mut cmd = Command::new(master);
    cmd.args(["archive", "import", "--acl"])
        .arg(acl)
        .arg("--store")
        .arg(format!("local:{}", nix.state_dir().display()))
        .arg("--store-dir")
        .arg(nix.store_dir())
        .stdin(fs::File::open(stream).expect("stream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = timed(&mut cmd);
    assert_eq!(count_valid(&nix), items);
    t
}

/// Run a command that must succeed; its wall time and CPU time. The child
/// is reaped by `wait4`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command) -> Timing {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: `rusage` is plain old data; all-zero bytes are a valid value.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is our own unreaped child; both pointers are valid for writes.
    #[allow(unsafe_code)]
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: status {status}"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Timing {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}
