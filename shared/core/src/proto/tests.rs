use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::admission::{Admission, BuildRefusal, Refusal, UnknownLease};
use super::auth::{AgentAuth, AuthError, MasterAuth};
use super::codec::{self, CodecError, FrameBuffer};
use super::stream::{AgentEvent, AgentStream, MasterEvent, MasterStream};
use super::*;
use crate::keys::SecretKey;

fn roundtrip_agent(msg: &ToAgent) {
    let frame = codec::encode(msg).unwrap();
    let mut buf = FrameBuffer::default();
    buf.push(&frame);
    let body = buf.next_body().unwrap().unwrap();
    assert_eq!(&codec::decode::<ToAgent>(&body).unwrap(), msg);
    assert_eq!(buf.pending(), 0);
}

#[test]
fn golden_frames() {
    // Pinned bytes: a change of codec or message layout is a protocol
    // change and must bump the version.
    let hello = ToAgent::Hello(Hello {
        versions: vec![1],
        software: "m".into(),
    });
    assert_eq!(
        crate::hex::encode_lower(&codec::encode(&hello).unwrap()),
        "0500000000010101 6d".replace(' ', "")
    );
    let lease = ToAgent::Request(Request::Renew { lease: 300 });
    assert_eq!(
        crate::hex::encode_lower(&codec::encode(&lease).unwrap()),
        "050000000102fb2c01"
    );
}

#[test]
fn every_message_round_trips() {
    let status = Status {
        name: "a".into(),
        systems: vec!["x86_64-linux".into()],
        features: vec![],
        store_dir: "/gnu/store".into(),
        slots: 2,
        free: 1,
        running: 1,
        load_milli: 250,
        disk: 1 << 40,
        draining: false,
        speed_milli: 1500,
    };
    for msg in [
        ToAgent::Request(Request::Status),
        ToAgent::Request(Request::Lease),
        ToAgent::Request(Request::Release { lease: u64::MAX }),
        ToAgent::Request(Request::QueryMissing {
            paths: vec!["/gnu/store/x".into()],
        }),
        ToAgent::Request(Request::Build(BuildRequest {
            lease: 3,
            drv: "/gnu/store/x.drv".into(),
            max_silent_secs: 0,
            timeout_secs: 7,
        })),
        ToAgent::Data(vec![0; MAX_CHUNK]),
        ToAgent::End,
        ToAgent::Cancel,
    ] {
        roundtrip_agent(&msg);
    }
    for msg in [
        ToMaster::Welcome(Welcome {
            version: 1,
            software: "a".into(),
            status: status.clone(),
        }),
        ToMaster::Reply(Reply::Status(status)),
        ToMaster::Reply(Reply::BuildFinished(BuildOutcome {
            status: BuildStatus::Failed,
            message: "builder failed".into(),
            outputs: vec![("out".into(), "/gnu/store/y".into())],
        })),
        ToMaster::Log(b"line\n".to_vec()),
        ToMaster::Error(Failure {
            kind: FailureKind::Busy,
            message: "busy".into(),
        }),
    ] {
        let frame = codec::encode(&msg).unwrap();
        assert_eq!(codec::decode::<ToMaster>(&frame[4..]).unwrap(), msg);
    }
}

#[test]
fn byte_frames_written_in_two_parts_decode_as_encoded() {
    for len in [0usize, 1, 250, 251, 65535, 65536, MAX_CHUNK] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for (msg, empty) in [
            (ToMaster::Data(payload.clone()), ToMaster::Data(Vec::new())),
            (ToMaster::Log(payload.clone()), ToMaster::Log(Vec::new())),
        ] {
            let mut frame = codec::bytes_frame_header(&empty, len).unwrap();
            frame.extend_from_slice(&payload);
            assert_eq!(frame, codec::encode(&msg).unwrap(), "{len}");
        }
        let mut frame = codec::bytes_frame_header(&ToAgent::Data(Vec::new()), len).unwrap();
        frame.extend_from_slice(&payload);
        assert_eq!(frame, codec::encode(&ToAgent::Data(payload)).unwrap());
    }
    assert!(codec::bytes_frame_header(&ToMaster::End, 3).is_err());
    assert!(codec::bytes_frame_header(&ToMaster::Data(Vec::new()), MAX_FRAME).is_err());
}

