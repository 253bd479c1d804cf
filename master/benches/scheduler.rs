//! Benchmark (not a test): scheduling decisions per second with pools of
//! 1, 100 and 1000 machines. Target: at most 100 µs per decision at 1000.
//!
//! `cargo bench -p offload-master --bench scheduler`

#![allow(clippy::print_stdout, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use offload_master::pool::{Advert, Pool};
use offload_master::scheduler::{Policy, Request, decide};

const TARGET_US: f64 = 100.0;

fn pool(n: usize) -> Pool {
    let systems = [
        "x86_64-linux",
        "i686-linux",
        "aarch64-linux",
        "armhf-linux",
        "powerpc64le-linux",
    ];
    let features = ["kvm", "big-parallel", "benchmark", "nixos-test"];
    let mut pool = Pool::new(30_000);
    for i in 0..n {
        let advert = Advert {
            instance: format!("agent-{i}"),
            host: format!("host-{i}.local"),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1))],
            port: 7441,
            systems: vec![systems[i % 5].into(), systems[(i + 1) % 5].into()],
            features: features
                .iter()
                .take(i % 5)
                .map(|f| (*f).to_owned())
                .collect(),
            speed: 1.0 + (i % 7) as f64,
            slots: 4,
            free: (i % 3) as u32,
            load: (i % 10) as f64 / 10.0,
            disk: (i as u64 % 50) << 26,
            key: Some(format!("KEY{i}")),
            ssh_port: Some(22),
            draining: i % 31 == 0,
            stopping: false,
        };
        pool.discovered(advert, i % 13 != 0, 0);
    }
    pool
}

fn main() {
    let features = vec!["kvm".to_owned()];
    let bytes = |m: &offload_master::pool::Machine| Some(m.name.len() as u64 * 1_000_000);
    for n in [1usize, 100, 1000] {
        let pool = pool(n);
        let request = Request {
            system: "x86_64-linux",
            required_features: &features,
            local_slot_free: true,
            prefer_local: false,
            local_speed: 1.0,
            expected_build_secs: 60.0,
            missing_bytes: &bytes,
            in_flight: &|_| 0,
        };
        let policy = Policy::default();
        let iterations = (200_000 / n).max(200);
        let start = Instant::now();
        for seed in 0..iterations as u64 {
            black_box(decide(black_box(&pool), &request, &policy, 1_000, seed));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        println!(
            "{n:>5} machines: {us:>8.2} µs per decision ({:>9.0} decisions/s); {:.2}× the 100 µs budget",
            1e6 / us,
            us / TARGET_US
        );
    }
}
