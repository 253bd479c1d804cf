use super::*;
use crate::pool::tests::{advert, discover_linked, static_machine};
use crate::pool::{Advert, Pool};

fn request<'a>(system: &'a str, features: &'a [String]) -> Request<'a> {
    Request {
        system,
        required_features: features,
        local_slot_free: false,
        prefer_local: false,
        local_speed: 1.0,
        expected_build_secs: 60.0,
        missing_bytes: &|_| None,
        in_flight: &|_| 0,
    }
}

fn pool_of(adverts: Vec<Advert>) -> Pool {
    let mut pool = Pool::new(5_000);
    for a in adverts {
        discover_linked(&mut pool, a, true, 0);
    }
    pool
}

fn named(i: usize, f: impl FnOnce(&mut Advert)) -> Advert {
    let mut a = advert(
        &format!("m{i}"),
        &format!("m{i}.local"),
        Some(&format!("K{i}")),
    );
    f(&mut a);
    a
}

fn check(pool: &Pool, req: &Request<'_>, expected: Decision) -> Outcome {
    let out = decide(pool, req, &Policy::default(), 1_000, 7);
    assert_eq!(out.decision, expected, "{:?}", out.verdicts);
    out
}

#[test]
fn system_and_features_must_match() {
    let features = vec!["kvm".to_owned()];
    let pool = pool_of(vec![
        named(0, |_| {}),
        named(1, |a| a.features.push("kvm".into())),
    ]);
    let out = check(
        &pool,
        &request("x86_64-linux", &features),
        Decision::Accept(1),
    );
    assert_eq!(
        out.verdicts[0],
        Verdict::MissingFeatures(vec!["kvm".into()])
    );
    let out = check(&pool, &request("aarch64-linux", &[]), Decision::Decline);
    assert!(out.verdicts.iter().all(|v| *v == Verdict::WrongSystem));
}

#[test]
fn mandatory_features_must_be_required() {
    let mut pool = pool_of(vec![named(0, |_| {})]);
    let mut statics = static_machine("nix-box", &["x86_64-linux"]);
    statics.features.push("benchmark".into());
    pool.set_static(&[statics]);
    // Mandatory features come from Nix machines files; set one by hand.
    let mut machines: Vec<_> = pool.machines().to_vec();
    machines[0].mandatory_features = vec!["benchmark".into()];
    let pool = pool_with(machines);
    let out = check(&pool, &request("x86_64-linux", &[]), Decision::Accept(1));
    assert_eq!(
        out.verdicts[0],
        Verdict::MandatoryFeatures(vec!["benchmark".into()])
    );
    let required = vec!["benchmark".to_owned()];
    check(
        &pool,
        &request("x86_64-linux", &required),
        Decision::Accept(0),
    );
}

fn pool_with(machines: Vec<crate::pool::Machine>) -> Pool {
    let mut pool = Pool::new(5_000);
    pool.replace_for_tests(machines);
    pool
}

#[test]
fn unauthorized_agents_are_never_candidates() {
    let mut pool = Pool::new(5_000);
    discover_linked(&mut pool, named(0, |a| a.speed = 100.0), false, 0);
    let out = check(&pool, &request("x86_64-linux", &[]), Decision::Decline);
    assert_eq!(out.verdicts[0], Verdict::Unauthorized);
    discover_linked(&mut pool, named(1, |_| {}), true, 0);
    check(&pool, &request("x86_64-linux", &[]), Decision::Accept(1));
}

#[test]
fn candidates_not_usable_now_mean_postpone() {
    let cases: Vec<(Advert, Verdict)> = vec![
        (named(0, |a| a.free = 0), Verdict::NoFreeSlot),
        (named(0, |a| a.draining = true), Verdict::Draining),
        (
            named(0, |a| a.load = 0.9),
            Verdict::Overloaded {
                load: 0.9,
                threshold: 0.8,
            },
        ),
        (
            named(0, |a| a.disk = 50 << 20),
            Verdict::LowDisk {
                free: 50 << 20,
                guard: 100 << 20,
            },
        ),
    ];
    for (a, expected) in cases {
        let pool = pool_of(vec![a]);
        let out = check(&pool, &request("x86_64-linux", &[]), Decision::Postpone);
        assert_eq!(out.verdicts[0], expected);
    }
}

#[test]
fn unhealthy_and_vanished_postpone_within_grace_then_decline() {
    let mut pool = pool_of(vec![named(0, |_| {})]);
    pool.unhealthy("m0.local", 500);
    let out = check(&pool, &request("x86_64-linux", &[]), Decision::Postpone);
    assert_eq!(out.verdicts[0], Verdict::Unhealthy { ago_ms: 500 });
    let mut pool = pool_of(vec![named(0, |_| {})]);
    pool.vanished("m0", 0);
    let out = check(&pool, &request("x86_64-linux", &[]), Decision::Postpone);
    assert_eq!(out.verdicts[0], Verdict::Vanished { ago_ms: 1_000 });
    // After the grace period the machine no longer counts, even before `expire`.
    let late = decide(
        &pool,
        &request("x86_64-linux", &[]),
        &Policy {
            grace_ms: 5_000,
            ..Policy::default()
        },
        6_000,
        7,
    );
    assert_eq!(
        (late.decision, &late.verdicts[0]),
        (Decision::Decline, &Verdict::Gone)
    );
}