#[test]
fn hostile_lengths_fail_before_allocating() {
    // Data with a claimed length of 2^40 bytes: variant 2, varint 0xfd + u64.
    let mut body = vec![2u8, 0xfd];
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        codec::decode::<ToAgent>(&body),
        Err(CodecError::Malformed(_))
    ));
    // A frame header over the limit is refused as soon as it is read.
    let mut buf = FrameBuffer::default();
    buf.push(&(u32::try_from(MAX_FRAME).unwrap() + 1).to_le_bytes());
    assert_eq!(buf.next_body(), Err(CodecError::Length(MAX_FRAME + 1)));
    assert_eq!(codec::body_len([0; 4]), Err(CodecError::Length(0)));
    // Trailing bytes.
    let mut frame = codec::encode(&ToAgent::End).unwrap();
    frame.push(0);
    assert_eq!(
        codec::decode::<ToAgent>(&frame[4..]),
        Err(CodecError::Trailing(1))
    );
    // An unknown variant.
    assert!(codec::decode::<ToAgent>(&[99]).is_err());
    // A million empty paths in one frame: refused at the first past the
    // limit, not allocated then validated.
    let mut body = vec![1u8, 4, 252];
    body.extend_from_slice(&1_000_000u32.to_le_bytes());
    body.extend(std::iter::repeat_n(0u8, 1_000_000));
    let err = codec::decode::<ToAgent>(&body).unwrap_err();
    assert!(err.to_string().contains("more than 8192"), "{err}");
}

#[test]
fn limits_are_checked_by_the_stream_machines() {
    let many = ToAgent::Request(Request::QueryMissing {
        paths: vec!["/gnu/store/x".into(); MAX_PATHS + 1],
    });
    let err = AgentStream::request().handle(many).unwrap_err();
    assert!(err.0.contains("at most 8192"), "{err}");
    let long = ToAgent::Data(vec![0; MAX_CHUNK + 1]);
    let mut s = AgentStream::request();
    s.handle(ToAgent::Request(Request::Import)).unwrap();
    assert!(s.handle(long).is_err());
    let empty = ToAgent::Request(Request::Export {
        paths: vec![String::new()],
    });
    assert!(AgentStream::request().handle(empty).is_err());
}

#[test]
fn agent_stream_order() {
    let mut s = AgentStream::first();
    assert!(s.handle(ToAgent::Request(Request::Status)).is_err());
    let mut s = AgentStream::first();
    assert!(matches!(
        s.handle(ToAgent::Hello(Hello {
            versions: vec![1],
            software: String::new()
        })),
        Ok(AgentEvent::Hello(_))
    ));
    assert!(s.is_done());
    assert!(s.handle(ToAgent::End).is_err());

    let mut s = AgentStream::request();
    s.handle(ToAgent::Request(Request::Import)).unwrap();
    assert_eq!(
        s.handle(ToAgent::Data(vec![1])).unwrap(),
        AgentEvent::Data(vec![1])
    );
    assert!(s.next_request().is_err(), "import not finished");
    assert_eq!(s.handle(ToAgent::End).unwrap(), AgentEvent::End);
    s.next_request().unwrap();
    s.handle(ToAgent::Request(Request::Build(BuildRequest {
        lease: 1,
        drv: "/gnu/store/a.drv".into(),
        max_silent_secs: 0,
        timeout_secs: 0,
    })))
    .unwrap();
    assert!(s.handle(ToAgent::Data(vec![])).is_err());
    let mut s = AgentStream::request();
    assert!(
        s.handle(ToAgent::Hello(Hello {
            versions: vec![1],
            software: String::new()
        }))
        .is_err()
    );
}

#[test]
fn master_stream_order() {
    let build = Request::Build(BuildRequest {
        lease: 1,
        drv: "/gnu/store/a.drv".into(),
        max_silent_secs: 0,
        timeout_secs: 0,
    });
    let mut s = MasterStream::for_request(&build);
    assert!(
        s.handle(ToMaster::Log(vec![1])).is_err(),
        "log before start"
    );
    let mut s = MasterStream::for_request(&build);
    s.handle(ToMaster::Reply(Reply::BuildStarted)).unwrap();
    assert_eq!(
        s.handle(ToMaster::Log(vec![1])).unwrap(),
        MasterEvent::Log(vec![1])
    );
    s.handle(ToMaster::Reply(Reply::BuildFinished(BuildOutcome {
        status: BuildStatus::Built,
        message: String::new(),
        outputs: vec![],
    })))
    .unwrap();
    assert!(s.is_done());
    assert!(s.handle(ToMaster::Log(vec![])).is_err());

    let mut s = MasterStream::for_request(&Request::Status);
    assert!(s.handle(ToMaster::Reply(Reply::Released)).is_err());
    let mut s = MasterStream::for_request(&Request::Export { paths: vec![] });
    s.handle(ToMaster::Reply(Reply::Exporting)).unwrap();
    s.handle(ToMaster::Data(vec![1, 2])).unwrap();
    assert_eq!(s.handle(ToMaster::End).unwrap(), MasterEvent::End);
    let mut s = MasterStream::for_request(&Request::Lease);
    let failure = Failure {
        kind: FailureKind::Busy,
        message: "x".into(),
    };
    assert_eq!(
        s.handle(ToMaster::Error(failure.clone())).unwrap(),
        MasterEvent::Failed(failure)
    );
    assert!(s.is_done());
}

