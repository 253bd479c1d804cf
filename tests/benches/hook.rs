//! Benchmark (prints figures, asserts nothing): the Guix hook on a LAN of
//! network namespaces (root), with `serve` warm.
//!
//! * Decision latency, request line to reply, over 1,000 requests to one
//!   hook (declines: the plan comes from `serve` over its socket) and over
//!   30 hooks that accept (locality: the best three agents asked at once
//!   what they lack; then a slot lock and a lease),
//!   beside what `guix offload` pays per machine probed: one `ssh HOST cat
//!   /proc/loadavg` to a host with a real sshd.
//! * The 30-derivation DAG (each builder sleeps `OFFLOAD_BENCH_WORK`
//!   seconds, 0.5 by default, standing for real work) through hooks on 3
//!   agents, against building it on one embedded store with 2 jobs (this
//!   machine's cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_core::store_path::{StoreDir, StorePath};
use offload_store::embedded::build::BuildOptions;
use offload_store::local::Signatures;
use offload_store::spec::StoreSpec;
use offload_store::store::Store;
use offload_tests::agents::{Drvs, lan_agent, runtime};
use offload_tests::guix_host::{GuixHost, build_all, dag30, request_line};
use offload_tests::lan::Lan;
use offload_tests::sshd::Sshd;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::print_stdout)]
fn main() {
    assert!(
        offload_tests::running_as_root(),
        "the hook benchmark builds network namespaces: run it as root"
    );
    let work: f64 = std::env::var("OFFLOAD_BENCH_WORK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    let rt = runtime();
    let lan = Lan::new(4);
    let host = GuixHost::new(&lan, 0);
    let dir = tempfile::tempdir().unwrap();
    let masters = dir.path().join("masters-acl");
    offload_tests::authorize_key(&masters, &host.etc().join("signing-key.pub"));
    for (i, name) in ["bench1", "bench2", "bench3"].into_iter().enumerate() {
        let (mut cmd, keys) = lan_agent(&lan, i + 1, name, &masters, dir.path());
        cmd.args(["--systems", &offload_tests::current_system()])
            .args(["--parallel-builds", "2", "--update-secs", "0.5"]);
        if i == 1 {
            cmd.args(["--features", "big"]);
        }
        host.authorize(&[&keys.join("signing-key.pub")]);
        lan.spawn(cmd);
    }
    lan.spawn(host.serve_command(&lan, 0));
    let linked = offload_tests::agents::wait_linked(&host.socket(), 3);
    assert!(linked, "serve did not link to the agents");
    let sshd = Sshd::start(&lan, 1, &dir.path().join("sshd"));
    let system = offload_tests::current_system();
    let drvs = Drvs::new();

    // 1. Decisions.
    let small = drvs.sh("bench-small", "echo small > $out");
    let closure = drvs.closure(&[&small]);
    rt.block_on(async {
        let stream = drvs.signed_export(&closure, &host.key).await;
        host.seed(&stream).await;
    });
    let mut hook = host.spawn_hook([&system, "0", "0", "0"]);
    let decline = request_line(true, "riscv64-linux", &small, &[]);
    let mut declines = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let reply = hook.ask(&decline);
        declines.push(t.elapsed());
        assert_eq!(reply, "decline");
    }
    hook.close_stdin();
    let _ = hook.finish();
    let mut accepts = Vec::new();
    for _ in 0..30 {
        let mut hook = host.spawn_hook([&system, "0", "0", "0"]);
        let t = Instant::now();
        let reply = hook.ask_until_accepted(
            &request_line(true, &system, &small, &[]),
            Duration::from_secs(30),
        );
        accepts.push(t.elapsed());
        assert_eq!(reply, "accept", "{:?}", hook.chatter);
        let (inputs, outputs) = rt.block_on(host.accept_lines(&small));
        hook.send_paths(&inputs, &outputs);
        let end = hook.finish();
        assert_eq!(end.code(), Some(0), "{end:?}");
    }
    let mut ssh = Vec::new();
    for _ in 0..20 {
        let mut cmd = sshd.command(&lan, 0, &sshd.known_hosts, &["cat", "/proc/loadavg"]);
        let t = Instant::now();
        let out = cmd.output().unwrap();
        ssh.push(t.elapsed());
        assert!(out.status.success());
    }
    declines.sort();
    accepts.sort();
    ssh.sort();
    let ssh_p50 = percentile(&ssh, 0.5);

    // 2. The DAG, remote then local.
    let list: Vec<String> = drvs
        .instantiate(&dag30(&format!("/bin/sleep {work};")))
        .lines()
        .map(str::to_owned)
        .collect();
    let roots: Vec<&str> = list.iter().map(String::as_str).collect();
    let closure = drvs.closure(&roots);
    let stream = rt.block_on(drvs.signed_export(&closure, &host.key));
    rt.block_on(host.seed(&stream));
    let t = Instant::now();
    build_all(&host, &list, 8);
    let remote = t.elapsed();
    let local_dir = tempfile::tempdir().unwrap();
    let local = rt.block_on(async {
        let mut store = Store::open(
            &StoreSpec::Embedded(local_dir.path().to_owned()),
            StoreDir::default(),
        )
        .await
        .unwrap();
        store
            .import(&stream[..], Signatures::Ignore, &mut |_| {})
            .await
            .unwrap();
        let paths: Vec<StorePath> = list.iter().map(|p| StorePath::parse(p).unwrap()).collect();
        let opts = BuildOptions {
            max_jobs: 2,
            ..BuildOptions::default()
        };
        let t = Instant::now();
        let results = store.build(&paths, &opts, &mut |_| {}).await.unwrap();
        assert_eq!(results.len(), 30);
        t.elapsed()
    });

    println!("hook decisions with serve warm (request line → reply):");
    println!(
        "  decline  p50 {:.3} ms  p99 {:.3} ms  (1000 requests, one hook)",
        ms(percentile(&declines, 0.5)),
        ms(percentile(&declines, 0.99))
    );
    println!(
        "  accept   p50 {:.3} ms  p99 {:.3} ms  (30 hooks: 3 agents asked what they lack, slot lock, lease)",
        ms(percentile(&accepts, 0.5)),
        ms(percentile(&accepts, 0.99))
    );
    println!(
        "  ssh HOST cat /proc/loadavg (guix offload's probe)  p50 {:.3} ms",
        ms(ssh_p50)
    );
    println!(
        "  ratio: decline p50 ÷ ssh probe = {:.4}; accept p50 ÷ ssh probe = {:.3} (target: decision p50 ≤ 2 ms)",
        ms(percentile(&declines, 0.5)) / ms(ssh_p50),
        ms(percentile(&accepts, 0.5)) / ms(ssh_p50)
    );
    println!("30-derivation DAG, each builder sleeping {work} s:");
    println!(
        "  3 agents through hooks {:.2} s; one embedded store, 2 jobs {:.2} s; ratio {:.2}",
        remote.as_secs_f64(),
        local.as_secs_f64(),
        remote.as_secs_f64() / local.as_secs_f64()
    );
    let _ = Arc::new(());
}
