//! What the hook answers the daemon, decided from the pool: the usable
//! machines best first, or why none is usable (postpone) or none could
//! ever be (decline). Pure; `serve` computes it for the hook and sends it
//! over its socket as one JSON line.

use serde::{Deserialize, Serialize};

use crate::pool::{Health, Link, LinkFailure, LinkTarget, Machine, Pool};
use crate::scheduler::{self, Policy, Verdict};

/// A machine to try, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its name, for messages and `@ build-remote`.
    pub name: String,
    /// The slot directory is `NAME:PORT` (as Guix names it for static
    /// machines: host name and SSH port).
    pub slot_name: String,
    /// See `slot_name`.
    pub slot_port: u16,
    /// Its build slots.
    pub slots: u32,
    /// Where its agent listens and which key it must prove.
    pub target: LinkTarget,
    /// Estimated seconds to completion, inputs already there.
    pub estimate_secs: f64,
    /// Bytes per second expected to it (measured, or the default).
    pub throughput: f64,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    /// Try these, best first.
    Accept(Vec<Choice>),
    /// Build locally; why.
    Decline(String),
    /// Ask again later; why.
    Postpone(String),
}

/// The estimate given to a machine that looked full when last polled.
const BUSY_ESTIMATE_SECS: f64 = 1e9;

/// The request as the planner sees it.
pub struct Ask<'a> {
    /// The derivation's system.
    pub system: &'a str,
    /// Its required features.
    pub features: &'a [String],
    /// Whether the daemon could build it locally now.
    pub local_slot_free: bool,
}

fn choice(m: &Machine, estimate_secs: f64) -> Option<Choice> {
    let target = m.link_target()?;
    let (slot_name, slot_port) = match (&m.static_entry, &m.advert) {
        (Some(s), _) => (s.name.clone(), s.port),
        (None, Some(a)) => (a.host.clone(), a.port),
        (None, None) => return None,
    };
    Some(Choice {
        name: m.name.clone(),
        slot_name,
        slot_port,
        slots: m.parallel_builds.max(1),
        target,
        estimate_secs,
        throughput: m
            .history
            .throughput
            .unwrap_or(Policy::default().default_throughput),
    })
}

/// Since when `m` has been out of reach, if it is.
fn unreachable_since(m: &Machine) -> Option<u64> {
    match m.live.health {
        Health::Vanished { since_ms } | Health::Unhealthy { since_ms } => Some(since_ms),
        _ => match &m.live.link {
            Link::Failed {
                kind: LinkFailure::Unreachable,
                ..
            } => m.live.unreachable_since_ms,
            _ => None,
        },
    }
}

