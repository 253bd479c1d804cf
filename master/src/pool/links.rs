//! The pool's side of the authenticated links to agents: which machines
//! to connect to ([`Pool::link_targets`]) and what a link's outcome does
//! to a machine ([`Pool::set_link`]). Pure, like the rest of the pool.

use std::net::IpAddr;

use super::{Health, Machine, Pool, Source};

/// The UDP port agents serve QUIC on by default (static machines are
/// tried there).
pub const AGENT_PORT: u16 = 7441;

/// The state of a machine's link to its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not tried yet.
    Unknown,
    /// Both sides proved their keys and accepted each other.
    Ok,
    /// The last attempt failed.
    Failed {
        /// What kind of failure.
        kind: LinkFailure,
        /// Why, as `status` shows it (`refused: …`, `impostor: …`, …).
        reason: String,
    },
}

/// Kinds of link failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFailure {
    /// No answer, or the connection was lost.
    Unreachable,
    /// The agent refused our key.
    Refused,
    /// The agent's key is not in our ACL.
    Unauthorized,
    /// The agent could not prove the key it advertises.
    Impostor,
    /// The agent broke the protocol.
    Protocol,
}

impl LinkFailure {
    /// Whether the agent is reachable but must not be used (retrying
    /// will not help until someone changes a key or an ACL).
    pub fn is_trust_failure(self) -> bool {
        !matches!(self, Self::Unreachable)
    }
}

/// What an agent reports over its link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveStatus {
    /// Free build slots.
    pub free: u32,
    /// Normalized load.
    pub load: f64,
    /// Free store bytes.
    pub disk: u64,
    /// Draining: no new builds.
    pub draining: bool,
    /// How the link reaches the agent: `QUIC` or `SSH`.
    pub transport: &'static str,
}

/// Which machine a link belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TargetId {
    /// A discovered agent (possibly merged with a static entry).
    Instance(String),
    /// A static machine without an advertisement.
    Static {
        /// Its name.
        name: String,
        /// Its SSH port (part of its identity).
        port: u16,
    },
}

/// Where to connect for a machine, and which key to expect.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkTarget {
    /// The machine.
    pub id: TargetId,
    /// Host name to resolve when there are no addresses.
    pub host: String,
    /// Advertised addresses.
    pub addresses: Vec<IpAddr>,
    /// The agent's UDP port.
    pub port: u16,
    /// The advertised key fingerprint, which the agent must prove.
    pub fingerprint: Option<String>,
    /// The SSH fallback, when the machine's entry pins a host key.
    pub ssh: Option<crate::agent_link::ssh::SshRoute>,
}

/// The SSH route of a static entry that pins a host key.
fn ssh_route(
    s: &crate::machines::record::BuildMachine,
) -> Option<crate::agent_link::ssh::SshRoute> {
    Some(crate::agent_link::ssh::SshRoute {
        user: s.user.clone(),
        host: s.name.clone(),
        port: s.port,
        private_key: (!s.private_key.is_empty()).then(|| s.private_key.clone()),
        host_key: crate::agent_link::ssh::host_key_of(&s.host_key)?,
    })
}

fn target_of(m: &Machine) -> Option<LinkTarget> {
    match (&m.advert, &m.static_entry) {
        (Some(a), _) => (m.advert_authorized || m.static_entry.is_some())
            .then(|| LinkTarget {
                id: TargetId::Instance(a.instance.clone()),
                host: a.host.clone(),
                addresses: a.addresses.clone(),
                port: a.port,
                fingerprint: a.key.clone(),
                ssh: m.static_entry.as_ref().and_then(ssh_route),
            })
            .filter(|_| !matches!(m.live.health, Health::Vanished { .. })),
        (None, Some(s)) => Some(LinkTarget {
            id: TargetId::Static {
                name: s.name.clone(),
                port: s.port,
            },
            host: s.name.clone(),
            addresses: Vec::new(),
            port: AGENT_PORT,
            fingerprint: None,
            ssh: ssh_route(s),
        }),
        (None, None) => None,
    }
}

