//! The builder's surroundings: its environment, build directory and log
//! file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use offload_core::derivation::Derivation;
use offload_core::nixbase32;
use offload_core::store_path::StorePath;

use super::{Error, io_at};
use crate::embedded::drv_paths;
use crate::local::LocalStore;

/// Nix's home directory for builders, which must not exist.
pub(super) const HOME_DIR: &str = "/homeless-shelter";

/// The builder's environment (see the module documentation); writes the
/// `passAsFile` files into `build_dir`.
pub(super) fn environment(
    store: &LocalStore,
    drv: &Derivation,
    fixed: bool,
    build_dir: &Path,
    cores: u32,
) -> Result<BTreeMap<String, String>, Error> {
    let top = build_dir.to_str().ok_or_else(|| {
        Error::Invalid(format!(
            "build directory {} is not UTF-8",
            build_dir.display()
        ))
    })?;
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/path-not-set".to_owned());
    env.insert("HOME".to_owned(), HOME_DIR.to_owned());
    env.insert("NIX_STORE".to_owned(), store.store_dir().to_string());
    env.insert("NIX_BUILD_CORES".to_owned(), cores.to_string());
    let pass_as_file: BTreeSet<&str> = tokens(drv.env.get("passAsFile"));
    for (k, v) in &drv.env {
        if pass_as_file.contains(k.as_str()) {
            let name = format!(
                ".attr-{}",
                nixbase32::encode(&drv_paths::sha256(k.as_bytes()))
            );
            let file = build_dir.join(&name);
            fs::write(&file, v).map_err(io_at(&file))?;
            env.insert(format!("{k}Path"), format!("{top}/{name}"));
        } else {
            env.insert(k.clone(), v.clone());
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        env.insert(k.to_owned(), top.to_owned());
    }
    if fixed {
        env.insert("NIX_OUTPUT_CHECKED".to_owned(), "1".to_owned());
        for k in tokens(drv.env.get("impureEnvVars")) {
            env.insert(k.to_owned(), std::env::var(k).unwrap_or_default());
        }
    }
    env.insert("NIX_LOG_FD".to_owned(), "2".to_owned());
    env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    Ok(env)
}

/// Nix's `tokenizeString`: words separated by spaces, tabs, CRs and LFs.
pub(super) fn tokens(value: Option<&String>) -> BTreeSet<&str> {
    value
        .map(|v| {
            v.split([' ', '\t', '\n', '\r'])
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `tmp/nix-build-<drv name>-<N>`, mode 0700, the first N free from 0.
pub(super) fn make_build_dir(tmp: &Path, drv: &StorePath) -> Result<PathBuf, Error> {
    fs::create_dir_all(tmp).map_err(io_at(tmp))?;
    for n in 0u32.. {
        let dir = tmp.join(format!("nix-build-{}-{n}", drv.name()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Err(Error::Invalid(format!(
        "no free build directory in {}",
        tmp.display()
    )))
}

/// `log/drvs/XX/REST` for drv basename `XXREST`, as Nix (uncompressed).
pub(super) fn log_path(log_dir: &Path, drv: &StorePath) -> PathBuf {
    let base = drv.base();
    let (head, rest) = base.split_at(2);
    log_dir.join("drvs").join(head).join(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_path_splits_after_two_characters() {
        let drv = StorePath::parse("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a.drv").unwrap();
        assert_eq!(
            log_path(Path::new("/r/var/log"), &drv),
            Path::new("/r/var/log/drvs/01/23456789abcdfghijklmnpqrsvwxyz-a.drv")
        );
    }

    #[test]
    fn tokens_split_like_nix() {
        let v = "a  b\tc\n\rd ".to_owned();
        assert_eq!(
            tokens(Some(&v)).into_iter().collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert!(tokens(None).is_empty());
    }
}
