//! The agent's build service in-process, over QUIC on 127.0.0.1 and over
//! an in-memory byte stream: mutual key proof in the handshake, leases
//! across masters, import, builds with live logs, cancellation, export,
//! and hostile peers. Builds run in the embedded store's sandbox, on
//! derivations made by the real Nix 2.8.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload_core::proto::{BuildRequest, BuildStatus, FailureKind};
use offload_master::agent_link::{AgentLink, Expect, LinkError};
use offload_tests::agents::{
    Drvs, TestAgent, UdpRelay, acl_of, config, connect, key, runtime, wait_for,
};
use offload_tests::processes_with;

fn build_req(lease: u64, drv: &str) -> BuildRequest {
    BuildRequest {
        lease,
        drv: drv.to_owned(),
        max_silent_secs: 0,
        timeout_secs: 0,
    }
}

#[test]
fn mutually_authorized_peers_connect() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(2));
    let fp = agent_key.public_key().fingerprint();
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), Some(fp))
            .await
            .expect("connect");
        assert_eq!(link.peer_key(), *agent_key.public_key().ecc_q().unwrap());
        assert_eq!(link.welcome().status.slots, 2);
        let status = link.status().await.expect("status");
        assert_eq!((status.free, status.running), (2, 0));
        assert_eq!(status.store_dir, "/gnu/store");
        link.close().await;
    });
    assert_eq!(agent.service.sessions_opened(), 1);
}

#[test]
fn an_unauthorized_master_is_refused_in_the_handshake() {
    let rt = runtime();
    let (master, stranger, agent_key) = (key(1), key(3), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let err = rt
        .block_on(connect(agent.addr, &stranger, &acl_of(&[&agent_key]), None))
        .err()
        .expect("refused");
    assert!(
        matches!(&err, LinkError::Refused(m) if m.contains("our key is not in the agent's ACL")),
        "{err}"
    );
    // No session: nothing reached the application.
    assert_eq!(agent.service.sessions_opened(), 0);
}

#[test]
fn an_impostor_agent_is_refused_by_the_master() {
    let rt = runtime();
    let (master, honest, impostor) = (key(1), key(2), key(4));
    // The impostor holds its own key but advertises the honest agent's
    // fingerprint; both keys are in the master's ACL.
    let agent = TestAgent::start(&rt, Arc::clone(&impostor), acl_of(&[&master]), config(1));
    let err = rt
        .block_on(connect(
            agent.addr,
            &master,
            &acl_of(&[&honest, &impostor]),
            Some(honest.public_key().fingerprint()),
        ))
        .err()
        .expect("refused");
    let honest_fp = honest.public_key().fingerprint();
    assert!(
        matches!(&err, LinkError::Impostor(m) if m.contains(&format!("could not prove key {honest_fp}"))),
        "{err}"
    );
    assert_eq!(agent.service.sessions_opened(), 0);
}

#[test]
fn a_man_in_the_middle_with_its_own_key_is_refused() {
    let rt = runtime();
    let (master, agent_key, mitm) = (key(1), key(2), key(5));
    // The man in the middle answers at the agent's address with its own
    // key; the master expects the agent's key.
    let middle = TestAgent::start(&rt, Arc::clone(&mitm), acl_of(&[&master]), config(1));
    let err = rt
        .block_on(connect(
            middle.addr,
            &master,
            &acl_of(&[&agent_key]),
            Some(agent_key.public_key().fingerprint()),
        ))
        .err()
        .expect("refused");
    assert!(matches!(err, LinkError::Impostor(_)), "{err}");
    // Without an advertised key to expect, its key is not in our ACL.
    let err = rt
        .block_on(connect(middle.addr, &master, &acl_of(&[&agent_key]), None))
        .err()
        .expect("refused");
    assert!(
        matches!(&err, LinkError::Unauthorized(m) if m.contains("not in our ACL")),
        "{err}"
    );
}

/// A log callback, and what completes once it has seen `text`.
fn when_logged(
    text: &'static str,
) -> (impl FnMut(&[u8]) + Send, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let log = move |chunk: &[u8]| {
        if String::from_utf8_lossy(chunk).contains(text)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    };
    (log, rx)
}

/// Import `drv`'s closure (signed by `master`) over `link`.
async fn send_closure(
    link: &AgentLink,
    drvs: &Drvs,
    drv: &str,
    master: &offload_core::keys::SecretKey,
) {
    let closure = drvs.closure(&[drv]);
    let missing = link.query_missing(&closure).await.expect("query");
    let stream = drvs.signed_export(&missing, master).await;
    let imported = link.import(&mut &stream[..]).await.expect("import");
    assert_eq!(imported, missing);
    assert!(
        link.query_missing(&closure)
            .await
            .expect("query")
            .is_empty()
    );
}

#[test]
fn import_build_with_a_live_log_and_export() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let drvs = Drvs::new();
    let drv = drvs.sh(
        "live-log",
        "echo first line; /bin/sleep 2; echo second line; echo built > $out",
    );
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        send_closure(&link, &drvs, &drv, &master).await;
        let lease = link.lease().await.expect("lease");
        let start = Instant::now();
        let seen: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
        let mut log = {
            let seen = Arc::clone(&seen);
            move |chunk: &[u8]| {
                seen.lock()
                    .unwrap()
                    .push((start.elapsed(), String::from_utf8_lossy(chunk).into_owned()));
            }
        };
        let outcome = link
            .build(build_req(lease.id, &drv), &mut log)
            .await
            .expect("build");
        let finished = start.elapsed();
        assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
        let seen = seen.lock().unwrap().clone();
        let first = seen
            .iter()
            .find(|(_, text)| text.contains("first line"))
            .expect("the first line arrived");
        // The builder sleeps 2 s after its first line: it arrived while
        // the build ran, not with its end.
        assert!(
            finished - first.0 >= Duration::from_millis(1500),
            "first line at {:?}, end at {finished:?}",
            first.0
        );
        assert!(seen.iter().any(|(_, t)| t.contains("second line")));
        let (name, out) = &outcome.outputs[0];
        assert_eq!(name, "out");
        // The output comes back signed by the agent, with its references.
        let mut stream = Vec::new();
        link.export(std::slice::from_ref(out), &mut stream)
            .await
            .expect("export");
        let acl = acl_of(&[&agent_key]);
        let mut reader = offload_core::export::ExportReader::new(&stream[..], Default::default());
        let mut item = reader.next_item().unwrap().expect("one item");
        while item.nar().next_event().unwrap().is_some() {}
        let trailer = item.finish().unwrap();
        assert_eq!(trailer.path.to_string(), *out);
        assert!(offload_core::export::check_item(&trailer, &acl).is_valid());
        link.release(lease.id).await.expect("release");
        assert_eq!(link.status().await.unwrap().free, 1);
        link.close().await;
    });
}

