//! The scheduler: a pure function of (pool, request, policy, clock, seed)
//! that answers accept(machine), decline or postpone, with a verdict for
//! every machine.
//!
//! Rules, in order, for each machine:
//! 1. **Candidate?** Its systems include the request's system, it has every
//!    required feature, the request requires all of its (Nix) mandatory
//!    features, its key is authorized, and it has not been gone longer than
//!    the grace period. Otherwise it is not a candidate.
//!    A discovered agent whose link failed for a reason of trust (it
//!    refused our key, its key is not ours to trust, or it could not prove
//!    the key it advertises) is not a candidate either.
//! 2. **Usable now?** Linked (a discovered agent is used only once it
//!    proved its key), not vanished (within the grace period), not unhealthy,
//!    not draining, a free slot, load below its overload threshold, free
//!    store space above the disk guard.
//! 3. **Score** of a usable machine: estimated completion time = queue
//!    (0: a usable machine has a free slot) + transfer (missing input bytes
//!    ÷ measured or default throughput) + build (nominal build time ×
//!    learned slowness ÷ (speed × (1 − load))).
//!
//! Free slots are the agent's advertised count, or for a static machine
//! `parallel-builds` minus the builds this master runs there. A static
//! machine is never forgotten: unreachable, it makes the answer postpone
//! (as in Guix); a discovered one is forgotten after the grace period.
//!    The smallest wins; ties are broken by `seed`.
//!
//! No candidate at all → [`Decision::Decline`] (the daemon builds locally);
//! candidates but none usable now → [`Decision::Postpone`]. With
//! `prefer_local`, a free local slot and no machine estimated faster than
//! building locally → decline.
//!
//! Unauthorized agents are never candidates: a key outside the ACL must not
//! make the daemon wait.

use std::fmt;

use crate::pool::{Health, Link, Machine, Pool};

/// Fixed limits of the scheduling policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Free store bytes below which a machine is not used (Guix: 100 MiB).
    pub disk_guard: u64,
    /// Transfer throughput assumed before one is measured, bytes per second.
    pub default_throughput: f64,
    /// Grace period for vanished or unhealthy machines.
    pub grace_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            disk_guard: 100 << 20,
            default_throughput: 50e6,
            grace_ms: crate::pool::DEFAULT_GRACE_MS,
        }
    }
}

/// What the daemon asks for.
pub struct Request<'a> {
    /// The derivation's system.
    pub system: &'a str,
    /// Its `requiredSystemFeatures`.
    pub required_features: &'a [String],
    /// Whether the daemon has a local build slot free.
    pub local_slot_free: bool,
    /// Prefer building locally when nothing beats it.
    pub prefer_local: bool,
    /// Speed of the local machine (for `prefer_local`).
    pub local_speed: f64,
    /// Nominal build time at speed 1.0, in seconds.
    pub expected_build_secs: f64,
    /// Bytes of inputs missing on a machine, when known.
    pub missing_bytes: &'a dyn Fn(&Machine) -> Option<u64>,
    /// Builds this master already runs on a machine (its slot locks):
    /// machines without live data use `parallel-builds` minus this.
    pub in_flight: &'a dyn Fn(&Machine) -> u32,
}

/// Why a machine is or is not used.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Usable now, with its estimated completion time.
    Usable {
        /// Seconds.
        estimate_secs: f64,
    },
    /// It does not build for the request's system.
    WrongSystem,
    /// It lacks required features.
    MissingFeatures(Vec<String>),
    /// The request lacks features it makes mandatory.
    MandatoryFeatures(Vec<String>),
    /// Its key is not in the ACL.
    Unauthorized,
    /// Its agent refused us or could not prove its key (the reason).
    Untrusted(String),
    /// Its agent was just discovered: no authenticated link yet.
    Connecting,
    /// Gone longer than the grace period.
    Gone,
    /// Vanished from mDNS, within the grace period.
    Vanished {
        /// Milliseconds ago.
        ago_ms: u64,
    },
    /// Not answering, within the grace period.
    Unhealthy {
        /// Milliseconds ago.
        ago_ms: u64,
    },
    /// Finishing its builds before shutting down.
    Draining,
    /// A build there was lost lately: avoided for a while.
    BackingOff {
        /// Milliseconds left.
        left_ms: u64,
    },
    /// Every slot is busy.
    NoFreeSlot,
    /// Load at or above its threshold.
    Overloaded {
        /// Normalized load.
        load: f64,
        /// Threshold.
        threshold: f64,
    },
    /// Too little free store space.
    LowDisk {
        /// Free bytes.
        free: u64,
        /// The guard.
        guard: u64,
    },
}

