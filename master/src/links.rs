//! Authenticated links to agents, for `serve` (kept up, polled every
//! [`POLL`]) and `status` (once). The pool says where to connect
//! (`Pool::link_targets`) and takes what each link says
//! (`Pool::set_link`): live state comes from the agent's answers over a
//! link on which it proved its key, never from its TXT record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::proto;

use crate::agent_link::{AgentLink, Expect, LinkError};
use crate::pool::{LinkFailure, LinkTarget, LiveStatus, TargetId};

/// How often a live link is asked for the agent's status.
pub const POLL: Duration = Duration::from_millis(1000);
/// How long a status may take before the agent counts as unreachable.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long resolving a static machine's name may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two attempts to reach an agent.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a link reports to the pool.
pub type Outcome = Result<LiveStatus, (LinkFailure, String)>;

/// Where links come from and where their news goes (the pool, behind
/// whatever lock its owner uses).
pub trait Board: Send + Sync + 'static {
    /// The targets now, and the ACL agents must be in.
    fn targets(&self) -> (Vec<LinkTarget>, Arc<Acl>);
    /// News of a link made to `target` (ignored if the machine's target
    /// changed meanwhile).
    fn report(&self, target: &LinkTarget, outcome: Outcome);
}

/// The live state in an agent's status.
pub fn live(s: &proto::Status, link: &AgentLink) -> LiveStatus {
    LiveStatus {
        free: s.free,
        load: f64::from(s.load_milli) / 1000.0,
        disk: s.disk,
        draining: s.draining,
        transport: link.transport(),
    }
}

/// The pool's view of a failed link.
pub fn failure(e: &LinkError) -> (LinkFailure, String) {
    let kind = match e {
        LinkError::Unreachable(_) | LinkError::Lost(_) => LinkFailure::Unreachable,
        LinkError::Refused(_) => LinkFailure::Refused,
        LinkError::Unauthorized(_) => LinkFailure::Unauthorized,
        LinkError::Impostor(_) => LinkFailure::Impostor,
        LinkError::Protocol(_) | LinkError::Failed(_) => LinkFailure::Protocol,
    };
    (kind, e.to_string())
}