#[test]
fn a_tampered_archive_is_refused_and_nothing_of_the_bad_item_is_kept() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let drvs = Drvs::new();
    let dep = drvs.sh("tamper-dep", "echo dep > $out");
    let drv = drvs.instantiate(&format!(
        "let dep = import {dep}; in derivation {{ name = \"tamper-top\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [\"-c\" \"echo ${{dep}} > $out\"]; }}"
    ));
    let closure = drvs.closure(&[&drv]);
    assert_eq!(closure.len(), 2, "{closure:?}");
    let mut stream = rt.block_on(drvs.signed_export(&closure, &master));
    // Change a byte of the second item's NAR (its `.drv` text, which holds
    // the quoted name; the trailer's path is not quoted): its hash no
    // longer matches the signed one.
    let needle = b"\"tamper-top\"";
    let at = stream
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the name is in the stream");
    let first_item_end = stream
        .windows(b"tamper-dep".len())
        .position(|w| w == b"tamper-dep")
        .unwrap();
    assert!(at > first_item_end);
    stream[at + 1] = b'T';
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        let err = link.import(&mut &stream[..]).await.expect_err("refused");
        assert!(
            matches!(&err, LinkError::Failed(f) if f.kind == FailureKind::Refused && f.message.contains(&closure[1])),
            "{err}"
        );
        // The session goes on.
        assert!(link.status().await.is_ok());
    });
    assert!(agent.has(&closure[0]), "the first, valid item is kept");
    assert!(
        !agent.has(&closure[1]),
        "nothing of the bad item is registered"
    );
    let leftovers: Vec<_> = std::fs::read_dir(agent.store_root().join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tamper-top") || n.starts_with(".offload-import"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn cancelled_and_abandoned_builds_leave_no_process() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(2));
    let drvs = Drvs::new();
    // The markers are in the builders' command lines before and after
    // the exec (sleep takes fractional seconds).
    let marker_a = format!("1000.000{}", std::process::id());
    let marker_b = format!("1001.000{}", std::process::id());
    let drv_a = drvs.sh(
        "cancel",
        &format!("echo started; exec /bin/sleep {marker_a}"),
    );
    let drv_b = drvs.sh(
        "abandon",
        &format!("echo started; exec /bin/sleep {marker_b}"),
    );
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        send_closure(&link, &drvs, &drv_a, &master).await;
        send_closure(&link, &drvs, &drv_b, &master).await;
        // Cancelled: the master drops the request once the build runs.
        let lease = link.lease().await.expect("lease");
        let (mut log, rx) = when_logged("started");
        {
            let build = link.build(build_req(lease.id, &drv_a), &mut log);
            tokio::pin!(build);
            tokio::select! {
                r = &mut build => panic!("finished: {r:?}"),
                _ = rx => {}
            }
            // (Read in a loop: a command line reads empty while it execs.)
            let seen = tokio::task::spawn_blocking({
                let m = marker_a.clone();
                move || wait_for(Duration::from_secs(5), || !processes_with(&m).is_empty())
            });
            assert!(seen.await.unwrap(), "the builder runs");
            // Dropping the request here cancels the build.
        }
        let gone = tokio::task::spawn_blocking({
            let m = marker_a.clone();
            move || wait_for(Duration::from_secs(20), || processes_with(&m).is_empty())
        });
        assert!(gone.await.unwrap(), "the cancelled builder is gone");
        // Abandoned: the master's connection closes while it builds.
        let lease = link.lease().await.expect("second lease");
        let (mut log, rx) = when_logged("started");
        tokio::select! {
            r = link.build(build_req(lease.id, &drv_b), &mut log) => panic!("finished: {r:?}"),
            _ = rx => {}
        }
        link.close().await;
    });
    assert!(
        wait_for(Duration::from_secs(20), || processes_with(&marker_b)
            .is_empty()),
        "the abandoned builder is gone"
    );
    assert!(
        wait_for(Duration::from_secs(10), || agent.service.status().free == 2),
        "the leases went with the master: {:?}",
        agent.service.status()
    );
}

