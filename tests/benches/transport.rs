//! Benchmark (not a test): the agent's QUIC service against SSH between
//! two hosts of a namespace LAN, in one run.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p offload-tests --bench transport
//! OFFLOAD_BENCH_MIB=256 OFFLOAD_BENCH_ITEMS=500 cargo bench -p offload-tests --bench transport
//! ```
//!
//! The same signed archives — one item of 1 GiB, and 2,000 small items —
//! go agent → master: over QUIC as the agent's export (host 1 → a client
//! on host 0), and over `ssh` with Debian's default cipher and `cat` on
//! the far side. Printed: throughput of each and their ratio (target
//! QUIC ≥ 1.5× ssh), the time until 2,000 small items are imported on the
//! master (target ≤ 2 s), the QUIC handshake (target ≤ 5 ms) and request
//! round trip (target ≤ 1 ms), and the agent's peak RSS while 2 GiB pass
//! (target ≤ 64 MiB). Needs root (namespaces) and `openssh-server`.

#![allow(clippy::print_stdout, missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_core::store_path::StoreDir;
use offload_master::agent_link::{AgentLink, Expect};
use offload_store::local::Signatures;
use offload_store::spec::StoreSpec;
use offload_store::store::Store;
use offload_tests::lan::Lan;
use offload_tests::sshd::Sshd;
use offload_tests::{bin, key_and_acl};

const RUNS: usize = 3;

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A store item directory `DIR/<hash>-<name>` named with a hash of `n`.
fn item_dir(dir: &Path, n: u64, name: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{name}{n}"));
    let hash = offload_core::nixbase32::encode(&digest[..20]);
    dir.join(format!("{hash}-{name}"))
}

