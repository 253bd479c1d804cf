//! Preparing one build: choosing how builders are isolated (once per
//! run), then for each derivation its input closure, build directory,
//! sandbox, environment and log file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use offload_core::store_path::StorePath;
use offload_files::atomic;

use super::env::{
    EnvContext, HOME_DIR, build_dir_in_sandbox, environment, log_path, make_build_dir,
};
use super::job::Job;
use super::plan::{Node, load};
use super::{BuildOptions, Error, Profile, io_at};
use crate::embedded::EmbeddedStore;
use crate::embedded::claims::Claim;
use crate::embedded::drv_paths::Kind;
use crate::embedded::outputs;
use crate::embedded::runner;
use crate::embedded::sandbox::{self, Input, Isolation, Programs, Sandbox, Scratch, Spec, User};
use crate::embedded::users::BuildUser;
use crate::local::LocalStore;

/// How this run's builders are isolated.
pub(super) enum Mode {
    /// In sandboxes.
    Sandbox {
        /// The programs that make them.
        programs: Box<Programs>,
        /// Who the builders are.
        user: User,
    },
    /// Directly, as this user.
    Direct,
}

impl Mode {
    /// Sandboxes if they can be made here (`needed`: something will be
    /// built; else nothing is probed). Otherwise ([`fallback`]) direct
    /// builds with a warning, or an error.
    pub(super) fn choose(store: &EmbeddedStore, needed: bool) -> Result<Self, Error> {
        if !needed {
            return Ok(Self::Direct);
        }
        let user = User::current();
        let found = Programs::find().and_then(|programs| {
            sandbox::probe(&programs, user)?;
            Ok(programs)
        });
        let local = store.local();
        match found {
            Ok(programs) => {
                if let User::Build { .. } = user {
                    // Only root reaches the build and scratch directories.
                    let tmp = store.root().join("tmp");
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
                        .map_err(io_at(&tmp))?;
                }
                Ok(Self::Sandbox {
                    programs: Box::new(programs),
                    user,
                })
            }
            Err(why) => fallback(
                why,
                user,
                local.real_dir() == Path::new(local.store_dir().as_str()),
            ),
        }
    }
}

/// When no sandbox can be made (`why`): direct builds, with a warning —
/// unless we are root (a builder would run as root, with the run of the
/// machine) or the store's real directory is not its logical one
/// (`in_place` false), which are errors.
fn fallback(why: String, user: User, in_place: bool) -> Result<Mode, Error> {
    if let User::Build { .. } = user {
        return Err(Error::NoSandbox(why));
    }
    if !in_place {
        return Err(Error::Sandbox(why));
    }
    tracing::warn!(
        "builds are not isolated: {why}; builders run as this user, see the whole file system and network, and write to the store directly"
    );
    Ok(Mode::Direct)
}