#[test]
fn leases_are_shared_fairly_by_three_masters_and_never_exceed_the_slots() {
    let rt = runtime();
    let masters = [key(1), key(6), key(7)];
    let agent_key = key(2);
    let agent = TestAgent::start(
        &rt,
        Arc::clone(&agent_key),
        acl_of(&[&masters[0], &masters[1], &masters[2]]),
        config(2),
    );
    let drvs = Drvs::new();
    // Each build records when it ran; a distinct derivation per build.
    let built: Vec<String> = (0..30)
        .map(|i| {
            drvs.sh(
                &format!("slot-{i}"),
                "s=$(/bin/date +%s.%N); /bin/sleep 0.3; e=$(/bin/date +%s.%N); echo \"$s $e\" > $out",
            )
        })
        .collect();
    let max_running = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (service, max, watching) = (
            Arc::clone(&agent.service),
            Arc::clone(&max_running),
            Arc::clone(&watching),
        );
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                max.fetch_max(service.running(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let outputs: Vec<String> = rt.block_on(async {
        let mut links = Vec::new();
        for m in &masters {
            let link = connect(agent.addr, m, &acl_of(&[&agent_key]), None)
                .await
                .expect("connect");
            links.push(Arc::new(link));
        }
        // The .drv files, sent once.
        let all: Vec<&str> = built.iter().map(String::as_str).collect();
        let closure = drvs.closure(&all);
        let stream = drvs.signed_export(&closure, &masters[0]).await;
        links[0].import(&mut &stream[..]).await.expect("import");
        let mut tasks = Vec::new();
        for (i, drv) in built.iter().enumerate() {
            let link = Arc::clone(&links[i % 3]);
            let drv = drv.clone();
            tasks.push(tokio::spawn(async move {
                let lease = loop {
                    match link.lease().await {
                        Ok(l) => break l,
                        Err(LinkError::Failed(f)) if f.kind == FailureKind::Busy => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("lease: {e}"),
                    }
                };
                let outcome = link
                    .build(build_req(lease.id, &drv), &mut |_| {})
                    .await
                    .expect("build");
                assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
                link.release(lease.id).await.expect("release");
                outcome.outputs[0].1.clone()
            }));
        }
        let mut outs = Vec::new();
        for t in tasks {
            outs.push(t.await.expect("task"));
        }
        outs
    });
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(max_running.load(std::sync::atomic::Ordering::Relaxed) <= 2);
    // From the builders' own clocks: never more than 2 at once.
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for out in &outputs {
        let real = agent
            .store_root()
            .join("store")
            .join(out.trim_start_matches("/gnu/store/"));
        let text = std::fs::read_to_string(real).expect("output");
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
        edges.push((it.next().unwrap(), 1));
        edges.push((it.next().unwrap(), -1));
    }
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    assert!(peak <= 2, "{peak} builds ran at once");
    assert_eq!(agent.service.status().free, 2);
}

#[test]
fn an_unused_lease_expires_and_a_vanished_master_loses_its_leases() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let mut cfg = config(1);
    cfg.lease_ttl = Duration::from_millis(500);
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), cfg);
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        let lease = link.lease().await.expect("lease");
        assert_eq!(lease.ttl, Duration::from_millis(500));
        assert_eq!(link.status().await.unwrap().free, 0);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(link.status().await.unwrap().free, 1, "expired");
        let err = link.renew(lease.id).await.expect_err("gone");
        assert!(
            matches!(&err, LinkError::Failed(f) if f.kind == FailureKind::UnknownLease),
            "{err}"
        );
    });
}

