//! Checking what a successful builder left, before anything is moved into
//! the store or registered (Nix 2.8 `registerOutputs`, `builder.md` §3.1).
//! In a sandbox the outputs are still in the build's scratch store, under
//! the store's private `tmp/`: nothing reaches the world-readable store
//! before it is canonical and checked. Directly, they are in the store.
//!
//! 1. every output exists, and its top level belongs to the builder's
//!    user and is not group- or world-writable;
//! 2. a fixed output is copied to fresh inodes ([`fresh`]), so that no
//!    descriptor its builder handed out reaches what is registered;
//! 3. all outputs are canonicalised together ([`canonical`]);
//! 4. each output's NAR is hashed while it is scanned for the hash parts of
//!    the input closure and of the outputs (self-references included);
//! 5. a fixed output must hash to the declared hash (flat: a
//!    non-executable regular file's contents; recursive: the NAR) and refer
//!    to nothing;
//! 6. Nix's `allowedReferences`, `allowedRequisites`,
//!    `disallowedReferences` and `disallowedRequisites` hold (requisites:
//!    the closure, without the output itself);
//! 7. outputs referring to each other must not form a cycle; they are
//!    returned referenced-first, the order in which to register them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use offload_core::store_path::StorePath;

use super::canonical::{self, Canonicaliser};
use super::drv_paths::{FixedOutput, HashAlgo};
use super::fresh;
use crate::info::PathInfo;

/// One output to check.
pub(crate) struct Output {
    /// Its name (`out`, `dev`, …).
    pub(crate) name: String,
    /// Its store path.
    pub(crate) path: StorePath,
    /// Where its files go in the store.
    pub(crate) real: PathBuf,
}

/// Checked outputs: their registrations, in the order to register them,
/// and where each output's files now are (by name).
pub(crate) struct Checked {
    /// The registrations.
    pub(crate) infos: Vec<PathInfo>,
    /// The files of each output.
    pub(crate) files: BTreeMap<String, PathBuf>,
}

/// What to check after a successful build.
pub(crate) struct Check {
    /// The derivation built.
    pub(crate) drv: StorePath,
    /// Its outputs.
    pub(crate) outputs: Vec<Output>,
    /// Its fixed output's expected hash, for a fixed-output derivation.
    pub(crate) fixed: Option<FixedOutput>,
    /// Paths the outputs may refer to, by hash part: the input closure
    /// and the outputs themselves.
    pub(crate) candidates: BTreeMap<String, StorePath>,
    /// The references of every path of the input closure.
    pub(crate) input_graph: BTreeMap<StorePath, Vec<StorePath>>,
    /// The derivation's reference checks, in Nix's order.
    pub(crate) ref_checks: Vec<(RefCheck, BTreeSet<StorePath>)>,
    /// The user the builder ran as, who must own the outputs' files
    /// (they become ours).
    pub(crate) owner: u32,
}

/// One of Nix's reference checks (non-structured attributes: a list of
/// store paths and output names in an environment variable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefCheck {
    /// `allowedReferences`: every reference must be listed.
    AllowedReferences,
    /// `allowedRequisites`: every path of the closure must be listed.
    AllowedRequisites,
    /// `disallowedReferences`: no reference may be listed.
    DisallowedReferences,
    /// `disallowedRequisites`: no path of the closure may be listed.
    DisallowedRequisites,
}

impl RefCheck {
    /// All of them, in the order Nix applies them.
    pub(crate) const ALL: [Self; 4] = [
        Self::AllowedReferences,
        Self::AllowedRequisites,
        Self::DisallowedReferences,
        Self::DisallowedRequisites,
    ];

    /// The derivation attribute.
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Self::AllowedReferences => "allowedReferences",
            Self::AllowedRequisites => "allowedRequisites",
            Self::DisallowedReferences => "disallowedReferences",
            Self::DisallowedRequisites => "disallowedRequisites",
        }
    }

    fn allowed(self) -> bool {
        matches!(self, Self::AllowedReferences | Self::AllowedRequisites)
    }

    fn recursive(self) -> bool {
        matches!(self, Self::AllowedRequisites | Self::DisallowedRequisites)
    }
}

