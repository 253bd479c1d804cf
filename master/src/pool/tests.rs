use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::machines::record::{BuildMachine, Location};

pub(crate) fn static_machine(name: &str, systems: &[&str]) -> BuildMachine {
    BuildMachine {
        name: name.into(),
        port: 22,
        systems: systems.iter().map(|s| (*s).into()).collect(),
        user: "offload".into(),
        private_key: "/root/.ssh/id_rsa".into(),
        host_key: "ssh-ed25519 AAAA".into(),
        compression: "zlib@openssh.com,zlib".into(),
        compression_level: 3,
        daemon_socket: "/var/guix/daemon-socket/socket".into(),
        overload_threshold: Some(0.8),
        parallel_builds: 2,
        speed: 1.5,
        features: vec!["kvm".into()],
        location: Location {
            file: "machines.scm".into(),
            line: 1,
            col: 1,
        },
    }
}

pub(crate) fn advert(instance: &str, host: &str, key: Option<&str>) -> Advert {
    Advert {
        instance: instance.into(),
        host: host.into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))],
        port: 7441,
        systems: vec!["x86_64-linux".into(), "i686-linux".into()],
        features: vec!["big-parallel".into()],
        speed: 3.0,
        slots: 4,
        free: 3,
        load: 0.25,
        disk: 10 << 30,
        key: key.map(str::to_owned),
        ssh_port: Some(22),
        draining: false,
        stopping: false,
    }
}

#[test]
fn static_and_discovered_merge_by_name_and_port_once_the_key_is_proven() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("builder1.lan", &["x86_64-linux"])]);
    pool.discovered(
        advert("builder1", "builder1.local.", Some("KEY1")),
        true,
        1000,
    );
    // Not proven yet: a machine of its own, the static one untouched.
    assert_eq!(pool.machines().len(), 2);
    assert_eq!(pool.machines()[0].source, Source::Static);
    assert_eq!(pool.machines()[0].live, Live::default());
    pool.set_link(
        &TargetId::Instance("builder1".into()),
        Ok(LiveStatus {
            free: 3,
            load: 0.25,
            disk: 10 << 30,
            draining: false,
            transport: "QUIC",
        }),
        1000,
    );
    assert_eq!(pool.machines().len(), 1);
    let m = &pool.machines()[0];
    assert_eq!(m.source, Source::Both);
    // Static fields as the operator wrote them, live fields from the agent.
    assert_eq!(
        (m.speed, m.parallel_builds, m.systems.as_slice()),
        (1.5, 2, &["x86_64-linux".to_owned()][..])
    );
    assert_eq!(m.static_entry.as_ref().unwrap().user, "offload");
    assert_eq!(
        (m.live.load, m.live.free_slots, m.live.health),
        (Some(0.25), Some(3), Health::Healthy)
    );
    assert_eq!(m.key.as_deref(), Some("KEY1"));
    // A different key is a different machine.
    pool.discovered(
        advert("builder1-b", "builder1.local.", Some("KEY2")),
        true,
        1000,
    );
    assert_eq!(pool.machines().len(), 2);
    assert_eq!(pool.machines()[1].source, Source::Discovered);
}

#[test]
fn an_advert_whose_key_is_not_in_the_acl_never_changes_a_static_machine() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    // An intruder on the static machine's name and SSH port, draining,
    // one slot free, with a key outside the ACL.
    let mut intruder = advert("intruder", "box.local", Some("NOT-IN-ACL"));
    intruder.draining = true;
    intruder.free = 1;
    pool.discovered(intruder, false, 10);
    assert_eq!(pool.machines().len(), 2);
    let static_box = &pool.machines()[0];
    assert_eq!(static_box.source, Source::Static);
    assert!(static_box.authorized && static_box.key.is_none());
    assert_eq!(
        static_box.live,
        Live::default(),
        "nothing the scheduler reads changed"
    );
    assert!(!pool.machines()[1].authorized);
    // No link is even attempted to it.
    assert!(
        pool.link_targets()
            .iter()
            .all(|t| t.id != TargetId::Instance("intruder".into()))
    );
}