impl Verdict {
    /// Whether the machine could build this request at all (now or later).
    pub fn is_candidate(&self) -> bool {
        !matches!(
            self,
            Self::WrongSystem
                | Self::MissingFeatures(_)
                | Self::MandatoryFeatures(_)
                | Self::Unauthorized
                | Self::Untrusted(_)
                | Self::Gone
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usable { estimate_secs } => write!(f, "usable (estimated {estimate_secs:.1} s)"),
            Self::WrongSystem => f.write_str("does not build for this system"),
            Self::MissingFeatures(m) => write!(f, "lacks required features: {}", m.join(", ")),
            Self::MandatoryFeatures(m) => write!(f, "only takes builds that require: {}", m.join(", ")),
            Self::Unauthorized => f.write_str("its signing key is not in the ACL (authorize it with `offload-master key authorize`)"),
            Self::Untrusted(why) => write!(f, "not used: {why}"),
            Self::Connecting => f.write_str("just discovered: its key is not proven yet"),
            Self::Gone => f.write_str("gone (vanished longer than the grace period)"),
            Self::Vanished { ago_ms } => write!(f, "vanished from the network {:.1} s ago (waiting for the grace period)", *ago_ms as f64 / 1000.0),
            Self::Unhealthy { ago_ms } => write!(f, "not answering for {:.1} s", *ago_ms as f64 / 1000.0),
            Self::Draining => f.write_str("draining (finishing its builds before shutting down)"),
            Self::BackingOff { left_ms } => write!(f, "a build there was lost: avoided for {:.1} s more", *left_ms as f64 / 1000.0),
            Self::NoFreeSlot => f.write_str("no free build slot"),
            Self::Overloaded { load, threshold } => write!(f, "overloaded (load {load:.2} ≥ threshold {threshold:.2})"),
            Self::LowDisk { free, guard } => write!(f, "low on disk space ({} MiB free, needs {} MiB)", free >> 20, guard >> 20),
        }
    }
}

/// The answer to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Build on this machine (index into [`Pool::machines`]).
    Accept(usize),
    /// Build locally.
    Decline,
    /// Ask again later.
    Postpone,
}

/// The decision and the verdict for each machine, in pool order.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// One verdict per machine of the pool.
    pub verdicts: Vec<Verdict>,
}

/// Decide where `request` should build.
pub fn decide(
    pool: &Pool,
    request: &Request<'_>,
    policy: &Policy,
    now_ms: u64,
    seed: u64,
) -> Outcome {
    let (ranked, verdicts) = rank(pool, request, policy, now_ms, seed);
    let decision = match ranked.first() {
        Some(&i) => {
            let estimate = match verdicts[i] {
                Verdict::Usable { estimate_secs } => estimate_secs,
                _ => f64::INFINITY,
            };
            let local = request.expected_build_secs / request.local_speed.max(f64::MIN_POSITIVE);
            if request.prefer_local && request.local_slot_free && estimate >= local {
                Decision::Decline
            } else {
                Decision::Accept(i)
            }
        }
        None if verdicts.iter().any(Verdict::is_candidate) => Decision::Postpone,
        None => Decision::Decline,
    };
    Outcome { decision, verdicts }
}