/// Everything the build task of `node` needs.
pub(super) fn prepare(
    store: &EmbeddedStore,
    node: &Node,
    opts: &BuildOptions,
    mode: &Mode,
    claim: Claim,
) -> Result<Job, Error> {
    let local = store.local();
    let drv = &node.drv;
    // As root, a build user of its own (or wait for one).
    let build_user = match mode {
        Mode::Sandbox {
            user: User::Build { .. },
            ..
        } => Some(store.users().take().ok_or(Error::NoBuildUser)?),
        _ => None,
    };
    // Leftovers of an interrupted build are not valid: delete them.
    remove_outputs(local, &node.outputs);

    // The paths the outputs may refer to.
    let mut roots: Vec<StorePath> = Vec::new();
    for src in &node.parsed.input_srcs {
        roots.push(
            StorePath::parse_in(local.store_dir(), src)
                .map_err(|e| Error::Invalid(e.to_string()))?,
        );
    }
    for (input, wanted) in &node.parsed.input_drvs {
        let dep = StorePath::parse_in(local.store_dir(), input)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let dep_drv = load(local, &dep)?;
        for o in wanted {
            let path = dep_drv
                .outputs
                .get(o)
                .and_then(|o| StorePath::parse_in(local.store_dir(), &o.path).ok())
                .ok_or_else(|| Error::Invalid(format!("'{dep}' has no output '{o}'")))?;
            roots.push(path);
        }
    }
    let input_graph = closure(local, roots)?;

    let profile = opts
        .profile
        .unwrap_or_else(|| Profile::for_store_dir(local.store_dir()));
    let tmp = store.root().join("tmp");
    let build_dir = make_build_dir(&tmp, drv, profile)?;
    let result = job(
        store,
        node,
        opts,
        mode,
        (build_user, claim),
        profile,
        &build_dir,
        input_graph,
    );
    if result.is_err() {
        let _ = atomic::remove_tree(&build_dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn job(
    store: &EmbeddedStore,
    node: &Node,
    opts: &BuildOptions,
    mode: &Mode,
    (build_user, claim): (Option<BuildUser>, Claim),
    profile: Profile,
    build_dir: &Path,
    input_graph: BTreeMap<StorePath, Vec<StorePath>>,
) -> Result<Job, Error> {
    let local = store.local();
    let drv = &node.drv;
    let fixed = match &node.kind {
        Ok(Kind::Fixed(f)) => Some(f.clone()),
        _ => None,
    };
    // Where the builder sees its build directory, the host uid of the
    // files it makes, and the build user to give our files to.
    let user = match (mode, &build_user) {
        (_, Some(b)) => User::Build {
            uid: b.uid(),
            gid: b.uid(),
        },
        (Mode::Sandbox { user, .. }, None) => *user,
        (Mode::Direct, None) => User::MapRoot,
    };
    let (top, owner, owner_ids) = match mode {
        Mode::Sandbox { .. } => {
            let owner_ids = match user {
                User::Build { uid, gid } => {
                    std::os::unix::fs::chown(build_dir, Some(uid), Some(gid))
                        .map_err(io_at(build_dir))?;
                    Some((uid, gid))
                }
                User::MapRoot => None,
            };
            let inside = build_dir_in_sandbox(drv, profile);
            (inside, user.host_owner().0, owner_ids)
        }
        Mode::Direct => {
            if Path::new(HOME_DIR).exists() {
                return Err(Error::Invalid(format!(
                    "home directory '{HOME_DIR}' exists; please remove it to assure purity of builds without sandboxing"
                )));
            }
            let me = rustix::process::geteuid().as_raw();
            (build_dir.to_owned(), me, None)
        }
    };
    let top_str = top
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("build directory {} is not UTF-8", top.display())))?;
    let env = environment(
        &node.parsed,
        &EnvContext {
            store_dir: local.store_dir().as_str(),
            fixed: fixed.is_some(),
            build_dir,
            top: top_str,
            cores: opts.cores,
            profile,
            owner: owner_ids,
            impure_env: opts.impure_env.as_ref(),
        },
    )?;
    let log_path = log_path(&store.root().join("var/log"), drv);
    if let Some(parent) = log_path.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    let log = fs::File::create(&log_path).map_err(io_at(&log_path))?;
    let mut candidates: BTreeMap<String, StorePath> = input_graph
        .keys()
        .cloned()
        .chain(node.outputs.values().cloned())
        .map(|p| (p.hash_part().to_owned(), p))
        .collect();
    candidates.retain(|_, p| p.dir() == local.store_dir());

    // Last, as nothing after it may fail: the job removes it.
    let isolation = match mode {
        Mode::Sandbox { programs, .. } => {
            let mount_point = store.root().join("var/sandbox");
            fs::create_dir_all(&mount_point).map_err(io_at(&mount_point))?;
            let mut scratch_dir = build_dir.as_os_str().to_owned();
            scratch_dir.push(".sandbox");
            let scratch_dir = PathBuf::from(scratch_dir);
            let inputs = input_graph
                .keys()
                .filter(|p| p.dir() == local.store_dir())
                .map(|p| Input {
                    real: local.real_path(p),
                    base: p.base().to_owned(),
                });
            let scratch =
                Scratch::create(scratch_dir.clone(), inputs, user).map_err(io_at(&scratch_dir))?;
            // Killed but not gone (however the build ends): retire its user.
            let mut build_user = build_user;
            if let Some(u) = build_user.as_mut() {
                u.retire_if(scratch.leave_flag());
            }
            Isolation::Sandbox(Box::new(Sandbox {
                mount_point,
                scratch,
                logical_store: Path::new(local.store_dir().as_str()).to_owned(),
                build_dir_inside: top,
                private_network: fixed.is_none(),
                user,
                build_user,
                programs: (**programs).clone(),
            }))
        }
        Mode::Direct => Isolation::Direct,
    };
    Ok(Job {
        goal: node.goal_name(),
        spec: Spec {
            builder: node.parsed.builder.clone(),
            args: node.parsed.args.clone(),
            env,
            build_dir: build_dir.to_owned(),
            isolation,
            claim: Some(claim),
        },
        limits: runner::Limits {
            max_silent_time: opts.max_silent_time,
            timeout: opts.timeout,
            max_log_size: opts.max_log_size,
        },
        log,
        check: outputs::Check {
            drv: drv.clone(),
            outputs: node
                .outputs
                .iter()
                .map(|(name, path)| outputs::Output {
                    name: name.clone(),
                    path: path.clone(),
                    real: local.real_path(path),
                })
                .collect(),
            fixed,
            candidates,
            input_graph,
            ref_checks: node.ref_checks.clone(),
            owner,
        },
        keep_failed: opts.keep_failed,
    })
}

/// The closure of `roots` by the registered references, with each path's
/// references.
fn closure(
    store: &LocalStore,
    roots: Vec<StorePath>,
) -> Result<BTreeMap<StorePath, Vec<StorePath>>, Error> {
    let mut seen = BTreeMap::new();
    let mut todo = roots;
    while let Some(p) = todo.pop() {
        if seen.contains_key(&p) {
            continue;
        }
        let info = store
            .db()
            .path_info(&p)?
            .ok_or_else(|| Error::NotValid(p.to_string()))?;
        todo.extend(
            info.references
                .iter()
                .filter(|r| !seen.contains_key(*r))
                .cloned(),
        );
        seen.insert(p, info.references);
    }
    Ok(seen)
}

/// Delete whatever is at the outputs' paths unless they are valid.
pub(super) fn remove_outputs(store: &LocalStore, outputs: &BTreeMap<String, StorePath>) {
    for path in outputs.values() {
        if store.db().is_valid(path).unwrap_or(true) {
            continue;
        }
        let real = store.real_path(path);
        if let Err(e) = atomic::remove_tree(&real) {
            tracing::warn!("cannot remove {}: {e}", real.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_never_builds_without_a_sandbox() {
        let root = User::Build {
            uid: 30001,
            gid: 30001,
        };
        for in_place in [true, false] {
            let err = fallback("`setpriv` is missing".to_owned(), root, in_place)
                .err()
                .expect("refused");
            let text = err.to_string();
            assert!(
                text.contains("`setpriv` is missing") && text.contains("as root"),
                "{text}"
            );
        }
        assert!(matches!(
            fallback("no namespaces".to_owned(), User::MapRoot, true),
            Ok(Mode::Direct)
        ));
        assert!(matches!(
            fallback("no namespaces".to_owned(), User::MapRoot, false),
            Err(Error::Sandbox(_))
        ));
    }
}