#[test]
fn an_agent_that_cannot_prove_its_key_never_joins_a_static_machine() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    // It advertises an authorized key but cannot prove it.
    pool.discovered(advert("fake", "box.local", Some("AUTHORIZED")), true, 10);
    pool.set_link(
        &TargetId::Instance("fake".into()),
        Err((
            LinkFailure::Impostor,
            "impostor: could not prove key AUTHORIZED".into(),
        )),
        20,
    );
    assert_eq!(pool.machines().len(), 2);
    assert_eq!(pool.machines()[0].live, Live::default());
    assert_eq!(pool.machines()[0].source, Source::Static);
    assert!(matches!(
        &pool.machines()[1].live.link,
        Link::Failed {
            kind: LinkFailure::Impostor,
            ..
        }
    ));
}

#[test]
fn news_of_a_link_to_what_a_machine_advertised_before_is_dropped() {
    let mut pool = Pool::default();
    pool.discovered(advert("a", "box.local", Some("K1")), true, 0);
    let old = pool.link_targets().remove(0);
    // It now advertises another key: what a link proved of the old one
    // says nothing about the new one.
    pool.discovered(advert("a", "box.local", Some("K2")), true, 10);
    let status = LiveStatus {
        free: 1,
        load: 0.0,
        disk: 1 << 30,
        draining: false,
        transport: "QUIC",
    };
    pool.report_link(&old, Ok(status), 20);
    assert_eq!(pool.machines()[0].live.link, Link::Unknown);
    let new = pool.link_targets().remove(0);
    pool.report_link(&new, Ok(status), 30);
    assert_eq!(pool.machines()[0].live.link, Link::Ok);
}

#[test]
fn names_match_like_hosts_do() {
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))];
    assert!(hosts_match("builder1", "builder1.local.", &ip));
    assert!(hosts_match("Builder1.LAN", "builder1.local", &ip));
    assert!(hosts_match("10.0.0.7", "whatever.local", &ip));
    assert!(!hosts_match("10.0.0.8", "whatever.local", &ip));
    assert!(!hosts_match("builder2", "builder1.local", &ip));
    assert!(!hosts_match("builder1.lan", "builder1.example.org", &ip));
}

#[test]
fn a_known_key_decides_identity() {
    let mut pool = Pool::default();
    pool.discovered(advert("a", "box.local", Some("K")), true, 0);
    // Same key, new instance name and host name after the old one left: the same machine.
    pool.vanished("a", 5);
    pool.discovered(advert("a-renamed", "box-2.local", Some("K")), true, 10);
    assert_eq!(pool.machines().len(), 1);
    assert_eq!(pool.machines()[0].name, "box-2.local");
    // Same host, another key: another machine.
    let mut twin = advert("b", "box-2.local", Some("OTHER"));
    twin.ssh_port = Some(22);
    pool.discovered(twin, true, 10);
    assert_eq!(pool.machines().len(), 2);
}

#[test]
fn vanished_agents_stay_for_the_grace_period_and_keep_history() {
    let mut pool = Pool::new(5_000);
    pool.discovered(advert("a", "box.local", Some("K")), true, 0);
    pool.learn("box.local", 2.0, Some(80e6));
    pool.vanished("a", 1_000);
    pool.expire(5_999);
    assert_eq!(
        pool.machines()[0].live.health,
        Health::Vanished { since_ms: 1_000 }
    );
    // Flapping: back within the grace period, same entry, same history.
    pool.discovered(advert("a", "box.local", Some("K")), true, 3_000);
    pool.vanished("a", 4_000);
    pool.discovered(advert("a", "box.local", Some("K")), true, 4_500);
    pool.expire(20_000);
    assert_eq!(pool.machines().len(), 1);
    assert_eq!(pool.machines()[0].history.builds, 1);
    assert_eq!(pool.machines()[0].live.health, Health::Healthy);
    // Gone for good after the grace period.
    pool.vanished("a", 21_000);
    pool.expire(26_000);
    assert!(pool.machines().is_empty());
}

#[test]
fn an_expired_merged_machine_falls_back_to_its_static_entry() {
    let mut pool = Pool::new(1_000);
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    pool.discovered(advert("a", "box.local", None), true, 0);
    pool.vanished("a", 100);
    pool.expire(1_100);
    assert_eq!(pool.machines().len(), 1);
    assert_eq!(pool.machines()[0].source, Source::Static);
    assert_eq!(pool.machines()[0].live.health, Health::Unknown);
}

