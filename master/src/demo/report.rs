//! What the demo prints: the machines the master found, one row per
//! derivation (where it went, bytes each way, build and transfer time),
//! a summary, or all of it as JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

use super::daemon::Outcome;
use super::dag::Node;

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// The machines `serve` linked to.
pub(super) fn machines_table(machines: &[Value]) -> String {
    let mut out = String::from("\nMachines discovered (mDNS) and linked (QUIC, keys proven):\n");
    let _ = writeln!(
        out,
        "  {:<14} {:<32} {:<10} {:>5} {:>5}  ADDRESS",
        "MACHINE", "SYSTEMS", "FEATURES", "SPEED", "SLOTS"
    );
    for m in machines {
        let _ = writeln!(
            out,
            "  {:<14} {:<32} {:<10} {:>5} {:>5}  {}",
            m["name"].as_str().unwrap_or("?"),
            list(&m["systems"]),
            list(&m["features"]),
            m["speed"]
                .as_f64()
                .map_or("?".into(), |s| format!("{s:.1}")),
            m["parallel-builds"].as_u64().unwrap_or(0),
            list(&m["addresses"]),
        );
    }
    out.push('\n');
    out
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// One row per derivation and a summary.
pub(super) fn table(nodes: &[Node], outcomes: &[Outcome], wall: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<16} {:<14} {:<7} {:>10} {:>10} {:>8} {:>9} {:>7}",
        "DERIVATION", "MACHINE", "STATUS", "SENT", "RECEIVED", "BUILD", "TRANSFER", "TOTAL"
    );
    let mut per_machine: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut sent, mut received) = (0u64, 0u64);
    for (node, o) in nodes.iter().zip(outcomes) {
        let _ = writeln!(
            out,
            "  {:<16} {:<14} {:<7} {:>10} {:>10} {:>7.2}s {:>8.2}s {:>6.2}s",
            node.name,
            o.machine,
            o.status,
            kib(o.bytes_sent),
            kib(o.bytes_received),
            o.build_secs,
            o.transfer_secs,
            o.seconds
        );
        *per_machine.entry(o.machine.as_str()).or_default() += 1;
        sent += o.bytes_sent;
        received += o.bytes_received;
    }
    let built = outcomes.iter().filter(|o| o.status == "built").count();
    let spread: Vec<String> = per_machine
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{built} of {} derivations built remotely ({}), {} sent, {} received, {wall:.1} s in all.",
        nodes.len(),
        spread.join(", "),
        kib(sent),
        kib(received)
    );
    let _ = writeln!(
        out,
        "Every output is registered in the daemon host's store, signed by the agent that built it and checked against the host's ACL."
    );
    out
}

/// The same facts as JSON.
pub(super) fn json(nodes: &[Node], outcomes: &[Outcome], machines: &[Value], wall: f64) -> String {
    let builds: Vec<Value> = nodes
        .iter()
        .zip(outcomes)
        .map(|(n, o)| {
            json!({
                "derivation": n.written.path.to_string(),
                "name": n.name,
                "machine": o.machine,
                "status": o.status,
                "bytes-sent": o.bytes_sent,
                "bytes-received": o.bytes_received,
                "build-seconds": o.build_secs,
                "transfer-seconds": o.transfer_secs,
                "seconds": o.seconds,
            })
        })
        .collect();
    let doc = json!({
        "builds": builds,
        "machines": machines,
        "built": outcomes.iter().filter(|o| o.status == "built").count(),
        "total": nodes.len(),
        "wall-seconds": wall,
    });
    format!("{doc:#}\n")
}