/// Connect to `target`: its advertised addresses, or its host name
/// resolved, one after the other.
pub async fn connect(
    target: &LinkTarget,
    key: &Arc<SecretKey>,
    acl: Arc<Acl>,
) -> Result<AgentLink, LinkError> {
    let mut addrs: Vec<SocketAddr> = target
        .addresses
        .iter()
        .map(|ip| SocketAddr::new(*ip, target.port))
        .collect();
    if addrs.is_empty() {
        // A name no resolver answers for must not hold the link up.
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        addrs = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| {
                LinkError::Unreachable(format!(
                    "{}: no address within {} s",
                    target.host,
                    LOOKUP_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| LinkError::Unreachable(format!("{}: {e}", target.host)))?
            .collect();
    }
    let expect = Expect {
        acl,
        fingerprint: target.fingerprint.clone(),
    };
    let mut last = LinkError::Unreachable(format!("{}: no address", target.host));
    for addr in addrs {
        let quic = AgentLink::connect_quic(addr, Arc::clone(key), expect.clone());
        // With an SSH route, QUIC gets less time: on a LAN its handshake
        // takes milliseconds, and silence means UDP does not get through.
        let attempt = match &target.ssh {
            Some(_) => tokio::time::timeout(QUIC_BEFORE_SSH, quic)
                .await
                .unwrap_or_else(|_| {
                    Err(LinkError::Unreachable(format!(
                        "{addr}: no QUIC answer within {} ms",
                        QUIC_BEFORE_SSH.as_millis()
                    )))
                }),
            None => quic.await,
        };
        match attempt {
            Ok(link) => return Ok(link),
            // A refusal or an impostor is the answer; another address
            // would not change it.
            Err(e) if !matches!(e, LinkError::Unreachable(_) | LinkError::Lost(_)) => {
                return Err(e);
            }
            Err(e) => last = e,
        }
    }
    // QUIC did not get through (UDP blocked, no agent service listening):
    // the SSH fallback, when the machine's entry pins its host key.
    match &target.ssh {
        Some(route) => {
            tracing::info!(host = %target.host, "QUIC unreachable ({last}); trying SSH");
            crate::agent_link::ssh::connect(route, key, &expect)
                .await
                .map_err(|e| match e {
                    LinkError::Unreachable(why) => {
                        LinkError::Unreachable(format!("{last}; and over SSH: {why}"))
                    }
                    other => other,
                })
        }
        None => Err(last),
    }
}

/// How long `probe_all` gives one target (QUIC, then SSH if need be).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long QUIC is tried before the SSH fallback.
pub const QUIC_BEFORE_SSH: Duration = Duration::from_millis(1500);

/// Connect to every target once, at once (each for at most
/// [`PROBE_TIMEOUT`]); what each said, with the target it was said for.
pub async fn probe_all(
    targets: Vec<LinkTarget>,
    key: Arc<SecretKey>,
    acl: Arc<Acl>,
) -> Vec<(LinkTarget, Outcome)> {
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let (key, acl) = (Arc::clone(&key), Arc::clone(&acl));
        tasks.spawn(async move {
            let attempt = tokio::time::timeout(PROBE_TIMEOUT, connect(&target, &key, acl)).await;
            let attempt = attempt.unwrap_or_else(|_| {
                Err(LinkError::Unreachable(format!(
                    "{}: no agent answered within {} s",
                    target.host,
                    PROBE_TIMEOUT.as_secs()
                )))
            });
            let outcome = match attempt {
                Ok(link) => {
                    let status = live(&link.welcome().status, &link);
                    link.close().await;
                    Ok(status)
                }
                Err(e) => Err(failure(&e)),
            };
            (target, outcome)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(pair) = done {
            out.push(pair);
        }
    }
    out
}

/// Keep a link to every target of `board` until the future is dropped:
/// one task per target, restarted when the target changes (new
/// addresses, port or key) or the ACL does, and stopped when it goes away.
pub async fn maintain(board: Arc<dyn Board>, key: Arc<SecretKey>) {
    let mut tasks: HashMap<TargetId, (LinkTarget, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut acl_seen: Option<Arc<Acl>> = None;
    loop {
        let (targets, acl) = board.targets();
        // A new ACL: every link proves its agent again against it.
        let acl_changed = acl_seen.as_ref().is_none_or(|a| !Arc::ptr_eq(a, &acl));
        acl_seen = Some(Arc::clone(&acl));
        tasks.retain(|_, (old, task)| {
            let keep = !acl_changed && targets.contains(old) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for target in targets {
            if !tasks.contains_key(&target.id) {
                let task = tokio::spawn(keep_up(
                    Arc::clone(&board),
                    target.clone(),
                    Arc::clone(&key),
                    Arc::clone(&acl),
                ));
                tasks.insert(target.id.clone(), (target, task));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One target: connect, poll, report; reconnect with a back-off.
async fn keep_up(board: Arc<dyn Board>, target: LinkTarget, key: Arc<SecretKey>, acl: Arc<Acl>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match connect(&target, &key, Arc::clone(&acl)).await {
            Ok(link) => {
                backoff = Duration::from_millis(500);
                tracing::info!(target = ?target.id, "linked");
                board.report(&target, Ok(live(&link.welcome().status, &link)));
                loop {
                    tokio::time::sleep(POLL).await;
                    match tokio::time::timeout(POLL_TIMEOUT, link.status()).await {
                        Ok(Ok(status)) => board.report(&target, Ok(live(&status, &link))),
                        Ok(Err(e)) => {
                            tracing::info!(target = ?target.id, "link lost: {e}");
                            board.report(&target, Err(failure(&e)));
                            break;
                        }
                        Err(_) => {
                            let e = LinkError::Unreachable(format!(
                                "no answer within {} ms",
                                POLL_TIMEOUT.as_millis()
                            ));
                            tracing::info!(target = ?target.id, "{e}");
                            board.report(&target, Err(failure(&e)));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(target = ?target.id, "cannot link: {e}");
                board.report(&target, Err(failure(&e)));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