/// Pseudo-random bytes (xorshift), as incompressible as real outputs.
fn fill(file: &Path, bytes: u64) {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(file).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mib = env_num("OFFLOAD_BENCH_MIB", 1024);
    let items = env_num("OFFLOAD_BENCH_ITEMS", 2000);
    let lan = Lan::new(2);
    let tmp = tempfile::Builder::new()
        .prefix("bench-transport-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    key_and_acl(&dir.join("master"), &dir.join("agent-acl"));
    key_and_acl(&dir.join("agent"), &dir.join("master-acl"));
    let master = Arc::new(
        offload_files::key_file::load_secret(&dir.join("master/signing-key.sec")).unwrap(),
    );
    let expect = Expect {
        acl: Arc::new(offload_files::acl_file::load(&dir.join("master-acl")).unwrap()),
        fingerprint: None,
    };

    // The archives, signed by the master (sent to the agent first).
    let store_dir = StoreDir::default();
    let big_dir = dir.join("big");
    let small_dir = dir.join("small");
    std::fs::create_dir_all(&big_dir).unwrap();
    std::fs::create_dir_all(&small_dir).unwrap();
    let big = item_dir(&big_dir, 0, "big");
    fill(&big, mib << 20);
    let smalls: Vec<PathBuf> = (0..items)
        .map(|i| {
            let p = item_dir(&small_dir, i, "small");
            fill(&p, 4096 + (i % 7) * 512);
            p
        })
        .collect();
    let write_stream = |paths: &[PathBuf], file: &Path| -> Vec<String> {
        let f = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
        offload_files::export_dir::export_paths(paths, &store_dir, &master, f)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let big_paths = write_stream(std::slice::from_ref(&big), &dir.join("big.stream"));
    let small_paths = write_stream(&smalls, &dir.join("small.stream"));
    std::fs::remove_file(&big).unwrap();
    let agent_big_bytes = || std::fs::metadata(dir.join("agent-big.stream")).map_or(0, |m| m.len());

    // The agent on host 1; sshd there too.
    let mut agent = lan.command(1, bin("offload-agent"));
    agent
        .env("RUST_LOG", "warn")
        .args([
            "run",
            "--no-advertise",
            "--listen",
            "10.77.0.2:7441",
            "--speed",
            "1",
            "--systems",
            "x86_64-linux",
        ])
        .arg("--key")
        .arg(dir.join("agent/signing-key.sec"))
        .arg("--acl")
        .arg(dir.join("agent-acl"))
        .arg("--store")
        .arg(format!("embedded:{}", dir.join("agent-store").display()))
        .arg("--state-dir")
        .arg(dir.join("agent-state"));
    let agent_pid = lan.spawn(agent);
    let sshd = Sshd::start(&lan, 1, &dir.join("sshd"));
    let addr: std::net::SocketAddr = "10.77.0.2:7441".parse().unwrap();

    // Send the archives to the agent, and keep its signed exports for
    // ssh to send the same bytes.
    let connect = || async {
        for _ in 0..100 {
            if let Ok(l) = AgentLink::connect_quic(addr, Arc::clone(&master), expect.clone()).await
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the agent does not answer");
    };
    let (handshake, trip) = on_host(&lan, 0, async {
        let link = connect().await;
        for stream in ["big.stream", "small.stream"] {
            let mut f = tokio::fs::File::open(dir.join(stream)).await.unwrap();
            link.import(&mut f).await.expect("import into the agent");
        }
        for (paths, file) in [
            (&big_paths, "agent-big.stream"),
            (&small_paths, "agent-small.stream"),
        ] {
            let mut f = tokio::fs::File::create(dir.join(file)).await.unwrap();
            link.export(paths, &mut f).await.unwrap();
        }
        let mut handshakes = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let l = AgentLink::connect_quic(addr, Arc::clone(&master), expect.clone())
                .await
                .unwrap();
            handshakes.push(t.elapsed());
            l.close().await;
        }
        let mut trips = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            link.status().await.unwrap();
            trips.push(t.elapsed());
        }
        link.close().await;
        (median(handshakes), median(trips))
    });
    let big_bytes = agent_big_bytes();
    let acl = offload_files::acl_file::load(&dir.join("master-acl")).unwrap();
    let import = |stream: Vec<u8>, root: PathBuf| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let mut store = Store::open(&StoreSpec::Embedded(root), StoreDir::default())
                    .await
                    .unwrap();
                store
                    .import(&stream[..], Signatures::Check(&acl), &mut |_| {})
                    .await
                    .unwrap();
            });
    };
    let ssh_cat = |file: &str| {
        sshd.command(
            &lan,
            0,
            &sshd.known_hosts,
            &["cat", &dir.join(file).display().to_string()],
        )
    };

    // Interleaved runs: QUIC, the raw QUIC ceiling, ssh; then the small
    // items both ways.
    let (mut quic_big, mut raw, mut ssh_big, mut quic_small, mut ssh_small) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        quic_big.push(on_host(&lan, 0, async {
            let link = connect().await;
            let t = Instant::now();
            let n = link
                .export(&big_paths, &mut tokio::io::sink())
                .await
                .unwrap();
            let took = t.elapsed();
            assert_eq!(n, big_bytes);
            link.close().await;
            took
        }));
        raw.push(raw_quic(&lan, dir, &master));
        let t = Instant::now();
        let out = ssh_cat("agent-big.stream")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        ssh_big.push(t.elapsed());
        assert!(out.success());

        let (t, stream) = on_host(&lan, 0, async {
            let link = connect().await;
            let t = Instant::now();
            let mut stream = Vec::new();
            link.export(&small_paths, &mut stream).await.unwrap();
            link.close().await;
            (t, stream)
        });
        import(stream, dir.join(format!("master-quic-{run}")));
        quic_small.push(t.elapsed());
        let t = Instant::now();
        let stream = ssh_cat("agent-small.stream").output().unwrap().stdout;
        import(stream, dir.join(format!("master-ssh-{run}")));
        ssh_small.push(t.elapsed());
    }
    let hwm = std::fs::read_to_string(format!("/proc/{agent_pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    let (quic_big, quic_small, raw_quic) = (median(quic_big), median(quic_small), median(raw));
    let (ssh_big, ssh_small) = (median(ssh_big), median(ssh_small));
    let mibs = |d: Duration| big_bytes as f64 / f64::from(1 << 20) / d.as_secs_f64();
    println!("agent → master, one item of {mib} MiB (median of {RUNS}):");
    println!(
        "  QUIC {:.0} MiB/s, ssh {:.0} MiB/s: QUIC ÷ ssh = {:.2} (target ≥ 1.5)",
        mibs(quic_big),
        mibs(ssh_big),
        mibs(quic_big) / mibs(ssh_big)
    );
    println!(
        "  (the same bytes on a raw QUIC stream: {:.0} MiB/s, ÷ ssh = {:.2}: the transport's ceiling here)",
        mibs(raw_quic),
        mibs(raw_quic) / mibs(ssh_big)
    );
    println!("{items} small items until imported on the master (median of {RUNS}):");
    println!(
        "  QUIC {:.2} s (target ≤ 2 s), ssh {:.2} s: QUIC ÷ ssh time = {:.2}",
        quic_small.as_secs_f64(),
        ssh_small.as_secs_f64(),
        quic_small.as_secs_f64() / ssh_small.as_secs_f64()
    );
    println!(
        "QUIC handshake (connect + hello) median {:.2} ms (target ≤ 5 ms); request round trip median {:.3} ms (target ≤ 1 ms)",
        handshake.as_secs_f64() * 1e3,
        trip.as_secs_f64() * 1e3
    );
    println!(
        "agent peak RSS after {} MiB passed: {:.1} MiB (target ≤ 64 MiB)",
        (RUNS as u64 + 2) * (big_bytes >> 20),
        hwm as f64 / 1024.0
    );
}

/// A multi-threaded runtime with `workers` workers.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Run `f` to completion on a runtime of its own, in a thread inside
/// host `i`'s network namespace.
fn on_host<T: Send>(lan: &Lan, i: usize, f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            lan.enter(i);
            runtime(2).block_on(f)
        })
        .join()
        .unwrap()
    })
}

