//! `offload-master status`: the merged pool with live state, as a table or
//! as JSON (one object per machine).

use std::fmt::Write as _;

use crate::pool::{Health, Link, Machine, Pool};

/// `ok` only when the master and the agent proved their keys to each
/// other and both accepted; otherwise why not.
pub fn health(m: &Machine) -> String {
    match (&m.live.health, &m.live.link) {
        (Health::Vanished { .. }, _) => "vanished (said goodbye)".into(),
        (_, Link::Ok) => "ok".into(),
        (_, Link::Failed { reason, .. }) => reason.clone(),
        _ if !m.authorized => "unauthorized: its key is not in our ACL".into(),
        (Health::Unhealthy { .. }, Link::Unknown) => {
            "unreachable: its advertisement expired without a goodbye".into()
        }
        _ => "unknown".into(),
    }
}

/// The machines status shows: an agent that said goodbye is kept by the
/// pool for the grace period (so the hook postpones) but is no longer listed.
fn listed(pool: &Pool) -> impl Iterator<Item = &Machine> {
    // …unless machines.scm names it: the operator's machine stays listed.
    pool.machines()
        .iter()
        .filter(|m| m.static_entry.is_some() || !matches!(m.live.health, Health::Vanished { .. }))
}

fn port(m: &Machine) -> u16 {
    m.advert.as_ref().map_or(m.ssh_port, |a| a.port)
}

/// JSON: one object per machine with `name`, `source`, `systems`,
/// `features`, `speed`, `parallel-builds`, `free`, `load`, `disk`, `key`,
/// `authorized`, `addresses`, `port`, `health` (unknown values are `null`).
pub fn json(pool: &Pool) -> String {
    let machines: Vec<serde_json::Value> = listed(pool)
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "source": m.source.as_str(),
                "systems": m.systems,
                "features": m.features,
                "speed": m.speed,
                "parallel-builds": m.parallel_builds,
                "free": m.live.free_slots,
                "load": m.live.load,
                "disk": m.live.disk,
                "key": m.key,
                "authorized": m.authorized,
                "addresses": m.advert.as_ref().map(|a| a.addresses.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                "port": port(m),
                "health": health(m),
                "draining": m.live.draining,
                "link": matches!(m.live.link, Link::Ok),
                "transport": m.live.transport,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&machines).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// A table for people.
pub fn table(pool: &Pool) -> String {
    let mut out = String::new();
    if pool.machines().is_empty() {
        out.push_str(
            "no build machines: machines.scm is missing or empty, and no agent answered\n",
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>5} {:>5} {:>5} {:>9}  {:<10} {:<24} HEALTH",
        "NAME", "SOURCE", "SPEED", "FREE", "LOAD", "DISK GiB", "AUTHORIZED", "SYSTEMS"
    );
    for m in listed(pool) {
        let free = m
            .live
            .free_slots
            .map_or_else(|| "?".into(), |f| format!("{f}/{}", m.parallel_builds));
        let load = m
            .live
            .load
            .map_or_else(|| "?".into(), |l| format!("{l:.2}"));
        let disk = m.live.disk.map_or_else(
            || "?".into(),
            |d| format!("{:.1}", d as f64 / f64::from(1u32 << 30)),
        );
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>5.2} {:>5} {:>5} {:>9}  {:<10} {:<24} {}",
            m.name,
            m.source.as_str(),
            m.speed,
            free,
            load,
            disk,
            if m.authorized { "yes" } else { "NO" },
            m.systems.join(","),
            health(m),
        );
    }
    out
}