#[test]
fn a_master_that_vanishes_without_a_word_loses_its_leases() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let relay = rt.block_on(UdpRelay::start(agent.addr));
    let link = rt.block_on(async {
        let link = connect(relay.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect through the relay");
        link.lease().await.expect("lease");
        link
    });
    assert_eq!(agent.service.status().free, 0);
    // The master's packets stop: no close, no reset, as if it were killed.
    relay.cut();
    let since = Instant::now();
    assert!(
        wait_for(Duration::from_secs(15), || agent.service.status().free == 1),
        "the lease outlived its master"
    );
    // Noticed by the idle timeout (4 s), not by the lease's 60 s.
    assert!(
        since.elapsed() < Duration::from_secs(10),
        "{:?}",
        since.elapsed()
    );
    drop(link);
}

/// An agent's byte-stream service and a master's link over an in-memory
/// pipe.
fn stdio_pair(
    rt: &tokio::runtime::Runtime,
    agent: &TestAgent,
    master: &Arc<offload_core::keys::SecretKey>,
    expect: Expect,
) -> (
    Result<AgentLink, LinkError>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    rt.block_on(async {
        let (master_end, agent_end) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(agent_end);
        let service = Arc::clone(&agent.service);
        let served = tokio::spawn(async move {
            offload_agent::service::stdio::serve(service, ar, aw)
                .await
                .map_err(|e| e.to_string())
        });
        let (mr, mw) = tokio::io::split(master_end);
        (
            AgentLink::connect_stream(mr, mw, master, &expect).await,
            served,
        )
    })
}

#[test]
fn the_byte_stream_session_proves_both_keys_and_serves_requests() {
    let rt = runtime();
    let (master, agent_key, stranger) = (key(1), key(2), key(3));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let drvs = Drvs::new();
    let drv = drvs.sh("over-stdio", "echo over stdio; echo ok > $out");
    let expect = Expect {
        acl: Arc::new(acl_of(&[&agent_key])),
        fingerprint: Some(agent_key.public_key().fingerprint()),
    };
    let (link, served) = stdio_pair(&rt, &agent, &master, expect.clone());
    let link = link.expect("connect over the byte stream");
    assert_eq!(link.peer_key(), *agent_key.public_key().ecc_q().unwrap());
    rt.block_on(async {
        send_closure(&link, &drvs, &drv, &master).await;
        let lease = link.lease().await.expect("lease");
        let mut log = Vec::new();
        let outcome = link
            .build(build_req(lease.id, &drv), &mut |c| log.extend_from_slice(c))
            .await
            .expect("build");
        assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
        assert!(String::from_utf8_lossy(&log).contains("over stdio"));
        let mut stream = Vec::new();
        link.export(&[outcome.outputs[0].1.clone()], &mut stream)
            .await
            .expect("export");
        assert!(!stream.is_empty());
        link.close().await;
        served.await.unwrap().expect("the session ended cleanly");
    });
    assert_eq!(
        agent.service.status().free,
        1,
        "the lease went with the session"
    );

    // A refused request (an unknown lease) leaves the session usable.
    let (link, _served) = stdio_pair(&rt, &agent, &master, expect.clone());
    let link = link.expect("connect again");
    rt.block_on(async {
        let err = link
            .build(build_req(999, &drv), &mut |_| {})
            .await
            .expect_err("no such lease");
        assert!(
            matches!(&err, LinkError::Failed(f) if f.kind == FailureKind::UnknownLease),
            "{err}"
        );
        let err = link
            .build(
                build_req(1, "/gnu/store/00000000000000000000000000000000-x"),
                &mut |_| {},
            )
            .await
            .expect_err("not a derivation");
        assert!(matches!(&err, LinkError::Failed(_)), "{err}");
        assert!(link.status().await.is_ok(), "the session goes on");
        link.close().await;
    });

    // A master whose key is not in the agent's ACL.
    let (link, served) = stdio_pair(&rt, &agent, &stranger, expect.clone());
    let err = link.err().expect("refused");
    assert!(
        matches!(&err, LinkError::Refused(m) if m.contains("not authorized")),
        "{err}"
    );
    assert!(rt.block_on(served).unwrap().is_err());

    // An agent that is not the one the machine advertises.
    let wrong = Expect {
        fingerprint: Some(stranger.public_key().fingerprint()),
        ..expect
    };
    let (link, _) = stdio_pair(&rt, &agent, &master, wrong);
    assert!(matches!(link, Err(LinkError::Impostor(_))));
}

