//! The messages of the protocol, one enum per direction (module
//! documentation of [`crate::proto`] for their order). Store paths travel
//! as strings and are parsed by the receiver, which knows its store
//! directory; [`ToAgent::validate`] and [`ToMaster::validate`] check every
//! count and length against the limits before anything else looks at a
//! message. Byte payloads are encoded as byte strings (`serde_bytes`: one
//! copy, not a call per byte; the same bytes on the wire as a sequence).

use serde::{Deserialize, Serialize};

use super::{MAX_CHUNK, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_NAMES, MAX_PATH_LEN, MAX_PATHS};

/// A frame from the master to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    /// The first frame of the first stream: the versions the master speaks.
    Hello(Hello),
    /// The first frame of every other stream.
    Request(Request),
    /// A chunk of an export stream being imported.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The import's data is complete.
    End,
    /// Stop the build running on this stream.
    Cancel,
    /// Byte-stream sessions only, before `Hello`: the master's key and nonce.
    AuthHello(super::auth::AuthHello),
    /// Byte-stream sessions only: the master's proof of its key.
    AuthProof(super::auth::AuthProof),
}

/// A frame from the agent to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToMaster {
    /// The answer to `Hello`.
    Welcome(Welcome),
    /// The answer to a request.
    Reply(Reply),
    /// A chunk of a build's log, as the builder wrote it.
    Log(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A chunk of an export stream.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The export stream is complete.
    End,
    /// The request failed; the stream ends here.
    Error(Failure),
    /// Byte-stream sessions only: the agent's key, nonce and proof.
    AuthChallenge(super::auth::AuthChallenge),
}

/// Version negotiation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the master speaks, best first.
    #[serde(deserialize_with = "bounded::versions")]
    pub versions: Vec<u32>,
    /// The master's software, for logs (`offload-master 0.1.0`).
    pub software: String,
}

/// The agent's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version chosen.
    pub version: u32,
    /// The agent's software, for logs.
    pub software: String,
    /// Its state now.
    pub status: Status,
}

/// What an agent is and how busy it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Its name (the advertised instance).
    pub name: String,
    /// Systems it builds for.
    #[serde(deserialize_with = "bounded::names")]
    pub systems: Vec<String>,
    /// Features it supports.
    #[serde(deserialize_with = "bounded::names")]
    pub features: Vec<String>,
    /// Its logical store directory.
    pub store_dir: String,
    /// Build slots.
    pub slots: u32,
    /// Slots not leased now.
    pub free: u32,
    /// Builds running now.
    pub running: u32,
    /// Normalized load (0 idle, 1 every core busy), in thousandths.
    pub load_milli: u32,
    /// Free bytes in its store.
    pub disk: u64,
    /// Finishing its work before stopping: no new leases.
    pub draining: bool,
    /// Relative speed, in thousandths.
    pub speed_milli: u32,
}

/// A request: the first frame of a stream other than the first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The agent's state.
    Status,
    /// Lease a build slot.
    Lease,
    /// Extend a lease.
    Renew {
        /// The lease.
        lease: u64,
    },
    /// Give a lease back.
    Release {
        /// The lease.
        lease: u64,
    },
    /// Which of these store items are not valid in the agent's store.
    QueryMissing {
        /// The items.
        #[serde(deserialize_with = "bounded::paths")]
        paths: Vec<String>,
    },
    /// Import the export stream that follows in `Data` frames.
    Import,
    /// Build a derivation already in the agent's store, under a lease.
    Build(BuildRequest),
    /// Send these items (valid in the agent's store, in this order) as an
    /// export stream signed with the agent's key.
    Export {
        /// The items.
        #[serde(deserialize_with = "bounded::paths")]
        paths: Vec<String>,
    },
}

/// What to build and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The lease it runs under.
    pub lease: u64,
    /// The `.drv` store path.
    pub drv: String,
    /// Kill the builder after this many seconds of silence (0: never).
    pub max_silent_secs: u64,
    /// Kill the builder after this many seconds (0: never).
    pub timeout_secs: u64,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The agent's state.
    Status(Status),
    /// A slot is leased.
    Leased {
        /// The lease.
        lease: u64,
        /// Milliseconds before it expires unless renewed or used.
        ttl_ms: u64,
    },
    /// The lease is extended.
    Renewed {
        /// Milliseconds before it expires unless renewed or used.
        ttl_ms: u64,
    },
    /// The lease is given back.
    Released,
    /// The items of the query that are not valid.
    Missing {
        /// The items.
        #[serde(deserialize_with = "bounded::paths")]
        paths: Vec<String>,
    },
    /// The import is complete: every item is valid now.
    Imported {
        /// The items of the stream, in order.
        #[serde(deserialize_with = "bounded::paths")]
        paths: Vec<String>,
    },
    /// The build runs; `Log` frames follow.
    BuildStarted,
    /// The build is over.
    BuildFinished(BuildOutcome),
    /// The export stream follows in `Data` frames.
    Exporting,
}

/// How a build ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildOutcome {
    /// What happened.
    pub status: BuildStatus,
    /// Why it failed, as the daemons say it.
    pub message: String,
    /// Its outputs by name (valid when it succeeded).
    #[serde(deserialize_with = "bounded::outputs")]
    pub outputs: Vec<(String, String)>,
}