#[test]
fn leases_never_exceed_slots_across_sessions() {
    // 3 sessions, 30 lease requests in an interleaved order, 2 slots:
    // never more than 2 leases or builds, whatever the order of events.
    let t0 = Instant::now();
    let mut adm = Admission::new(2, Duration::from_secs(10));
    let mut granted = Vec::new();
    let mut now = t0;
    for i in 0..30u64 {
        now += Duration::from_millis(100);
        let session = i % 3;
        match adm.handle_lease(session, now) {
            Ok(lease) => {
                adm.begin_build(session, lease).unwrap();
                granted.push((session, lease));
            }
            Err(Refusal::Busy) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(adm.running() <= 2 && adm.leased() <= 2);
        if i % 4 == 3
            && let Some((s, l)) = granted.pop()
        {
            adm.end_build(l, now);
            adm.handle_release(s, l);
        }
    }
    assert!(granted.len() <= 2);
}

#[test]
fn leases_expire_unless_renewed_or_building() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(10);
    let mut adm = Admission::new(2, ttl);
    let a = adm.handle_lease(1, t0).unwrap();
    let b = adm.handle_lease(2, t0).unwrap();
    assert_eq!(adm.handle_lease(3, t0), Err(Refusal::Busy));
    assert_eq!(adm.poll_timeout(), Some(t0 + ttl));
    // Renewed at 5 s: expires at 15 s. b builds: never expires meanwhile.
    adm.handle_renew(1, a, t0 + Duration::from_secs(5)).unwrap();
    adm.begin_build(2, b).unwrap();
    assert_eq!(adm.begin_build(2, b), Err(BuildRefusal::InUse(b)));
    assert_eq!(adm.handle_renew(2, a, t0), Err(UnknownLease(a)));
    assert!(adm.handle_timeout(t0 + Duration::from_secs(12)).is_empty());
    assert_eq!(adm.handle_timeout(t0 + Duration::from_secs(15)), vec![a]);
    assert_eq!(adm.poll_timeout(), None);
    assert_eq!(adm.free(), 1);
    // b's build ends at 20 s: it expires at 30 s.
    adm.end_build(b, t0 + Duration::from_secs(20));
    assert!(adm.handle_timeout(t0 + Duration::from_secs(29)).is_empty());
    assert_eq!(adm.handle_timeout(t0 + Duration::from_secs(30)), vec![b]);
    assert_eq!(adm.free(), 2);
}

#[test]
fn a_vanished_session_loses_its_leases_but_running_builds_keep_their_slot() {
    let t0 = Instant::now();
    let mut adm = Admission::new(2, Duration::from_secs(10));
    let a = adm.handle_lease(1, t0).unwrap();
    let b = adm.handle_lease(1, t0).unwrap();
    adm.begin_build(1, b).unwrap();
    assert_eq!(adm.handle_disconnect(1), vec![b]);
    assert!(!adm.holds(1, a) && !adm.holds(1, b));
    // The cancelled build still runs: its slot is not free yet.
    assert_eq!(adm.free(), 1);
    assert_eq!(adm.running(), 1);
    let c = adm.handle_lease(2, t0).unwrap();
    assert_eq!(adm.handle_lease(2, t0), Err(Refusal::Busy));
    adm.end_build(b, t0);
    assert_eq!(adm.free(), 1);
    adm.handle_release(2, c);
    // Release while building: the slot stays taken until the build ends.
    let d = adm.handle_lease(3, t0).unwrap();
    adm.begin_build(3, d).unwrap();
    adm.handle_release(3, d);
    assert_eq!(adm.free(), 1);
    adm.end_build(d, t0);
    assert_eq!(adm.free(), 2);
}

#[test]
fn draining_refuses_new_leases_only() {
    let t0 = Instant::now();
    let mut adm = Admission::new(2, Duration::from_secs(10));
    let a = adm.handle_lease(1, t0).unwrap();
    adm.set_draining();
    assert_eq!(adm.handle_lease(1, t0), Err(Refusal::Draining));
    adm.begin_build(1, a).unwrap();
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_random(&[seed; 32])
}

fn q(k: &SecretKey) -> [u8; 32] {
    *k.public_key().ecc_q().unwrap()
}

