//! The order of frames on a request stream, for each end (grammar in the
//! documentation of [`crate::proto`]). Each end feeds every frame it
//! receives to its machine; a frame out of order is a [`ProtocolError`],
//! after which the stream is unusable.

use super::auth::{AuthHello, AuthProof};
use super::messages::{Failure, Hello, Reply, Request, ToAgent, ToMaster, Welcome};

/// A frame arrived out of order, or broke a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub String);

fn unexpected(what: &str, frame: &str) -> ProtocolError {
    ProtocolError(format!("expected {what}, got {frame}"))
}

fn name_to_agent(m: &ToAgent) -> &'static str {
    match m {
        ToAgent::Hello(_) => "Hello",
        ToAgent::Request(_) => "a request",
        ToAgent::Data(_) => "Data",
        ToAgent::End => "End",
        ToAgent::Cancel => "Cancel",
        ToAgent::AuthHello(_) => "AuthHello",
        ToAgent::AuthProof(_) => "AuthProof",
    }
}

fn name_to_master(m: &ToMaster) -> &'static str {
    match m {
        ToMaster::Welcome(_) => "Welcome",
        ToMaster::Reply(_) => "a reply",
        ToMaster::Log(_) => "Log",
        ToMaster::Data(_) => "Data",
        ToMaster::End => "End",
        ToMaster::Error(_) => "Error",
        ToMaster::AuthChallenge(_) => "AuthChallenge",
    }
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Status(_) => "Status",
        Reply::Leased { .. } => "Leased",
        Reply::Renewed { .. } => "Renewed",
        Reply::Released => "Released",
        Reply::Missing { .. } => "Missing",
        Reply::Imported { .. } => "Imported",
        Reply::BuildStarted => "BuildStarted",
        Reply::BuildFinished(_) => "BuildFinished",
        Reply::Exporting => "Exporting",
    }
}

/// What the agent learns from a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// The byte-stream key exchange begins.
    AuthHello(AuthHello),
    /// The master's proof of its key.
    AuthProof(AuthProof),
    /// Version negotiation.
    Hello(Hello),
    /// A request.
    Request(Request),
    /// Import data.
    Data(Vec<u8>),
    /// The import's data is complete.
    End,
    /// The build is to stop.
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentState {
    AuthHello,
    AuthProof,
    Hello,
    Request,
    Importing,
    Building,
    Done,
}

/// The agent's view of one request stream.
#[derive(Debug)]
pub struct AgentStream {
    state: AgentState,
}

impl AgentStream {
    /// A byte-stream session's stream, before the keys are proven.
    pub fn authenticating() -> Self {
        Self {
            state: AgentState::AuthHello,
        }
    }

    /// A session's first stream: `Hello` comes first.
    pub fn first() -> Self {
        Self {
            state: AgentState::Hello,
        }
    }

    /// Any later stream: a request comes first.
    pub fn request() -> Self {
        Self {
            state: AgentState::Request,
        }
    }

    /// Whether the stream expects nothing more (its request was read whole).
    pub fn is_done(&self) -> bool {
        self.state == AgentState::Done
    }

    /// The agent ended the request itself (a build that finished): nothing
    /// more is read for it.
    pub fn end_request(&mut self) {
        if self.state == AgentState::Building {
            self.state = AgentState::Done;
        }
    }

    /// Make a finished stream take the next request (byte-stream sessions,
    /// where one stream carries one request after another).
    pub fn next_request(&mut self) -> Result<(), ProtocolError> {
        match self.state {
            AgentState::Done | AgentState::Request => {
                self.state = AgentState::Request;
                Ok(())
            }
            s => Err(ProtocolError(format!(
                "a new request before the last one was complete ({s:?})"
            ))),
        }
    }

