//! Outputs being built, by any build of this process: two builds of the
//! same output never run at once, whoever asked for them (an agent builds
//! for several masters). A build claims all its outputs before it starts
//! (all or none) and holds the [`Claim`] until its outputs are registered
//! or given up; the claim travels with the build's task, so that a
//! cancelled build gives it back only once its processes are gone and
//! whatever it had started moving into the store has been moved.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use offload_core::store_path::StorePath;
use tokio::sync::watch;

/// The outputs claimed in one store.
#[derive(Debug)]
pub(crate) struct Claims {
    busy: Mutex<BTreeSet<StorePath>>,
    /// Told when outputs are given back (waiting builds look again).
    released: Arc<watch::Sender<u64>>,
}

impl Claims {
    pub(crate) fn new(released: Arc<watch::Sender<u64>>) -> Arc<Self> {
        Arc::new(Self {
            busy: Mutex::new(BTreeSet::new()),
            released,
        })
    }

    /// Claim `outputs`, all or none; `None` if one of them is claimed.
    pub(crate) fn claim<'a>(
        self: &Arc<Self>,
        outputs: impl Iterator<Item = &'a StorePath> + Clone,
    ) -> Option<Claim> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if outputs.clone().any(|o| busy.contains(o)) {
            return None;
        }
        busy.extend(outputs.clone().cloned());
        Some(Claim {
            claims: Arc::clone(self),
            outputs: outputs.cloned().collect(),
        })
    }
}

/// Outputs claimed by one build; given back when dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Arc<Claims>,
    outputs: Vec<StorePath>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut busy = self
            .claims
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for o in &self.outputs {
            busy.remove(o);
        }
        drop(busy);
        self.claims.released.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_none_until_dropped() {
        let claims = Claims::new(Arc::new(watch::Sender::new(0)));
        let p = |s: &str| {
            StorePath::parse(&format!("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-{s}")).unwrap()
        };
        let (a, b, c) = (p("a"), p("b"), p("c"));
        let first = claims.claim([&a, &b].into_iter()).unwrap();
        assert!(claims.claim([&b, &c].into_iter()).is_none(), "b is taken");
        let third = claims
            .claim([&c].into_iter())
            .expect("c alone is free: none was taken above");
        drop(first);
        assert!(claims.claim([&a, &b].into_iter()).is_some());
        drop(third);
    }
}