#[test]
fn hostile_frames_get_an_error_and_a_closed_connection() {
    use offload_core::proto::{MAX_FRAME, ToMaster};
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "oversized",
            (u32::try_from(MAX_FRAME).unwrap() + 1)
                .to_le_bytes()
                .to_vec(),
        ),
        ("malformed", [&5u32.to_le_bytes()[..], &[0xff; 5]].concat()),
        // A Vec claiming 2^40 bytes inside a small frame.
        (
            "claimed length",
            [
                &10u32.to_le_bytes()[..],
                &[2, 0xfd],
                &(1u64 << 40).to_le_bytes(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        rt.block_on(async {
            let check = Arc::new(offload_net::identity::PeerCheck::new(|_| Ok(())));
            let config = offload_net::quic::client_config(Arc::clone(&master), check).unwrap();
            let endpoint = offload_net::quic::client(agent.addr).unwrap();
            let conn = endpoint
                .connect_with(config, agent.addr, "agent")
                .unwrap()
                .await
                .expect("handshake");
            // The hello first, then the hostile request stream.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let hello = offload_core::proto::ToAgent::Hello(offload_core::proto::Hello {
                versions: vec![1],
                software: "hostile".into(),
            });
            offload_net::framed::write_frame(&mut send, &hello).await.unwrap();
            send.finish().unwrap();
            let welcome: Option<ToMaster> = offload_net::framed::read_frame(&mut recv).await.unwrap();
            assert!(matches!(welcome, Some(ToMaster::Welcome(_))));
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut send, &bytes).await.unwrap();
            let answer: Option<ToMaster> = offload_net::framed::read_frame(&mut recv).await.unwrap();
            assert!(
                matches!(&answer, Some(ToMaster::Error(f)) if f.kind == FailureKind::Protocol),
                "{what}: {answer:?}"
            );
            let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("the agent closes the connection");
            assert!(
                matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 2u32.into()),
                "{what}: {reason}"
            );
        });
    }
    // The agent still serves others.
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        assert!(link.status().await.is_ok());
    });
}