/// The outcome for one derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildStatus {
    /// Built now.
    Built,
    /// Every output was valid already.
    AlreadyValid,
    /// The builder failed.
    Failed,
    /// Killed for silence or for running too long.
    TimedOut,
    /// Killed for writing too much log.
    LogLimitExceeded,
    /// Its outputs were refused.
    OutputRejected,
    /// A dependency failed.
    DependencyFailed,
    /// Cancelled by the master.
    Cancelled,
    /// Anything else (could not start, could not register).
    MiscFailure,
}

impl BuildStatus {
    /// `Built` or `AlreadyValid`.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Built | Self::AlreadyValid)
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind, for programs.
    pub kind: FailureKind,
    /// What went wrong, for people.
    pub message: String,
}

/// Kinds of failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// No version in common.
    Version,
    /// Frames out of order, malformed or over a limit.
    Protocol,
    /// Every slot is leased.
    Busy,
    /// The agent is draining: no new leases.
    Draining,
    /// The lease is unknown, expired or another session's.
    UnknownLease,
    /// An item is invalid, missing, or refused (bad signature, …).
    Refused,
    /// The store failed.
    Store,
    /// Anything else.
    Internal,
}

/// Sequences decoded with their limit: the decoder stops at the first
/// element past it, so a frame of a million empty strings never becomes a
/// million allocations before [`ToAgent::validate`] could refuse it.
mod bounded {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    use super::{MAX_NAMES, MAX_PATHS};

    struct Bounded<T>(usize, PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {} elements", self.0)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0).min(64));
            while let Some(x) = seq.next_element()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!("more than {} elements", self.0)));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    fn at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        max: usize,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(Bounded(max, PhantomData))
    }

    pub(super) fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most(d, MAX_PATHS)
    }

    pub(super) fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        at_most(d, MAX_NAMES)
    }

    pub(super) fn outputs<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        at_most(d, MAX_NAMES)
    }

    pub(super) fn versions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        at_most(d, 16)
    }
}

/// A message broke a limit (named in the text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct LimitError(pub String);

fn check_paths(what: &str, paths: &[String]) -> Result<(), LimitError> {
    if paths.len() > MAX_PATHS {
        return Err(LimitError(format!(
            "{what}: {} paths, at most {MAX_PATHS}",
            paths.len()
        )));
    }
    check_strings(what, paths, MAX_PATH_LEN)
}

fn check_strings(what: &str, items: &[String], max: usize) -> Result<(), LimitError> {
    match items.iter().find(|p| p.len() > max || p.is_empty()) {
        Some(p) => Err(LimitError(format!(
            "{what}: an entry of {} bytes (1 to {max} allowed)",
            p.len()
        ))),
        None => Ok(()),
    }
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        Err(LimitError(format!("{what}: {len} bytes, at most {max}")))
    } else {
        Ok(())
    }
}

impl Status {
    fn validate(&self) -> Result<(), LimitError> {
        check_len("name", self.name.len(), MAX_NAME_LEN)?;
        check_len("store directory", self.store_dir.len(), MAX_PATH_LEN)?;
        for (what, list) in [("systems", &self.systems), ("features", &self.features)] {
            if list.len() > MAX_NAMES {
                return Err(LimitError(format!(
                    "{what}: {} entries, at most {MAX_NAMES}",
                    list.len()
                )));
            }
            check_strings(what, list, MAX_NAME_LEN)?;
        }
        Ok(())
    }
}

impl ToAgent {
    /// Check every count and length against the protocol's limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Self::Hello(h) => {
                check_len("software", h.software.len(), MAX_NAME_LEN)?;
                if h.versions.is_empty() || h.versions.len() > 16 {
                    return Err(LimitError("hello: 1 to 16 versions".into()));
                }
                Ok(())
            }
            Self::Request(Request::QueryMissing { paths } | Request::Export { paths }) => {
                check_paths("request", paths)
            }
            Self::Request(Request::Build(b)) => check_paths("build", std::slice::from_ref(&b.drv)),
            Self::Request(_) | Self::End | Self::Cancel => Ok(()),
            Self::Data(d) => check_len("data chunk", d.len(), MAX_CHUNK),
            Self::AuthHello(_) | Self::AuthProof(_) => Ok(()),
        }
    }
}

impl ToMaster {
    /// Check every count and length against the protocol's limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Self::Welcome(w) => {
                check_len("software", w.software.len(), MAX_NAME_LEN)?;
                w.status.validate()
            }
            Self::Reply(Reply::Status(s)) => s.validate(),
            Self::Reply(Reply::Missing { paths } | Reply::Imported { paths }) => {
                check_paths("reply", paths)
            }
            Self::Reply(Reply::BuildFinished(o)) => {
                check_len("build message", o.message.len(), MAX_MESSAGE_LEN)?;
                if o.outputs.len() > MAX_NAMES {
                    return Err(LimitError(format!(
                        "build outputs: {}, at most {MAX_NAMES}",
                        o.outputs.len()
                    )));
                }
                for (name, path) in &o.outputs {
                    check_len("output name", name.len(), MAX_NAME_LEN)?;
                    check_len("output path", path.len(), MAX_PATH_LEN)?;
                }
                Ok(())
            }
            Self::Reply(_) | Self::End | Self::AuthChallenge(_) => Ok(()),
            Self::Log(d) => check_len("log chunk", d.len(), MAX_CHUNK),
            Self::Data(d) => check_len("data chunk", d.len(), MAX_CHUNK),
            Self::Error(f) => check_len("error message", f.message.len(), MAX_MESSAGE_LEN),
        }
    }
}
