//! Admission: the agent's build slots, leased to masters. One table per
//! agent, shared by every session, so that however many masters share an
//! agent, no more builds run than it has slots.
//!
//! * A **lease** holds one slot for one session. It expires [`Admission::ttl`]
//!   after it was granted or last renewed, unless a build runs under it.
//! * At most one build runs under a lease at a time; a running build keeps
//!   its lease alive, and the expiry clock restarts when it ends.
//! * A session that goes away loses its leases (its builds are cancelled
//!   by the caller, which [`Admission::handle_disconnect`] tells which).
//!   A lease released or lost while its build runs keeps its slot until
//!   the build has ended: the slot count bounds running builds, not
//!   promises.
//! * While draining, no lease is granted; leases held go on until released.
//!
//! Calling order: `handle_*` as requests arrive, with `now`; after each,
//! arm a timer for [`Admission::poll_timeout`] and call
//! [`Admission::handle_timeout`] when it fires. Nothing here reads a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which session a lease belongs to (the caller numbers its sessions).
pub type SessionId = u64;

/// Why a lease was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every slot is leased.
    #[error("every build slot is leased")]
    Busy,
    /// The agent is draining.
    #[error("the agent is draining: it takes no new builds")]
    Draining,
}

/// A lease that is unknown, expired, or another session's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease {0} is unknown, expired or not this session's")]
pub struct UnknownLease(pub u64);

/// A lease that cannot take a build because one runs under it already.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildRefusal {
    /// The lease is not this session's.
    #[error(transparent)]
    Unknown(#[from] UnknownLease),
    /// A build runs under it already.
    #[error("a build already runs under lease {0}")]
    InUse(u64),
}

#[derive(Clone, Debug)]
struct Lease {
    /// `None` once released or its session is gone: it ends with its build.
    session: Option<SessionId>,
    expires: Instant,
    building: bool,
}

/// The lease table.
#[derive(Debug)]
pub struct Admission {
    slots: u32,
    ttl: Duration,
    leases: BTreeMap<u64, Lease>,
    next: u64,
    draining: bool,
}

impl Admission {
    /// A table of `slots` slots whose leases last `ttl` unless renewed.
    pub fn new(slots: u32, ttl: Duration) -> Self {
        Self {
            slots,
            ttl,
            leases: BTreeMap::new(),
            next: 1,
            draining: false,
        }
    }

    // Getters.

    /// Slots in all.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// How long a lease lasts unless renewed or used.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Slots not leased.
    pub fn free(&self) -> u32 {
        self.slots.saturating_sub(self.leased())
    }

    /// Slots leased.
    pub fn leased(&self) -> u32 {
        u32::try_from(self.leases.len()).unwrap_or(u32::MAX)
    }

    /// Builds running.
    pub fn running(&self) -> u32 {
        u32::try_from(self.leases.values().filter(|l| l.building).count()).unwrap_or(u32::MAX)
    }

    /// Whether the agent is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether `lease` is held by `session`.
    pub fn holds(&self, session: SessionId, lease: u64) -> bool {
        self.leases
            .get(&lease)
            .is_some_and(|l| l.session == Some(session))
    }

    // Input.

    /// A session asks for a slot.
    pub fn handle_lease(&mut self, session: SessionId, now: Instant) -> Result<u64, Refusal> {
        if self.draining {
            return Err(Refusal::Draining);
        }
        if self.free() == 0 {
            return Err(Refusal::Busy);
        }
        let id = self.next;
        self.next += 1;
        self.leases.insert(
            id,
            Lease {
                session: Some(session),
                expires: now + self.ttl,
                building: false,
            },
        );
        Ok(id)
    }

    /// A session extends its lease.
    pub fn handle_renew(
        &mut self,
        session: SessionId,
        lease: u64,
        now: Instant,
    ) -> Result<(), UnknownLease> {
        let ttl = self.ttl;
        let l = self.own(session, lease)?;
        l.expires = now + ttl;
        Ok(())
    }

    /// A session gives its lease back (nothing happens for a lease it
    /// does not hold). A build running under it goes on, and the lease
    /// ends with it.
    pub fn handle_release(&mut self, session: SessionId, lease: u64) {
        if let Ok(l) = self.own(session, lease) {
            if l.building {
                l.session = None;
            } else {
                self.leases.remove(&lease);
            }
        }
    }

    /// A build starts under `lease`.
    pub fn begin_build(&mut self, session: SessionId, lease: u64) -> Result<(), BuildRefusal> {
        let l = self.own(session, lease)?;
        if l.building {
            return Err(BuildRefusal::InUse(lease));
        }
        l.building = true;
        Ok(())
    }

    /// The build under `lease` ended: a released or orphaned lease ends
    /// now, a held one expires `ttl` from `now`.
    pub fn end_build(&mut self, lease: u64, now: Instant) {
        match self.leases.get_mut(&lease) {
            Some(l) if l.session.is_some() => {
                l.building = false;
                l.expires = now + self.ttl;
            }
            Some(_) => {
                self.leases.remove(&lease);
            }
            None => {}
        }
    }

    /// A session went away: its leases end. Returns those with a build
    /// running, which the caller cancels; they keep their slots until
    /// [`Admission::end_build`].
    pub fn handle_disconnect(&mut self, session: SessionId) -> Vec<u64> {
        let mut building = Vec::new();
        self.leases.retain(|id, l| {
            if l.session != Some(session) {
                return true;
            }
            if l.building {
                l.session = None;
                building.push(*id);
                true
            } else {
                false
            }
        });
        building
    }

    /// Stop granting leases.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Expire the leases due at `now`; returns them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<u64> {
        let due: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| !l.building && l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.leases.remove(id);
        }
        due
    }

    // Output.

    /// When the next lease expires, if any can.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.leases
            .values()
            .filter(|l| !l.building)
            .map(|l| l.expires)
            .min()
    }

    fn own(&mut self, session: SessionId, lease: u64) -> Result<&mut Lease, UnknownLease> {
        match self.leases.get_mut(&lease) {
            Some(l) if l.session == Some(session) => Ok(l),
            _ => Err(UnknownLease(lease)),
        }
    }
}