#[test]
fn concurrent_builds_run_as_distinct_build_users() {
    assert!(
        offload_tests::running_as_root(),
        "this test needs root (build users exist only for root); CI runs it as root"
    );
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(2));
    let drvs = Drvs::new();
    let script = "/usr/bin/id -u > $out; /bin/sleep 1";
    let both = [drvs.sh("uid-a", script), drvs.sh("uid-b", script)];
    let outs = rt.block_on(async {
        let link = Arc::new(
            connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
                .await
                .expect("connect"),
        );
        let closure = drvs.closure(&[&both[0], &both[1]]);
        let stream = drvs.signed_export(&closure, &master).await;
        link.import(&mut &stream[..]).await.expect("import");
        let mut tasks = Vec::new();
        for drv in both.clone() {
            let link = Arc::clone(&link);
            tasks.push(tokio::spawn(async move {
                let lease = link.lease().await.expect("lease");
                let o = link
                    .build(build_req(lease.id, &drv), &mut |_| {})
                    .await
                    .expect("build");
                assert_eq!(o.status, BuildStatus::Built, "{o:?}");
                o.outputs[0].1.clone()
            }));
        }
        let mut outs = Vec::new();
        for t in tasks {
            outs.push(t.await.unwrap());
        }
        outs
    });
    let uids: Vec<u32> = outs
        .iter()
        .map(|o| {
            let real = agent
                .store_root()
                .join("store")
                .join(o.trim_start_matches("/gnu/store/"));
            std::fs::read_to_string(real)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_ne!(uids[0], uids[1], "two builds at once, one user: {uids:?}");
    let range = offload_store::embedded::users::FIRST_BUILD_UID
        ..offload_store::embedded::users::FIRST_BUILD_UID
            + offload_store::embedded::users::BUILD_USERS;
    assert!(uids.iter().all(|u| range.contains(u)), "{uids:?}");
}

#[test]
fn impure_variables_come_from_the_allow_list_and_never_show_in_a_command_line() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let secret = format!("secret-{}", std::process::id());
    let proxy = format!("http://user:{secret}@proxy.lan:3128");
    let mut cfg = config(1);
    cfg.impure_env.insert("http_proxy".into(), proxy.clone());
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), cfg);
    let drvs = Drvs::new();
    // A fixed output ("ok") that is right only if http_proxy is the
    // allowed value (compared by hash: the value itself must appear in no
    // command line, the builder's included) and PATH (set in this
    // process, not allowed) is empty.
    let digest = {
        use sha2::Digest;
        offload_core::hex::encode_lower(&sha2::Sha256::digest(proxy.as_bytes()))
    };
    let drv = drvs.instantiate(&format!(
        "derivation {{ name = \"impure\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [\"-c\" \"echo started; /bin/sleep 2; \
         h=$(printf %s \\\"$http_proxy\\\" | /usr/bin/sha256sum | /usr/bin/cut -c1-64); \
         if [ \\\"$h\\\" = {digest} ] && [ -z \\\"$PATH\\\" ]; \
         then printf ok > $out; else printf no > $out; fi\"]; \
         impureEnvVars = [\"http_proxy\" \"PATH\"]; outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; \
         outputHash = \"2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df\"; }}"
    ));
    rt.block_on(async {
        let link = connect(agent.addr, &master, &acl_of(&[&agent_key]), None)
            .await
            .expect("connect");
        send_closure(&link, &drvs, &drv, &master).await;
        let lease = link.lease().await.expect("lease");
        let (mut log, started) = when_logged("started");
        let build = link.build(build_req(lease.id, &drv), &mut log);
        tokio::pin!(build);
        tokio::select! {
            r = &mut build => panic!("ended early: {r:?}"),
            _ = started => {}
        }
        // While it runs, no process shows the secret in its command line.
        let shown = tokio::task::spawn_blocking({
            let s = secret.clone();
            move || processes_with(&s)
        })
        .await
        .unwrap();
        assert!(shown.is_empty(), "{shown:?}");
        let outcome = build.await.expect("build");
        assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
    });
}

#[test]
fn a_master_removed_from_the_acl_cannot_resume_its_tls_session() {
    let rt = runtime();
    let (master, agent_key) = (key(1), key(2));
    let agent = TestAgent::start(&rt, Arc::clone(&agent_key), acl_of(&[&master]), config(1));
    rt.block_on(async {
        // One client configuration for both connections: a client that
        // keeps its session tickets, as an attacker's would.
        let check = Arc::new(offload_net::identity::PeerCheck::new(|_| Ok(())));
        let config = offload_net::quic::client_config(Arc::clone(&master), check).unwrap();
        let endpoint = offload_net::quic::client(agent.addr).unwrap();
        let hello = |conn: quinn::Connection| async move {
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            let msg = offload_core::proto::ToAgent::Hello(offload_core::proto::Hello {
                versions: vec![1],
                software: "resumer".into(),
            });
            offload_net::framed::write_frame(&mut send, &msg)
                .await
                .ok()?;
            send.finish().ok()?;
            let answer: Option<offload_core::proto::ToMaster> =
                offload_net::framed::read_frame(&mut recv).await.ok()?;
            answer
        };
        let first = endpoint
            .connect_with(config.clone(), agent.addr, "agent")
            .unwrap()
            .await
            .expect("first connection");
        assert!(matches!(
            hello(first.clone()).await,
            Some(offload_core::proto::ToMaster::Welcome(_))
        ));
        first.close(0u32.into(), b"");
        // The operator removes the master's key.
        agent.service.set_acl(acl_of(&[]));
        let second = endpoint
            .connect_with(config, agent.addr, "agent")
            .unwrap()
            .await;
        let served = match second {
            Ok(conn) => hello(conn).await,
            Err(_) => None,
        };
        assert!(
            served.is_none(),
            "served after its key was removed: {served:?}"
        );
    });
    assert_eq!(agent.service.sessions_opened(), 1);
}
