//! Build users: when we are root, each running build gets a uid (and a
//! group of the same number) of its own from [`FIRST_BUILD_UID`] on, as
//! Nix gives each build one of its `nixbld` users, so that concurrent
//! builds — for different masters — cannot signal, trace or write into
//! each other even where their namespaces would let them meet. No account
//! may use these uids or gids on the host.
//!
//! A uid is held by a `BuildUser` for the whole build and given back
//! when that is dropped, after the build's processes are gone (it lives
//! in the build's sandbox description, which outlives the processes).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// The first build user's uid (and gid).
pub const FIRST_BUILD_UID: u32 = 30001;
/// How many build users there are: at most this many builds run at once
/// as root; more wait for one to end.
pub const BUILD_USERS: u32 = 64;

/// The free build users of one store.
#[derive(Debug)]
pub(crate) struct BuildUsers {
    free: Mutex<BTreeSet<u32>>,
    /// Told when a user is given back (waiting builds look again).
    released: Arc<watch::Sender<u64>>,
}

impl BuildUsers {
    pub(crate) fn new(released: Arc<watch::Sender<u64>>) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new((FIRST_BUILD_UID..FIRST_BUILD_UID + BUILD_USERS).collect()),
            released,
        })
    }

    /// Whether a user is free now.
    pub(crate) fn any_free(&self) -> bool {
        !self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// A free user, if any.
    pub(crate) fn take(self: &Arc<Self>) -> Option<BuildUser> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let uid = free.pop_first()?;
        Some(BuildUser {
            uid,
            pool: Arc::clone(self),
            retire: None,
        })
    }
}

/// A build user held by one build.
#[derive(Debug)]
pub(crate) struct BuildUser {
    uid: u32,
    pool: Arc<BuildUsers>,
    /// Set when the build's processes would not end: the uid is retired
    /// (never handed out again by this process) instead of given back.
    retire: Option<Arc<AtomicBool>>,
}

impl BuildUser {
    /// Its uid, which is also its gid.
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }

    /// Retire the uid instead of giving it back if `flag` is set when this
    /// is dropped (the build's namespace would not end).
    pub(crate) fn retire_if(&mut self, flag: Arc<AtomicBool>) {
        self.retire = Some(flag);
    }
}

impl Drop for BuildUser {
    fn drop(&mut self) {
        if self
            .retire
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
        {
            tracing::warn!(
                uid = self.uid,
                "build user retired: its build's processes did not end"
            );
            return;
        }
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.uid);
        self.pool.released.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_build_holds_a_user_of_its_own_until_it_ends() {
        let pool = BuildUsers::new(Arc::new(watch::Sender::new(0)));
        let mut rx = pool.released.subscribe();
        let held: Vec<BuildUser> = (0..BUILD_USERS).map(|_| pool.take().unwrap()).collect();
        let uids: BTreeSet<u32> = held.iter().map(BuildUser::uid).collect();
        assert_eq!(uids.len() as u32, BUILD_USERS, "all distinct");
        assert!(pool.take().is_none(), "none left");
        rx.borrow_and_update();
        drop(held);
        assert!(rx.has_changed().unwrap());
        assert_eq!(pool.take().unwrap().uid(), FIRST_BUILD_UID);
        // A user whose build lingers is never handed out again.
        let mut user = pool.take().unwrap();
        let lingering = Arc::new(AtomicBool::new(false));
        user.retire_if(Arc::clone(&lingering));
        let uid = user.uid();
        lingering.store(true, Ordering::SeqCst);
        drop(user);
        let again: Vec<BuildUser> = std::iter::from_fn(|| pool.take()).collect();
        assert!(again.iter().all(|u| u.uid() != uid) && again.len() as u32 == BUILD_USERS - 1);
    }
}