fn is(m: &Machine, id: &TargetId) -> bool {
    match id {
        TargetId::Instance(i) => m.advert.as_ref().is_some_and(|a| a.instance == *i),
        TargetId::Static { name, port } => {
            m.advert.is_none()
                && m.static_entry
                    .as_ref()
                    .is_some_and(|s| s.name == *name && s.port == *port)
        }
    }
}

impl Machine {
    /// Where to reach this machine's agent, if anywhere.
    pub fn link_target(&self) -> Option<LinkTarget> {
        target_of(self)
    }
}

impl Pool {
    /// The machines whose agents a master should keep a link to: every
    /// advertised agent whose key is in the ACL (or that a static entry
    /// names), and every static machine (tried on [`AGENT_PORT`]).
    pub fn link_targets(&self) -> Vec<LinkTarget> {
        self.machines.iter().filter_map(target_of).collect()
    }

    /// The outcome of a link made to `target`, if the machine still has
    /// that target (the same addresses, port and expected key): news of a
    /// link to what a machine advertised before is dropped.
    pub fn report_link(
        &mut self,
        target: &LinkTarget,
        outcome: Result<LiveStatus, (LinkFailure, String)>,
        now_ms: u64,
    ) {
        let current = self
            .machines
            .iter()
            .find(|m| is(m, &target.id))
            .and_then(target_of);
        if current.as_ref() == Some(target) {
            self.set_link(&target.id, outcome, now_ms);
        }
    }

    /// The outcome of a link to `id`: with a status, the link is up and
    /// the machine's live state comes from it (and a discovered agent
    /// whose proven key is in the ACL joins the static entry it matches);
    /// with a failure, the state is cleared and the reason kept.
    pub fn set_link(
        &mut self,
        id: &TargetId,
        outcome: Result<LiveStatus, (LinkFailure, String)>,
        now_ms: u64,
    ) {
        let Some(i) = self.machines.iter().position(|m| is(m, id)) else {
            return;
        };
        let m = &mut self.machines[i];
        match outcome {
            Ok(s) => {
                m.live.link = Link::Ok;
                m.live.free_slots = Some(s.free);
                m.live.load = Some(s.load);
                m.live.disk = Some(s.disk);
                m.live.draining = s.draining;
                m.live.transport = Some(s.transport);
                m.live.last_seen_ms = Some(now_ms);
                m.live.unreachable_since_ms = None;
                if m.advert.is_some() || matches!(m.live.health, Health::Unhealthy { .. }) {
                    m.live.health = Health::Healthy;
                }
                self.join_static(i);
            }
            Err((kind, reason)) => {
                if kind == LinkFailure::Unreachable {
                    m.live.unreachable_since_ms.get_or_insert(now_ms);
                } else {
                    m.live.unreachable_since_ms = None;
                }
                m.live.link = Link::Failed { kind, reason };
                m.live.transport = None;
                m.live.free_slots = None;
                m.live.load = None;
                m.live.disk = None;
                if kind == LinkFailure::Unreachable
                    && m.advert.is_some()
                    && m.live.health == Health::Healthy
                {
                    m.live.health = Health::Unhealthy { since_ms: now_ms };
                }
            }
        }
    }

    /// A discovered machine whose key is now proven joins the static
    /// entry it matches (by host and SSH port), if that entry has no
    /// agent of its own.
    fn join_static(&mut self, i: usize) {
        let m = &self.machines[i];
        let Some(advert) = m.advert.clone() else {
            return;
        };
        if m.static_entry.is_some() || !m.advert_authorized {
            return;
        }
        let Some(j) = self.machines.iter().position(|s| {
            s.advert.is_none()
                && s.static_entry.is_some()
                && Self::advert_matches(
                    &Machine {
                        key: None,
                        ..s.clone()
                    },
                    &advert,
                )
        }) else {
            return;
        };
        let agent = self.machines[i].clone();
        let s = &mut self.machines[j];
        s.advert = Some(advert);
        s.key = agent.key;
        s.advert_authorized = true;
        s.live = agent.live;
        s.source = Source::Both;
        self.machines.remove(i);
    }
}