/// Check and canonicalise the outputs, whose files are at `at` (one path
/// per output, in order); in `fresh`, a directory of ours, a fixed
/// output's files are copied first. Their registrations and files, or why
/// the build's result is rejected.
pub(crate) fn check(c: &Check, at: &[PathBuf], fresh: Option<&Path>) -> Result<Checked, String> {
    if at.len() != c.outputs.len() {
        return Err(format!("internal error: {} output locations", at.len()));
    }
    let mut files: Vec<PathBuf> = at.to_vec();
    for (o, at) in c.outputs.iter().zip(at) {
        let meta = match fs::symlink_metadata(at) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "builder for '{}' failed to produce output path for output '{}' at '{}'",
                    c.drv,
                    o.name,
                    o.real.display()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", o.real.display())),
        };
        if (!meta.file_type().is_symlink() && meta.permissions().mode() & 0o022 != 0)
            || meta.uid() != c.owner
        {
            return Err(format!(
                "suspicious ownership or permission on '{}' for output '{}'; rejecting this build output",
                o.real.display(),
                o.name
            ));
        }
    }
    let mut owner = c.owner;
    if let (Some(_), Some(fresh_dir)) = (&c.fixed, fresh) {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(fresh_dir)
            .map_err(|e| format!("{}: {e}", fresh_dir.display()))?;
        for (o, file) in c.outputs.iter().zip(&mut files) {
            let copy = fresh_dir.join(o.path.base());
            fresh::copy_fresh(file, &copy, c.owner).map_err(|e| e.to_string())?;
            *file = copy;
        }
        owner = rustix::process::geteuid().as_raw();
    }
    // On what is hashed: the copy, for a fixed output.
    for (o, file) in c.outputs.iter().zip(&files) {
        if let Some(fixed) = &c.fixed
            && !fixed.recursive
            && !fs::symlink_metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o100 == 0)
        {
            return Err(format!(
                "output path '{}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)",
                o.path
            ));
        }
    }
    let mut canon = Canonicaliser::new(owner);
    for file in &files {
        canon.canonicalise(file).map_err(|e| e.to_string())?;
    }

    let candidates: Vec<&str> = c.candidates.keys().map(String::as_str).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut infos = BTreeMap::new();
    for (o, file) in c.outputs.iter().zip(&files) {
        let (nar_hash, nar_size, found) =
            canonical::nar_hash_and_references(file, &candidates).map_err(|e| e.to_string())?;
        let references: Vec<StorePath> = found
            .iter()
            .filter_map(|h| c.candidates.get(h).cloned())
            .collect();
        if let Some(fixed) = &c.fixed {
            check_fixed(c, o, file, fixed, &nar_hash, &references)?;
        }
        infos.insert(
            o.name.clone(),
            PathInfo {
                path: o.path.clone(),
                deriver: Some(c.drv.clone()),
                nar_hash,
                references,
                registration_time: now,
                nar_size,
            },
        );
    }
    check_references(c, &infos)?;
    let infos = order(c, infos)?;
    let files = c
        .outputs
        .iter()
        .zip(files)
        .map(|(o, f)| (o.name.clone(), f))
        .collect();
    Ok(Checked { infos, files })
}