/// Time to send `agent-big.stream` on one raw QUIC stream from a server
/// on host 1 to a client on host 0.
fn raw_quic(lan: &Lan, dir: &Path, key: &Arc<offload_core::keys::SecretKey>) -> Duration {
    use offload_net::identity::PeerCheck;
    use offload_net::quic;
    let file = dir.join("agent-big.stream");
    let server_key =
        Arc::new(offload_files::key_file::load_secret(&dir.join("agent/signing-key.sec")).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let bytes = std::fs::read(&file).unwrap();
    std::thread::scope(|s| {
        let bytes = &bytes;
        s.spawn(move || {
            lan.enter(1);
            runtime(1).block_on(async {
                let config =
                    quic::server_config(server_key, Arc::new(PeerCheck::new(|_| Ok(())))).unwrap();
                let endpoint = quic::server(config, "10.77.0.2:7442".parse().unwrap()).unwrap();
                tx.send(()).unwrap();
                {
                    let conn = endpoint.accept().await.unwrap().await.unwrap();
                    let (mut send, _recv) = conn.accept_bi().await.unwrap();
                    for chunk in bytes.chunks(1 << 20) {
                        send.write_all(chunk).await.unwrap();
                    }
                    send.finish().unwrap();
                    let _ = send.stopped().await;
                }
            });
        });
        rx.recv().unwrap();
        s.spawn(move || {
            lan.enter(0);
            runtime(1).block_on(async {
                {
                    let addr = "10.77.0.2:7442".parse().unwrap();
                    let config =
                        quic::client_config(Arc::clone(key), Arc::new(PeerCheck::new(|_| Ok(()))))
                            .unwrap();
                    let endpoint = quic::client(addr).unwrap();
                    let conn = endpoint
                        .connect_with(config, addr, "raw")
                        .unwrap()
                        .await
                        .unwrap();
                    let t = Instant::now();
                    let (mut send, mut recv) = conn.open_bi().await.unwrap();
                    tokio::io::AsyncWriteExt::write_all(&mut send, b"go")
                        .await
                        .unwrap();
                    while recv.read_chunk(usize::MAX, true).await.unwrap().is_some() {}
                    let took = t.elapsed();
                    conn.close(0u32.into(), b"");
                    took
                }
            })
        })
        .join()
        .unwrap()
    })
}