#[test]
fn byte_stream_keys_are_proven_both_ways() {
    let (master, agent) = (key(1), key(2));
    let (m, hello) = MasterAuth::start(&master, [3; 32]).unwrap();
    let (a, challenge) = AgentAuth::handle_hello(&agent, hello, [4; 32], |k| {
        assert_eq!(*k, q(&master));
        Ok(())
    })
    .unwrap();
    let (proof, agent_q) = m
        .handle_challenge(&master, &challenge, |k| {
            assert_eq!(*k, q(&agent));
            Ok(())
        })
        .unwrap();
    assert_eq!(agent_q, q(&agent));
    assert_eq!(a.handle_proof(&proof).unwrap(), q(&master));
}

#[test]
fn byte_stream_impostors_are_refused() {
    let (master, agent, mallory) = (key(1), key(2), key(5));
    // An agent claiming another's key cannot sign for it.
    let (m, hello) = MasterAuth::start(&master, [3; 32]).unwrap();
    let (_, mut challenge) =
        AgentAuth::handle_hello(&mallory, hello.clone(), [4; 32], |_| Ok(())).unwrap();
    challenge.key = q(&agent);
    assert!(matches!(
        m.handle_challenge(&master, &challenge, |_| Ok(())),
        Err(AuthError::BadProof(_))
    ));
    // A replayed challenge (another master nonce) fails too.
    let (m2, _) = MasterAuth::start(&master, [9; 32]).unwrap();
    let (_, honest) = AgentAuth::handle_hello(&agent, hello.clone(), [4; 32], |_| Ok(())).unwrap();
    assert!(matches!(
        m2.handle_challenge(&master, &honest, |_| Ok(())),
        Err(AuthError::BadProof(_))
    ));
    // A master claiming another's key cannot prove it: its signature is
    // made with its own key.
    let forged = super::auth::AuthHello {
        key: q(&master),
        nonce: [3; 32],
    };
    let (a, challenge) =
        AgentAuth::handle_hello(&agent, forged.clone(), [4; 32], |_| Ok(())).unwrap();
    let message = super::auth::transcript(
        super::auth::MASTER_DOMAIN,
        &forged.key,
        &forged.nonce,
        &challenge.key,
        &challenge.nonce,
    );
    let proof = super::auth::AuthProof {
        signature: mallory.sign_ed25519(&message).unwrap().to_vec(),
    };
    assert!(matches!(
        a.handle_proof(&proof),
        Err(AuthError::BadProof(_))
    ));
    // The ACL decision is the caller's and stops the exchange.
    let (_, hello) = MasterAuth::start(&master, [3; 32]).unwrap();
    let refused = AgentAuth::handle_hello(&agent, hello, [4; 32], |k| {
        Err(AuthError::Unauthorized(super::auth::fingerprint(k)))
    });
    assert!(matches!(refused, Err(AuthError::Unauthorized(_))));
}

fn arb_request() -> impl Strategy<Value = Request> {
    let path = "/gnu/store/[a-z0-9]{1,40}";
    prop_oneof![
        Just(Request::Status),
        Just(Request::Lease),
        any::<u64>().prop_map(|lease| Request::Renew { lease }),
        any::<u64>().prop_map(|lease| Request::Release { lease }),
        proptest::collection::vec(path, 0..20).prop_map(|paths| Request::QueryMissing { paths }),
        Just(Request::Import),
        (any::<u64>(), path, any::<u64>(), any::<u64>()).prop_map(|(lease, drv, s, t)| {
            Request::Build(BuildRequest {
                lease,
                drv,
                max_silent_secs: s,
                timeout_secs: t,
            })
        }),
        proptest::collection::vec(path, 0..20).prop_map(|paths| Request::Export { paths }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip_in_any_split(req in arb_request(), cut in 0usize..64) {
        let msg = ToAgent::Request(req);
        let frame = codec::encode(&msg).unwrap();
        let cut = cut.min(frame.len());
        let mut buf = FrameBuffer::default();
        buf.push(&frame[..cut]);
        let first = buf.next_body().unwrap();
        if cut < frame.len() {
            prop_assert!(first.is_none());
            buf.push(&frame[cut..]);
        } else {
            buf.push(&[]);
        }
        let body = first.or_else(|| buf.next_body().unwrap()).unwrap();
        prop_assert_eq!(codec::decode::<ToAgent>(&body).unwrap(), msg);
        prop_assert_eq!(buf.pending(), 0);
    }

    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 1..200)) {
        let _ = codec::decode::<ToAgent>(&body);
        let _ = codec::decode::<ToMaster>(&body);
    }
}