#[test]
fn rereading_machines_scm_keeps_discovered_state() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    discover_linked(&mut pool, advert("a", "box.local", None), true, 0);
    pool.discovered(advert("z", "other.local", None), false, 0);
    pool.set_static(&[static_machine("box", &["x86_64-linux", "aarch64-linux"])]);
    assert_eq!(pool.machines().len(), 2);
    assert_eq!(pool.machines()[0].source, Source::Both);
    assert_eq!(pool.machines()[0].systems.len(), 2);
    assert_eq!(pool.machines()[0].live.free_slots, Some(3));
    assert!(!pool.machines()[1].authorized);
    // Dropping the static entry leaves the discovered machine.
    pool.set_static(&[]);
    assert_eq!(pool.machines().len(), 2);
    assert!(
        pool.machines()
            .iter()
            .all(|m| m.source == Source::Discovered)
    );
}

#[test]
fn a_different_ssh_port_is_a_different_machine() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("builder1.lan", &["x86_64-linux"])]);
    let mut other = advert("b", "builder1.local.", None);
    other.ssh_port = Some(2222);
    pool.discovered(other, true, 0);
    assert_eq!(pool.machines().len(), 2);
}

#[test]
fn removing_the_static_entry_does_not_authorize_an_unknown_key() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    pool.discovered(advert("a", "box.local", Some("NOT-IN-ACL")), false, 0);
    assert!(
        pool.machines()[0].authorized,
        "the operator's static entry is trusted"
    );
    pool.set_static(&[]);
    assert!(
        !pool.machines()[0].authorized,
        "without it, only the ACL decides"
    );
}

#[test]
fn rereading_keeps_static_state_and_matches_new_spellings() {
    let mut pool = Pool::default();
    pool.set_static(&[
        static_machine("box", &["x86_64-linux"]),
        static_machine("box", &["x86_64-linux"]),
    ]);
    assert_eq!(
        pool.machines().len(),
        1,
        "a machine listed twice is one machine"
    );
    pool.unhealthy("box", 10);
    pool.learn("box", 2.0, None);
    pool.set_static(&[static_machine("box.lan", &["x86_64-linux"])]);
    assert_eq!(pool.machines().len(), 1);
    assert_eq!(
        pool.machines()[0].live.health,
        Health::Unhealthy { since_ms: 10 }
    );
    assert_eq!(pool.machines()[0].history.builds, 1);
}

#[test]
fn nonsense_measurements_are_ignored() {
    let mut pool = Pool::default();
    pool.set_static(&[static_machine("box", &["x86_64-linux"])]);
    for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
        pool.learn("box", bad, None);
        pool.learn("box", 1.0, Some(bad));
    }
    assert_eq!(pool.machines()[0].history, History::default());
}

#[test]
fn an_advertised_key_cannot_take_over_a_live_entry() {
    let mut pool = Pool::default();
    pool.discovered(advert("victim", "victim.local", Some("K")), true, 0);
    let mut fake = advert("attacker", "attacker.local", Some("K"));
    fake.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66))];
    pool.discovered(fake, true, 10);
    assert_eq!(pool.machines().len(), 2, "a separate entry");
    assert_eq!(
        pool.machines()[0].advert.as_ref().unwrap().instance,
        "victim"
    );
    assert_eq!(
        pool.machines()[0].advert.as_ref().unwrap().addresses,
        vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))]
    );
    // The ACL changes reach the fallback used when a static entry goes away.
    pool.reauthorize(|_| false);
    assert!(
        pool.machines()
            .iter()
            .all(|m| !m.authorized && !m.advert_authorized)
    );
}

/// Discover `a` and bring its link up with the values it advertises (what
/// an honest agent's status says).
pub(crate) fn discover_linked(pool: &mut Pool, a: Advert, authorized: bool, now_ms: u64) {
    let (id, status) = (
        TargetId::Instance(a.instance.clone()),
        LiveStatus {
            free: a.free,
            load: a.load,
            disk: a.disk,
            draining: a.draining,
            transport: "QUIC",
        },
    );
    pool.discovered(a, authorized, now_ms);
    pool.set_link(&id, Ok(status), now_ms);
}
