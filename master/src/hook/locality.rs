//! Locality: before claiming, ask the best few machines which of the
//! derivation's inputs they lack (one round trip each, at once) and add
//! the time to send them to each estimate, so that a machine that already
//! holds most of the inputs wins over one as fast that holds none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use offload_core::acl::Acl;
use offload_core::derivation::Derivation;
use offload_core::keys::SecretKey;
use offload_core::store_path::StorePath;
use offload_store::store::Store;

use super::plan::Choice;
use crate::agent_link::AgentLink;

/// Machines asked at most.
pub(super) const ASKED: usize = 3;
/// How long asking may take in all.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the build needs from this host: the `.drv` closure, the outputs
/// of its inputs and their closure, each with its NAR size (what the
/// daemon will list after accept).
pub(super) async fn needed(
    store: &mut Store,
    drv: &StorePath,
) -> Result<BTreeMap<String, u64>, offload_store::store::Error> {
    let dir = store.store_dir().clone();
    let mut roots = vec![drv.clone()];
    // The hook's store is this host's: logical paths are real ones.
    let parsed = std::fs::read(drv.to_string())
        .ok()
        .and_then(|t| Derivation::parse(&t).ok());
    for input in parsed.iter().flat_map(|d| d.input_drvs.keys()) {
        let Some(d) = StorePath::parse_in(&dir, input)
            .ok()
            .and_then(|p| std::fs::read(p.to_string()).ok())
            .and_then(|t| Derivation::parse(&t).ok())
        else {
            continue;
        };
        for o in d.outputs.values() {
            if let Ok(p) = StorePath::parse_in(&dir, &o.path)
                && store.path_info(&p).await?.is_some()
            {
                roots.push(p);
            }
        }
    }
    let mut sizes = BTreeMap::new();
    for p in store.closure(&roots).await? {
        let size = store.path_info(&p).await?.map_or(0, |i| i.nar_size);
        sizes.insert(p.to_string(), size);
    }
    Ok(sizes)
}

/// A machine to try, and the link made to it while asking, if any.
pub(super) type Probed = (Choice, Option<AgentLink>);

/// `choices` without asking anything.
pub(super) fn unprobed(choices: Vec<Choice>) -> Vec<Probed> {
    choices.into_iter().map(|c| (c, None)).collect()
}

/// `choices` re-ranked: the first [`ASKED`] by estimate plus the time to
/// send what each lacks of `needed`; a machine that does not answer keeps
/// its place after those that did. The rest follow unchanged. The links
/// made to ask are kept for the claim.
pub(super) async fn rerank(
    mut choices: Vec<Choice>,
    needed: &BTreeMap<String, u64>,
    key: &Arc<SecretKey>,
    acl: &Arc<Acl>,
) -> Vec<Probed> {
    if choices.len() < 2 || needed.is_empty() {
        return unprobed(choices);
    }
    let rest = choices.split_off(choices.len().min(ASKED));
    let paths: Arc<Vec<String>> = Arc::new(needed.keys().cloned().collect());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in choices.iter().enumerate() {
        let (target, key, acl, paths) = (
            c.target.clone(),
            Arc::clone(key),
            Arc::clone(acl),
            Arc::clone(&paths),
        );
        tasks.spawn(async move {
            let link = crate::links::connect(&target, &key, acl).await.ok()?;
            let missing = link.query_missing(&paths).await.ok()?;
            Some((i, missing, link))
        });
    }
    let mut extra: Vec<Option<f64>> = vec![None; choices.len()];
    let mut links: Vec<Option<AgentLink>> = (0..choices.len()).map(|_| None).collect();
    let _ = tokio::time::timeout(ASK_TIMEOUT, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some((i, missing, link))) = done {
                let bytes: u64 = missing.iter().filter_map(|p| needed.get(p)).sum();
                extra[i] = Some(bytes as f64 / choices[i].throughput.max(1.0));
                links[i] = Some(link);
            }
        }
    })
    .await;
    let mut scored: Vec<(f64, usize, Probed)> = choices
        .into_iter()
        .zip(links)
        .enumerate()
        .map(|(i, (c, link))| {
            let score = extra[i].map_or(f64::INFINITY, |e| c.estimate_secs + e);
            (score, i, (c, link))
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .map(|(_, _, p)| p)
        .chain(unprobed(rest))
        .collect()
}