/// The usable machines, best first (indices into [`Pool::machines`]),
/// and the verdict for every machine.
pub fn rank(
    pool: &Pool,
    request: &Request<'_>,
    policy: &Policy,
    now_ms: u64,
    seed: u64,
) -> (Vec<usize>, Vec<Verdict>) {
    let verdicts: Vec<Verdict> = pool
        .machines()
        .iter()
        .map(|m| verdict(m, request, policy, now_ms))
        .collect();
    let mut usable: Vec<(f64, u64, usize)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Verdict::Usable { estimate_secs } => {
                Some((*estimate_secs, splitmix64(seed ^ (i as u64)), i))
            }
            _ => None,
        })
        .collect();
    usable.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    (usable.into_iter().map(|(_, _, i)| i).collect(), verdicts)
}

fn verdict(m: &Machine, r: &Request<'_>, policy: &Policy, now_ms: u64) -> Verdict {
    if !m.systems.iter().any(|s| s == r.system) {
        return Verdict::WrongSystem;
    }
    let missing: Vec<String> = r
        .required_features
        .iter()
        .filter(|f| !m.features.contains(f))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Verdict::MissingFeatures(missing);
    }
    let mandatory: Vec<String> = m
        .mandatory_features
        .iter()
        .filter(|f| !r.required_features.contains(f))
        .cloned()
        .collect();
    if !mandatory.is_empty() {
        return Verdict::MandatoryFeatures(mandatory);
    }
    if !m.authorized {
        return Verdict::Unauthorized;
    }
    // A discovered agent is used only over a link on which it proved its
    // key (a static machine can still be reached as Guix reaches it).
    if m.static_entry.is_none() {
        match &m.live.link {
            Link::Failed { kind, reason } if kind.is_trust_failure() => {
                return Verdict::Untrusted(reason.clone());
            }
            Link::Unknown if matches!(m.live.health, Health::Healthy | Health::Unknown) => {
                return Verdict::Connecting;
            }
            _ => {}
        }
    }
    // A static machine stays a candidate however long it is unreachable,
    // as in Guix (postpone, never decline); a discovered one is forgotten
    // after the grace period.
    let forgettable = m.static_entry.is_none();
    match m.live.health {
        Health::Vanished { since_ms } | Health::Unhealthy { since_ms }
            if forgettable && now_ms.saturating_sub(since_ms) >= policy.grace_ms =>
        {
            return Verdict::Gone;
        }
        Health::Vanished { since_ms } => {
            return Verdict::Vanished {
                ago_ms: now_ms.saturating_sub(since_ms),
            };
        }
        Health::Unhealthy { since_ms } => {
            return Verdict::Unhealthy {
                ago_ms: now_ms.saturating_sub(since_ms),
            };
        }
        Health::Healthy | Health::Unknown => {}
    }
    if m.live.draining {
        return Verdict::Draining;
    }
    if let Some(until) = m.history.avoid_until_ms
        && until > now_ms
    {
        return Verdict::BackingOff {
            left_ms: until - now_ms,
        };
    }
    let free = m
        .live
        .free_slots
        .unwrap_or_else(|| m.parallel_builds.saturating_sub((r.in_flight)(m)));
    if free == 0 {
        return Verdict::NoFreeSlot;
    }
    // An unreadable load counts as full, as in Guix.
    let load = m
        .live
        .load
        .map_or(0.0, |l| if l.is_finite() { l.max(0.0) } else { 1.0 });
    if let Some(threshold) = m.overload_threshold
        && load >= threshold
    {
        return Verdict::Overloaded { load, threshold };
    }
    if let Some(free) = m.live.disk
        && free < policy.disk_guard
    {
        return Verdict::LowDisk {
            free,
            guard: policy.disk_guard,
        };
    }
    let bytes = (r.missing_bytes)(m).unwrap_or(0) as f64;
    let transfer = bytes
        / m.history
            .throughput
            .unwrap_or(policy.default_throughput)
            .max(1.0);
    let effective_speed = m.speed * (1.0 - load.clamp(0.0, 0.95));
    let build = r.expected_build_secs * m.history.slowness / effective_speed.max(f64::MIN_POSITIVE);
    Verdict::Usable {
        estimate_secs: transfer + build,
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
