//! The builder's surroundings: its environment, build directory and log
//! file, for either profile.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use offload_core::derivation::Derivation;
use offload_core::nixbase32;
use offload_core::store_path::StorePath;

use super::{Error, Profile, io_at};
use crate::embedded::drv_paths;

/// Nix's home directory for builders, which must not exist.
pub(super) const HOME_DIR: &str = "/homeless-shelter";

/// What the environment depends on besides the derivation.
pub(super) struct EnvContext<'a> {
    /// The logical store directory.
    pub(super) store_dir: &'a str,
    /// A fixed-output derivation.
    pub(super) fixed: bool,
    /// The build directory on the host (for `passAsFile` files).
    pub(super) build_dir: &'a Path,
    /// The build directory as the builder sees it.
    pub(super) top: &'a str,
    /// `NIX_BUILD_CORES`.
    pub(super) cores: u32,
    /// Whose environment.
    pub(super) profile: Profile,
    /// The owner to give the files written (the build user).
    pub(super) owner: Option<(u32, u32)>,
    /// Where `impureEnvVars` take their values (`BuildOptions::impure_env`).
    pub(super) impure_env: Option<&'a BTreeMap<String, String>>,
}

/// The builder's environment (see the module documentation); for Nix,
/// writes the `passAsFile` files into the build directory.
pub(super) fn environment(
    drv: &Derivation,
    cx: &EnvContext<'_>,
) -> Result<BTreeMap<String, String>, Error> {
    let nix = cx.profile == Profile::Nix;
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/path-not-set".to_owned());
    env.insert("HOME".to_owned(), HOME_DIR.to_owned());
    env.insert("NIX_STORE".to_owned(), cx.store_dir.to_owned());
    env.insert("NIX_BUILD_CORES".to_owned(), cx.cores.to_string());
    let pass_as_file: BTreeSet<&str> = if nix {
        tokens(drv.env.get("passAsFile"))
    } else {
        BTreeSet::new()
    };
    for (k, v) in &drv.env {
        if pass_as_file.contains(k.as_str()) {
            let name = format!(
                ".attr-{}",
                nixbase32::encode(&drv_paths::sha256(k.as_bytes()))
            );
            let file = cx.build_dir.join(&name);
            fs::write(&file, v).map_err(io_at(&file))?;
            if let Some((uid, gid)) = cx.owner {
                std::os::unix::fs::chown(&file, Some(uid), Some(gid)).map_err(io_at(&file))?;
            }
            env.insert(format!("{k}Path"), format!("{}/{name}", cx.top));
        } else {
            env.insert(k.clone(), v.clone());
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        env.insert(k.to_owned(), cx.top.to_owned());
    }
    if cx.fixed {
        if nix {
            env.insert("NIX_OUTPUT_CHECKED".to_owned(), "1".to_owned());
        }
        for k in tokens(drv.env.get("impureEnvVars")) {
            let value = match cx.impure_env {
                // Only what the operator allowed, never our environment.
                Some(allowed) => allowed.get(k).cloned().unwrap_or_default(),
                None => std::env::var(k).unwrap_or_default(),
            };
            env.insert(k.to_owned(), value);
        }
    }
    if nix {
        env.insert("NIX_LOG_FD".to_owned(), "2".to_owned());
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    }
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

/// `tmp/nix-build-<drv name>-<N>` (Guix: `guix-build-`), mode 0700, the
/// first N free from 0.
pub(super) fn make_build_dir(
    tmp: &Path,
    drv: &StorePath,
    profile: Profile,
) -> Result<PathBuf, Error> {
    fs::create_dir_all(tmp).map_err(io_at(tmp))?;
    for n in 0u32.. {
        let dir = tmp.join(format!("{}-{}-{n}", build_dir_prefix(profile), drv.name()));
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

fn build_dir_prefix(profile: Profile) -> &'static str {
    match profile {
        Profile::Nix => "nix-build",
        Profile::Guix => "guix-build",
    }
}

/// Where a sandboxed builder sees its build directory: Nix 2.8's
/// `sandbox-build-dir`, or Guix's fixed `/tmp/guix-build-<drv name>-0`.
pub(super) fn build_dir_in_sandbox(drv: &StorePath, profile: Profile) -> PathBuf {
    match profile {
        Profile::Nix => PathBuf::from("/build"),
        Profile::Guix => PathBuf::from(format!("/tmp/guix-build-{}-0", drv.name())),
    }
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

    fn env_of(profile: Profile, fixed: bool) -> (BTreeMap<String, String>, tempfile::TempDir) {
        env_with(profile, fixed, None)
    }

    fn env_with(
        profile: Profile,
        fixed: bool,
        impure_env: Option<&BTreeMap<String, String>>,
    ) -> (BTreeMap<String, String>, tempfile::TempDir) {
        let text = br#"Derive([("out","/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("impureEnvVars","OFFLOAD_NOT_SET PATH http_proxy"),("out","/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a"),("passAsFile","text"),("text","hello")])"#;
        let drv = Derivation::parse(text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let env = environment(
            &drv,
            &EnvContext {
                store_dir: "/gnu/store",
                fixed,
                build_dir: dir.path(),
                top: "/top",
                cores: 2,
                profile,
                owner: None,
                impure_env,
            },
        )
        .unwrap();
        (env, dir)
    }

    #[test]
    fn impure_variables_come_only_from_the_allow_list_when_one_is_given() {
        let (nix, _dir) = env_of(Profile::Nix, true);
        assert_ne!(
            nix.get("PATH").map(String::as_str),
            Some("/path-not-set"),
            "Nix's rule: from our environment"
        );
        let allowed = BTreeMap::from([("http_proxy".to_owned(), "http://proxy:3128".to_owned())]);
        let (nix, _dir) = env_with(Profile::Nix, true, Some(&allowed));
        assert_eq!(
            nix.get("http_proxy").map(String::as_str),
            Some("http://proxy:3128")
        );
        assert_eq!(
            nix.get("PATH").map(String::as_str),
            Some(""),
            "not allowed: empty, never ours"
        );
        assert_eq!(nix.get("OFFLOAD_NOT_SET").map(String::as_str), Some(""));
    }

    #[test]
    fn nix_and_guix_environments() {
        let (nix, dir) = env_of(Profile::Nix, true);
        let attr = format!(".attr-{}", nixbase32::encode(&drv_paths::sha256(b"text")));
        assert_eq!(nix.get("textPath"), Some(&format!("/top/{attr}")));
        assert_eq!(fs::read(dir.path().join(&attr)).unwrap(), b"hello");
        assert!(!nix.contains_key("text"));
        for (k, v) in [
            ("NIX_LOG_FD", "2"),
            ("TERM", "xterm-256color"),
            ("NIX_OUTPUT_CHECKED", "1"),
            ("NIX_BUILD_TOP", "/top"),
            ("OFFLOAD_NOT_SET", ""),
        ] {
            assert_eq!(nix.get(k).map(String::as_str), Some(v), "{k}");
        }

        let (guix, dir) = env_of(Profile::Guix, true);
        assert_eq!(guix.get("text").map(String::as_str), Some("hello"));
        assert_eq!(guix.get("passAsFile").map(String::as_str), Some("text"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        for k in ["textPath", "NIX_LOG_FD", "TERM", "NIX_OUTPUT_CHECKED"] {
            assert!(!guix.contains_key(k), "{k}");
        }
        assert_eq!(guix.get("OFFLOAD_NOT_SET").map(String::as_str), Some(""));
        let (guix, _dir) = env_of(Profile::Guix, false);
        assert!(!guix.contains_key("OFFLOAD_NOT_SET"));
        assert_eq!(guix.get("PATH").map(String::as_str), Some("/path-not-set"));
    }

    #[test]
    fn build_directory_names() {
        let drv = StorePath::parse("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a.drv").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let first = make_build_dir(tmp.path(), &drv, Profile::Guix).unwrap();
        assert!(first.ends_with("guix-build-a.drv-0"), "{}", first.display());
        let second = make_build_dir(tmp.path(), &drv, Profile::Nix).unwrap();
        assert!(
            second.ends_with("nix-build-a.drv-0"),
            "{}",
            second.display()
        );
        assert_eq!(
            build_dir_in_sandbox(&drv, Profile::Guix),
            Path::new("/tmp/guix-build-a.drv-0")
        );
        assert_eq!(
            build_dir_in_sandbox(&drv, Profile::Nix),
            Path::new("/build")
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