/// Nix's `checkOutputs` for the reference checks, output by output.
fn check_references(c: &Check, infos: &BTreeMap<String, PathInfo>) -> Result<(), String> {
    if c.ref_checks.is_empty() {
        return Ok(());
    }
    let outputs: BTreeMap<&StorePath, &PathInfo> = infos.values().map(|i| (&i.path, i)).collect();
    let closure = |root: &StorePath| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![root.clone()];
        while let Some(p) = todo.pop() {
            let refs = match outputs.get(&p) {
                Some(info) => &info.references,
                None => c.input_graph.get(&p).map_or(&[][..], Vec::as_slice),
            };
            todo.extend(refs.iter().filter(|r| !seen.contains(*r)).cloned());
            seen.insert(p);
        }
        seen
    };
    for info in infos.values() {
        for (check, spec) in &c.ref_checks {
            let used: BTreeSet<StorePath> = if check.recursive() {
                let mut all = closure(&info.path);
                all.remove(&info.path);
                all
            } else {
                info.references.iter().cloned().collect()
            };
            let bad: Vec<String> = used
                .iter()
                .filter(|p| spec.contains(*p) != check.allowed())
                .map(|p| format!("\n  {p}"))
                .collect();
            if !bad.is_empty() {
                return Err(format!(
                    "output '{}' is not allowed to refer to the following paths:{}",
                    info.path,
                    bad.concat()
                ));
            }
        }
    }
    Ok(())
}

fn check_fixed(
    c: &Check,
    o: &Output,
    file: &Path,
    fixed: &FixedOutput,
    nar_hash: &[u8; 32],
    references: &[StorePath],
) -> Result<(), String> {
    if fixed.algo != HashAlgo::Sha256 {
        // Refused before building; kept as a guard.
        return Err(format!(
            "fixed-output hash algorithm '{}' is not supported",
            fixed.algo.name()
        ));
    }
    let got = if fixed.recursive {
        *nar_hash
    } else {
        canonical::file_hash(file).map_err(|e| format!("{}: {e}", o.real.display()))?
    };
    if got[..] != fixed.hash[..] {
        return Err(format!(
            "hash mismatch in fixed-output derivation '{}':\n  specified: {}\n     got:    {}",
            c.drv,
            FixedOutput::sri(fixed.algo, &fixed.hash),
            FixedOutput::sri(fixed.algo, &got)
        ));
    }
    if let Some(first) = references.first() {
        return Err(format!(
            "fixed-output derivations must not reference store paths: '{}' references {} distinct paths, e.g. '{first}'",
            o.path,
            references.len()
        ));
    }
    Ok(())
}

/// The registrations with every output after the outputs it refers to;
/// a cycle between outputs is an error, as in Nix.
fn order(c: &Check, mut infos: BTreeMap<String, PathInfo>) -> Result<Vec<PathInfo>, String> {
    let name_of: BTreeMap<&StorePath, &str> = c
        .outputs
        .iter()
        .map(|o| (&o.path, o.name.as_str()))
        .collect();
    let edges: BTreeMap<String, BTreeSet<String>> = infos
        .iter()
        .map(|(name, info)| {
            let refs = info
                .references
                .iter()
                .filter_map(|r| name_of.get(r).copied())
                .filter(|r| r != name)
                .map(str::to_owned)
                .collect();
            (name.clone(), refs)
        })
        .collect();
    // Depth-first post-order; at most a handful of outputs, so recursion
    // depth is bounded by the output count (MAX_OUTPUTS in the parser).
    fn visit(
        drv: &StorePath,
        name: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        sorted: &mut Vec<String>,
        parent: &str,
    ) -> Result<(), String> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(format!(
                    "cycle detected in build of '{drv}' in the references of output '{name}' from output '{parent}'"
                ));
            }
            None => {}
        }
        state.insert(name.to_owned(), false);
        for r in edges.get(name).into_iter().flatten() {
            visit(drv, r, edges, state, sorted, name)?;
        }
        state.insert(name.to_owned(), true);
        sorted.push(name.to_owned());
        Ok(())
    }
    let mut state = BTreeMap::new();
    let mut sorted = Vec::new();
    for name in edges.keys() {
        visit(&c.drv, name, &edges, &mut state, &mut sorted, name)?;
    }
    Ok(sorted
        .into_iter()
        .filter_map(|name| infos.remove(&name))
        .collect())
}
