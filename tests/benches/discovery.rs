//! Benchmark (not a test): discovery on a namespace LAN (needs root, like
//! the LAN tests; nothing touches the host namespace).
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p offload-tests --bench discovery
//! ```
//!
//! Over 20 runs: agent start → listed by a running `serve`, and agent stop
//! → gone from it (p50, p95; targets p50 ≤ 1.2 s and p95 ≤ 1.5 s). Then
//! steady-state mDNS packets per agent per minute, counted with tcpdump on
//! the master's interface over 30 s and scaled.

#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offload_tests::bin;
use offload_tests::lan::Lan;

const RUNS: usize = 20;

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn listed(lan: &Lan, socket: &Path, name: &str) -> bool {
    let mut cmd = lan.command(1, bin("offload-master"));
    cmd.env("RUST_LOG", "error")
        .args(["status", "--json", "--socket", path(socket)]);
    cmd.output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{name}.local\"")))
}

fn wait(limit: Duration, ok: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // Checked first: a missing program says which package to install.
    let tcpdump_bin = offload_tests::require_program("tcpdump", "tcpdump");
    let lan = Lan::new(2);
    let tmp = tempfile::tempdir().expect("temp dir");
    let socket = tmp.path().join("master.sock");
    let mut serve = lan.command(1, bin("offload-master"));
    serve.env("RUST_LOG", "warn").args([
        "serve",
        "--socket",
        path(&socket),
        "--machines",
        path(&tmp.path().join("none.scm")),
        "--acl",
        path(&tmp.path().join("acl")),
        "--interface",
        &lan.hosts()[1].iface,
    ]);
    lan.spawn(serve);
    wait(Duration::from_secs(5), || socket.exists()).expect("serve starts");
    let masters = tmp.path().join("masters-acl");
    offload_tests::key_and_acl(&tmp.path().join("master"), &masters);
    let agent = |name: &str| {
        let (mut cmd, _) = offload_tests::agents::lan_agent(&lan, 0, name, &masters, tmp.path());
        cmd.args(["--systems", "x86_64-linux", "--speed", "1"]);
        lan.spawn(cmd)
    };
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let name = format!("bench{i}");
        let t0 = Instant::now();
        let pid = agent(&name);
        wait(Duration::from_secs(10), || listed(&lan, &socket, &name)).expect("agent appears");
        starts.push(t0.elapsed());
        // Agents run a while before they stop, as real ones do.
        std::thread::sleep(Duration::from_secs(3));
        let t1 = Instant::now();
        lan.signal_only(pid, "TERM");
        wait(Duration::from_secs(10), || !listed(&lan, &socket, &name)).expect("agent goes");
        stops.push(t1.elapsed());
        lan.signal(pid, "KILL");
    }
    starts.sort();
    stops.sort();
    println!(
        "start → present: p50 {:.2} s, p95 {:.2} s (target p50 ≤ 1.2 s)",
        percentile(&starts, 0.5).as_secs_f64(),
        percentile(&starts, 0.95).as_secs_f64()
    );
    println!(
        "stop → gone:     p50 {:.2} s, p95 {:.2} s (target p95 ≤ 1.5 s)",
        percentile(&stops, 0.5).as_secs_f64(),
        percentile(&stops, 0.95).as_secs_f64()
    );

    // Steady state: one agent, tcpdump on the master's side of the LAN.
    let pid = agent("steady");
    wait(Duration::from_secs(10), || listed(&lan, &socket, "steady"))
        .expect("steady agent appears");
    std::thread::sleep(Duration::from_secs(3));
    let capture = tmp.path().join("mdns.pcap");
    let mut tcpdump = lan.command(1, &tcpdump_bin);
    tcpdump
        .args([
            "-i",
            &lan.hosts()[1].iface,
            "-w",
            path(&capture),
            "-U",
            "udp port 5353 and src host 10.77.0.1",
        ])
        .stderr(Stdio::null());
    let dump = lan.spawn(tcpdump);
    std::thread::sleep(Duration::from_secs(30));
    lan.signal(dump, "INT");
    let count = Command::new(&tcpdump_bin)
        .args(["-r", path(&capture), "-n"])
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump -r");
    let packets = String::from_utf8_lossy(&count.stdout).lines().count();
    println!(
        "steady state: {} mDNS packets per agent per minute (from the agent, {} in 30 s)",
        packets * 2,
        packets
    );
    lan.signal(pid, "TERM");
}
