//! The pool as one process sees it without `serve`: machines.scm, the
//! agents that answer a bounded mDNS browse, and one authenticated link
//! to each (for `status` and for a hook when `serve` is not running).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use offload_core::acl::Acl;

use crate::machines::load::{EvaluatorChoice, load};
use crate::pool::Pool;

/// What to look at.
pub struct Sources<'a> {
    /// machines.scm (absent: no static machines).
    pub machines: &'a Path,
    /// The ACL (absent: no discovered agent is authorized).
    pub acl: &'a Path,
    /// Our secret key (unreadable: no links, health unknown).
    pub key: &'a Path,
    /// How long to browse for agents (zero: not at all).
    pub browse: Duration,
    /// mDNS interfaces (all when empty).
    pub interfaces: &'a [String],
    /// Static machines from Nix's `builders` setting.
    pub nix: &'a [crate::machines::from_nix::NixEntry],
}

/// The pool, the ACL, and warnings for the user.
pub fn take(
    sources: &Sources<'_>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(Pool, Arc<Acl>, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut pool = Pool::default();
    // A missing file is no static machine.
    let loaded = load(sources.machines, EvaluatorChoice::Auto)?;
    warnings.extend(loaded.warnings);
    let mut statics = loaded.machines;
    statics.extend(sources.nix.iter().map(|e| e.machine.clone()));
    pool.set_static(&statics);
    for e in sources.nix {
        pool.set_mandatory(&e.machine.name, e.machine.port, &e.mandatory);
    }
    let acl = match offload_files::acl_file::load(sources.acl) {
        Ok(acl) => acl,
        Err(offload_files::acl_file::Error::Missing(_)) => {
            warnings.push(format!(
                "warning: no ACL at {}: no discovered agent is authorized",
                sources.acl.display()
            ));
            Acl::default()
        }
        Err(e) => return Err(e.into()),
    };
    if !sources.browse.is_zero() {
        let (adverts, browse_warnings) =
            crate::discover::browse(sources.browse, sources.interfaces)?;
        warnings.extend(browse_warnings);
        for advert in adverts {
            let authorized = advert
                .key
                .as_deref()
                .is_some_and(|k| acl.contains_fingerprint(k));
            pool.discovered(advert, authorized, 0);
        }
    }
    let acl = Arc::new(acl);
    // Health comes from an authenticated link to each agent.
    match offload_files::key_file::load_secret(sources.key) {
        Ok(key) => {
            let outcomes = runtime.block_on(crate::links::probe_all(
                pool.link_targets(),
                Arc::new(key),
                Arc::clone(&acl),
            ));
            for (target, outcome) in outcomes {
                pool.report_link(&target, outcome, 0);
            }
        }
        Err(e) => warnings.push(format!(
            "warning: {e}: health unknown (no link to any agent without our key)"
        )),
    }
    Ok((pool, acl, warnings))
}