    /// Take a received frame.
    pub fn handle(&mut self, frame: ToAgent) -> Result<AgentEvent, ProtocolError> {
        use AgentState as S;
        frame.validate().map_err(|e| ProtocolError(e.to_string()))?;
        let name = name_to_agent(&frame);
        let (next, event) = match (self.state, frame) {
            (S::AuthHello, ToAgent::AuthHello(h)) => (S::AuthProof, AgentEvent::AuthHello(h)),
            (S::AuthProof, ToAgent::AuthProof(p)) => (S::Hello, AgentEvent::AuthProof(p)),
            (S::Hello, ToAgent::Hello(h)) => (S::Done, AgentEvent::Hello(h)),
            (S::Request, ToAgent::Request(r)) => {
                let next = match r {
                    Request::Import => S::Importing,
                    Request::Build(_) => S::Building,
                    _ => S::Done,
                };
                (next, AgentEvent::Request(r))
            }
            (S::Importing, ToAgent::Data(d)) => (S::Importing, AgentEvent::Data(d)),
            (S::Importing, ToAgent::End) => (S::Done, AgentEvent::End),
            (S::Building, ToAgent::Cancel) => (S::Done, AgentEvent::Cancel),
            // A cancel that crossed its build's end on a byte stream.
            (S::Request, ToAgent::Cancel) => (S::Request, AgentEvent::Cancel),
            (state, _) => {
                self.state = S::Done;
                let want = match state {
                    S::AuthHello => "AuthHello",
                    S::AuthProof => "AuthProof",
                    S::Hello => "Hello",
                    S::Request => "a request",
                    S::Importing => "Data or End",
                    S::Building => "Cancel or nothing",
                    S::Done => "nothing more on this stream",
                };
                return Err(unexpected(want, name));
            }
        };
        self.state = next;
        Ok(event)
    }
}

/// What the master learns from a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum MasterEvent {
    /// The agent's answer to `Hello`.
    Welcome(Welcome),
    /// A reply (for a build: `BuildStarted`, then later `BuildFinished`).
    Reply(Reply),
    /// Build log.
    Log(Vec<u8>),
    /// Export data.
    Data(Vec<u8>),
    /// The export is complete.
    End,
    /// The request failed.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Welcome,
    Status,
    Leased,
    Renewed,
    Released,
    Missing,
    Imported,
    BuildStarted,
    BuildRunning,
    Exporting,
    ExportData,
    Done,
}

/// The master's view of one request stream.
#[derive(Debug)]
pub struct MasterStream {
    expect: Expect,
}

impl MasterStream {
    /// The stream on which `Hello` was sent.
    pub fn hello() -> Self {
        Self {
            expect: Expect::Welcome,
        }
    }

    /// The stream on which `request` was sent.
    pub fn for_request(request: &Request) -> Self {
        let expect = match request {
            Request::Status => Expect::Status,
            Request::Lease => Expect::Leased,
            Request::Renew { .. } => Expect::Renewed,
            Request::Release { .. } => Expect::Released,
            Request::QueryMissing { .. } => Expect::Missing,
            Request::Import => Expect::Imported,
            Request::Build(_) => Expect::BuildStarted,
            Request::Export { .. } => Expect::Exporting,
        };
        Self { expect }
    }

    /// Whether the answer is complete.
    pub fn is_done(&self) -> bool {
        self.expect == Expect::Done
    }

    /// Take a received frame.
    pub fn handle(&mut self, frame: ToMaster) -> Result<MasterEvent, ProtocolError> {
        use Expect as E;
        frame.validate().map_err(|e| ProtocolError(e.to_string()))?;
        let name = name_to_master(&frame);
        let (next, event) = match (self.expect, frame) {
            (E::Done, _) => return Err(unexpected("nothing more on this stream", name)),
            (_, ToMaster::Error(f)) => (E::Done, MasterEvent::Failed(f)),
            (E::Welcome, ToMaster::Welcome(w)) => (E::Done, MasterEvent::Welcome(w)),
            (E::BuildRunning, ToMaster::Log(l)) => (E::BuildRunning, MasterEvent::Log(l)),
            (E::ExportData, ToMaster::Data(d)) => (E::ExportData, MasterEvent::Data(d)),
            (E::ExportData, ToMaster::End) => (E::Done, MasterEvent::End),
            (expect, ToMaster::Reply(r)) => {
                let next = match (expect, &r) {
                    (E::Status, Reply::Status(_))
                    | (E::Leased, Reply::Leased { .. })
                    | (E::Renewed, Reply::Renewed { .. })
                    | (E::Released, Reply::Released)
                    | (E::Missing, Reply::Missing { .. })
                    | (E::Imported, Reply::Imported { .. })
                    | (E::BuildRunning, Reply::BuildFinished(_)) => E::Done,
                    (E::BuildStarted, Reply::BuildStarted) => E::BuildRunning,
                    (E::Exporting, Reply::Exporting) => E::ExportData,
                    _ => {
                        self.expect = E::Done;
                        return Err(ProtocolError(format!(
                            "unexpected reply {} (expected {expect:?})",
                            reply_name(&r)
                        )));
                    }
                };
                (next, MasterEvent::Reply(r))
            }
            (expect, _) => {
                self.expect = E::Done;
                return Err(unexpected(&format!("{expect:?}"), name));
            }
        };
        self.expect = next;
        Ok(event)
    }
}