#[test]
fn flapping_discovery_postpones_instead_of_declining() {
    let mut pool = pool_of(vec![named(0, |_| {})]);
    let req = request("x86_64-linux", &[]);
    for t in 0..10u64 {
        let now = t * 1_000;
        if t % 2 == 0 {
            pool.vanished("m0", now);
            assert_eq!(
                decide(&pool, &req, &Policy::default(), now + 10, 1).decision,
                Decision::Postpone,
                "t={t}"
            );
        } else {
            discover_linked(&mut pool, named(0, |_| {}), true, now);
            assert_eq!(
                decide(&pool, &req, &Policy::default(), now + 10, 1).decision,
                Decision::Accept(0),
                "t={t}"
            );
        }
        pool.expire(now + 10);
        assert_eq!(pool.machines().len(), 1);
    }
}

#[test]
fn the_smallest_estimated_completion_time_wins() {
    let req = request("x86_64-linux", &[]);
    // Faster machine wins.
    let pool = pool_of(vec![
        named(0, |a| a.speed = 1.0),
        named(1, |a| a.speed = 4.0),
    ]);
    check(&pool, &req, Decision::Accept(1));
    // A heavily loaded fast machine loses to an idle slower one.
    let pool = pool_of(vec![
        named(0, |a| (a.speed, a.load) = (1.0, 0.0)),
        named(1, |a| (a.speed, a.load) = (1.5, 0.7)),
    ]);
    check(&pool, &req, Decision::Accept(0));
    // Missing inputs cost transfer time.
    let pool = pool_of(vec![named(0, |_| {}), named(1, |_| {})]);
    let heavy = |m: &crate::pool::Machine| {
        Some(if m.name == "m0.local" {
            10_000_000_000
        } else {
            0
        })
    };
    let req_bytes = Request {
        missing_bytes: &heavy,
        ..request("x86_64-linux", &[])
    };
    check(&pool, &req_bytes, Decision::Accept(1));
    // Learned slowness counts.
    let mut pool = pool_of(vec![named(0, |_| {}), named(1, |_| {})]);
    pool.learn("m1.local", 3.0, None);
    check(&pool, &req, Decision::Accept(0));
}

#[test]
fn ties_are_broken_by_the_seed_deterministically() {
    let pool = pool_of((0..8).map(|i| named(i, |_| {})).collect());
    let req = request("x86_64-linux", &[]);
    let chosen: Vec<Decision> = (0..64)
        .map(|seed| decide(&pool, &req, &Policy::default(), 0, seed).decision)
        .collect();
    let again: Vec<Decision> = (0..64)
        .map(|seed| decide(&pool, &req, &Policy::default(), 0, seed).decision)
        .collect();
    assert_eq!(chosen, again, "a pure function of its inputs");
    let distinct: std::collections::BTreeSet<_> = chosen.iter().map(|d| format!("{d:?}")).collect();
    assert!(
        distinct.len() >= 4,
        "ties spread over machines: {distinct:?}"
    );
}

#[test]
fn prefer_local_declines_when_nothing_beats_local() {
    let pool = pool_of(vec![named(0, |a| a.speed = 1.0)]);
    let base = request("x86_64-linux", &[]);
    let local = Request {
        prefer_local: true,
        local_slot_free: true,
        local_speed: 2.0,
        ..base
    };
    check(&pool, &local, Decision::Decline);
    let busy_local = Request {
        prefer_local: true,
        local_slot_free: false,
        local_speed: 2.0,
        ..request("x86_64-linux", &[])
    };
    check(&pool, &busy_local, Decision::Accept(0));
    let fast_remote = pool_of(vec![named(0, |a| a.speed = 8.0)]);
    let local = Request {
        prefer_local: true,
        local_slot_free: true,
        local_speed: 2.0,
        ..request("x86_64-linux", &[])
    };
    check(&fast_remote, &local, Decision::Accept(0));
}

#[test]
fn static_machines_without_live_data_are_usable() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    let out = check(
        &pool,
        &request("x86_64-linux", &["kvm".to_owned()]),
        Decision::Accept(0),
    );
    assert!(matches!(out.verdicts[0], Verdict::Usable { .. }));
    assert_eq!(out.verdicts[0].to_string(), "usable (estimated 40.0 s)");
}

#[test]
fn an_unreachable_static_machine_postpones_forever() {
    let mut pool = Pool::new(1_000);
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    pool.unhealthy("box", 0);
    let out = decide(
        &pool,
        &request("x86_64-linux", &[]),
        &Policy {
            grace_ms: 1_000,
            ..Policy::default()
        },
        1_000_000,
        1,
    );
    assert_eq!(out.decision, Decision::Postpone, "{:?}", out.verdicts);
}

#[test]
fn static_slots_count_this_masters_builds() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    let full = |_: &crate::pool::Machine| 2;
    let req = Request {
        in_flight: &full,
        ..request("x86_64-linux", &[])
    };
    let out = check(&pool, &req, Decision::Postpone);
    assert_eq!(out.verdicts[0], Verdict::NoFreeSlot);
    let one = |_: &crate::pool::Machine| 1;
    check(
        &pool,
        &Request {
            in_flight: &one,
            ..request("x86_64-linux", &[])
        },
        Decision::Accept(0),
    );
}

#[test]
fn a_nan_load_counts_as_full() {
    let pool = pool_of(vec![named(0, |a| a.load = f64::NAN)]);
    let out = check(&pool, &request("x86_64-linux", &[]), Decision::Postpone);
    assert!(
        matches!(out.verdicts[0], Verdict::Overloaded { .. }),
        "{:?}",
        out.verdicts
    );
}
