//! `offload-master why-not DRV`: where would this derivation build, and why
//! not elsewhere? One line per machine, then the decision.

use std::fmt::Write as _;

use offload_core::derivation::{Derivation, MAX_DRV_LEN};

use crate::pool::Pool;
use crate::scheduler::{self, Decision, Policy, Request};

/// The report for `drv` (the .drv file's bytes, named `name`) against `pool`.
pub fn report(name: &str, drv: &[u8], pool: &Pool, now_ms: u64) -> Result<String, String> {
    if drv.len() > MAX_DRV_LEN {
        return Err(format!(
            "{name}: larger than {MAX_DRV_LEN} bytes; is it a derivation?"
        ));
    }
    let drv = Derivation::parse(drv).map_err(|e| format!("{name}: not a derivation: {e}"))?;
    let features = drv.required_system_features();
    let request = Request {
        system: &drv.system,
        required_features: &features,
        local_slot_free: false,
        prefer_local: false,
        local_speed: 1.0,
        expected_build_secs: 60.0,
        missing_bytes: &|_| None,
        in_flight: &|_| 0,
    };
    let outcome = scheduler::decide(
        pool,
        &request,
        &Policy {
            grace_ms: pool.grace_ms(),
            ..Policy::default()
        },
        now_ms,
        u64::from(std::process::id()),
    );
    let wanted = if features.is_empty() {
        drv.system.clone()
    } else {
        format!("{} with features {}", drv.system, features.join(", "))
    };
    let mut out = String::new();
    if pool.machines().is_empty() {
        out.push_str(
            "no build machines: machines.scm is missing or empty, and no agent was discovered\n",
        );
    }
    for (m, verdict) in pool.machines().iter().zip(&outcome.verdicts) {
        let _ = writeln!(out, "{}: {verdict}", m.name);
    }
    let _ = match outcome.decision {
        Decision::Accept(i) => writeln!(out, "decision: accept {}", pool.machines()[i].name),
        Decision::Decline => writeln!(
            out,
            "decision: decline: no machine can build {wanted}; the daemon builds it locally"
        ),
        Decision::Postpone => writeln!(
            out,
            "decision: postpone: machines can build {wanted} but none is usable now; the daemon asks again later"
        ),
    };
    Ok(out)
}