/// Plan `ask` on `pool` at `now_ms`. A machine unreachable for `grace_ms`
/// or longer no longer holds the build back when the daemon has a local
/// slot free: unlike Guix, which postpones for ever, the answer is then
/// decline, with the reason.
pub fn plan(pool: &Pool, ask: &Ask<'_>, grace_ms: u64, now_ms: u64, seed: u64) -> Plan {
    let request = scheduler::Request {
        system: ask.system,
        required_features: ask.features,
        local_slot_free: ask.local_slot_free,
        prefer_local: false,
        local_speed: 1.0,
        expected_build_secs: 60.0,
        missing_bytes: &|_| None,
        in_flight: &|_| 0,
    };
    let policy = Policy {
        grace_ms,
        ..Policy::default()
    };
    let (ranked, verdicts) = scheduler::rank(pool, &request, &policy, now_ms, seed);
    let machines = pool.machines();
    let choices: Vec<Choice> = ranked
        .iter()
        .filter_map(|&i| match verdicts[i] {
            Verdict::Usable { estimate_secs } => choice(&machines[i], estimate_secs),
            _ => None,
        })
        .collect();
    // Machines whose agent is known to be out of reach are tried last.
    let (mut near, far): (Vec<Choice>, Vec<Choice>) = choices.into_iter().partition(|c| {
        machines
            .iter()
            .find(|m| m.name == c.name)
            .is_none_or(|m| unreachable_since(m).is_none())
    });
    let candidates: Vec<(usize, &Verdict)> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_candidate())
        .collect();
    if candidates.is_empty() {
        let why: Vec<String> = machines
            .iter()
            .zip(&verdicts)
            .map(|(m, v)| format!("{}: {v}", m.name))
            .collect();
        return Plan::Decline(if why.is_empty() {
            "no build machine is configured or discovered".into()
        } else {
            format!("no machine can build it ({})", why.join("; "))
        });
    }
    let all_lost = candidates.iter().all(|(i, _)| {
        unreachable_since(&machines[*i]).is_some_and(|t| now_ms.saturating_sub(t) >= grace_ms)
    });
    if all_lost && ask.local_slot_free {
        let names: Vec<&str> = candidates
            .iter()
            .map(|(i, _)| machines[*i].name.as_str())
            .collect();
        return Plan::Decline(format!(
            "every machine that could build it has been unreachable for {} s or more ({}): building locally",
            grace_ms / 1000,
            names.join(", ")
        ));
    }
    near.extend(far);
    // Free slots are polled (every second): one may have been freed since.
    // A linked machine that looked full is tried last; its lease decides.
    let busy = verdicts
        .iter()
        .enumerate()
        .filter(|(i, v)| **v == Verdict::NoFreeSlot && machines[*i].live.link == Link::Ok)
        .filter_map(|(i, _)| choice(&machines[i], BUSY_ESTIMATE_SECS));
    near.extend(busy);
    if near.is_empty() {
        let why: Vec<String> = candidates
            .iter()
            .map(|(i, v)| format!("{}: {v}", machines[*i].name))
            .collect();
        return Plan::Postpone(why.join("; "));
    }
    Plan::Accept(near)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::record::BuildMachine;
    use crate::pool::{LinkFailure, LiveStatus, TargetId};

    fn statics(names: &[(&str, &[&str])]) -> Pool {
        let mut pool = Pool::new(10_000);
        let machines: Vec<BuildMachine> = names
            .iter()
            .map(|(name, features)| {
                let mut m = crate::pool::tests::static_machine(name, &["x86_64-linux"]);
                m.features = features.iter().map(|f| (*f).to_owned()).collect();
                m
            })
            .collect();
        pool.set_static(&machines);
        pool
    }

    fn ask<'a>(features: &'a [String], local: bool) -> Ask<'a> {
        Ask {
            system: "x86_64-linux",
            features,
            local_slot_free: local,
        }
    }

    fn id(name: &str) -> TargetId {
        TargetId::Static {
            name: name.into(),
            port: 22,
        }
    }

    fn up(pool: &mut Pool, name: &str, free: u32) {
        let s = LiveStatus {
            free,
            load: 0.0,
            disk: 1 << 40,
            draining: false,
            transport: "QUIC",
        };
        pool.set_link(&id(name), Ok(s), 0);
    }

    fn down(pool: &mut Pool, name: &str, now: u64) {
        let f = (LinkFailure::Unreachable, "no answer".to_owned());
        pool.set_link(&id(name), Err(f), now);
    }

    #[test]
    fn usable_machines_come_best_first_with_their_slot_names() {
        let mut pool = statics(&[("a", &[]), ("b", &["kvm"])]);
        up(&mut pool, "a", 1);
        up(&mut pool, "b", 1);
        let Plan::Accept(choices) = plan(&pool, &ask(&["kvm".into()], true), 10_000, 0, 1) else {
            panic!("accept expected")
        };
        assert_eq!(choices.len(), 1);
        assert_eq!(
            (choices[0].slot_name.as_str(), choices[0].slot_port),
            ("b", 22)
        );
        assert!(
            matches!(plan(&pool, &ask(&["gpu".into()], true), 10_000, 0, 1), Plan::Decline(why) if why.contains("lacks required features: gpu"))
        );
    }

    #[test]
    fn busy_machines_come_last_draining_ones_postpone_long_unreachable_ones_decline() {
        let mut pool = statics(&[("a", &[]), ("b", &[])]);
        up(&mut pool, "a", 0);
        up(&mut pool, "b", 1);
        // A machine that looked full is tried after the usable ones (a
        // slot may have been freed since the last poll; its lease decides).
        let Plan::Accept(choices) = plan(&pool, &ask(&[], true), 10_000, 0, 1) else {
            panic!("accept expected")
        };
        assert_eq!(
            choices.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let mut pool = statics(&[("a", &[])]);
        let draining = LiveStatus {
            free: 1,
            load: 0.0,
            disk: 1 << 40,
            draining: true,
            transport: "QUIC",
        };
        pool.set_link(&id("a"), Ok(draining), 0);
        assert!(
            matches!(plan(&pool, &ask(&[], true), 10_000, 0, 1), Plan::Postpone(why) if why.contains("draining"))
        );
        up(&mut pool, "a", 0);
        down(&mut pool, "a", 1_000);
        // Unreachable but within the grace period: still tried.
        assert!(matches!(
            plan(&pool, &ask(&[], true), 10_000, 5_000, 1),
            Plan::Accept(_)
        ));
        // Past it: decline when the daemon can build it, else keep trying.
        assert!(
            matches!(plan(&pool, &ask(&[], true), 10_000, 11_000, 1), Plan::Decline(why) if why.contains("unreachable"))
        );
        assert!(matches!(
            plan(&pool, &ask(&[], false), 10_000, 11_000, 1),
            Plan::Accept(_)
        ));
    }

    #[test]
    fn a_machine_that_lost_a_build_is_avoided_for_its_back_off() {
        let mut pool = statics(&[("a", &[]), ("b", &[])]);
        up(&mut pool, "a", 1);
        up(&mut pool, "b", 1);
        pool.lost_build("a", 0, 30_000);
        let Plan::Accept(choices) = plan(&pool, &ask(&[], true), 10_000, 1_000, 1) else {
            panic!("accept expected")
        };
        assert_eq!(
            choices.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        let Plan::Accept(choices) = plan(&pool, &ask(&[], true), 10_000, 31_000, 1) else {
            panic!("accept expected")
        };
        assert_eq!(choices.len(), 2);
    }

    #[test]
    fn plans_travel_as_json() {
        let mut pool = statics(&[("a", &[])]);
        up(&mut pool, "a", 1);
        let p = plan(&pool, &ask(&[], true), 10_000, 0, 1);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), p);
    }
}
