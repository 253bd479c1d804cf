//! Frames from a peer, as the agent and the master read them: the byte
//! stream is cut into frames (sizes checked before buffering), each body
//! decoded with bincode's limit into both message types, and the decoded
//! messages fed to both ends' stream machines and to the lease table in
//! every order the input gives. Nothing may panic; whatever decodes must
//! re-encode to the same message.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use offload_core::proto::admission::Admission;
use offload_core::proto::codec::{self, FrameBuffer};
use offload_core::proto::stream::{AgentStream, MasterStream};
use offload_core::proto::{Request, ToAgent, ToMaster};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut buf = FrameBuffer::default();
    let mut agent_streams = [AgentStream::authenticating(), AgentStream::first(), AgentStream::request()];
    let mut master = MasterStream::for_request(&Request::Status);
    let mut admission = Admission::new(2, Duration::from_secs(1));
    for (i, piece) in data.chunks(7).enumerate() {
        buf.push(piece);
        loop {
            let body = match buf.next_body() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(_) => return,
            };
            let now = t0 + Duration::from_millis(i as u64 * 100);
            if let Ok(msg) = codec::decode::<ToAgent>(&body) {
                let again = codec::encode(&msg).expect("our own message encodes");
                assert_eq!(codec::decode::<ToAgent>(&again[4..]).expect("decodes"), msg);
                let session = (body.len() % 3) as u64;
                if let ToAgent::Request(r) = &msg {
                    match r {
                        Request::Lease => {
                            let _ = admission.handle_lease(session, now);
                        }
                        Request::Renew { lease } => {
                            let _ = admission.handle_renew(session, *lease, now);
                        }
                        Request::Release { lease } => admission.handle_release(session, *lease),
                        Request::Build(b) => {
                            if admission.begin_build(session, b.lease).is_ok() {
                                admission.end_build(b.lease, now);
                            }
                        }
                        _ => {
                            admission.handle_disconnect(session);
                        }
                    }
                }
                for s in &mut agent_streams {
                    let _ = s.handle(msg.clone());
                    let _ = s.next_request();
                }
                admission.handle_timeout(now);
                assert!(admission.leased() <= admission.slots());
                assert!(admission.running() <= admission.leased());
            }
            if let Ok(msg) = codec::decode::<ToMaster>(&body) {
                let again = codec::encode(&msg).expect("our own message encodes");
                assert_eq!(codec::decode::<ToMaster>(&again[4..]).expect("decodes"), msg);
                if master.handle(msg).is_err() || master.is_done() {
                    master = MasterStream::for_request(&Request::Export { paths: Vec::new() });
                }
            }
        }
    }
});
