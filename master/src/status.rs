//! `offload-master status`: the merged pool with live state, as a table or
//! as JSON (one object per machine).

use std::fmt::Write as _;

use crate::pool::{Health, Machine, Pool};

fn health(m: &Machine) -> &'static str {
    match m.live.health {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Unhealthy { .. } => "unhealthy",
        Health::Vanished { .. } => "vanished",
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
        "{:<24} {:<10} {:<9} {:>5} {:>5} {:>5} {:>9}  {:<10} systems",
        "NAME", "SOURCE", "HEALTH", "SPEED", "FREE", "LOAD", "DISK GiB", "AUTHORIZED"
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
            "{:<24} {:<10} {:<9} {:>5.2} {:>5} {:>5} {:>9}  {:<10} {}",
            m.name,
            m.source.as_str(),
            health(m),
            m.speed,
            free,
            load,
            disk,
            if m.authorized { "yes" } else { "NO" },
            m.systems.join(",")
        );
    }
    out
}
