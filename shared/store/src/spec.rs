//! `--store SPEC`: which store a command works on.

use std::path::PathBuf;
use std::str::FromStr;

use offload_files::paths;

/// The Nix daemon's socket.
pub const NIX_DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// A store named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `guix-daemon[:SOCKET]`.
    GuixDaemon(PathBuf),
    /// `nix-daemon[:SOCKET]`.
    NixDaemon(PathBuf),
    /// `embedded:DIR`.
    Embedded(PathBuf),
    /// `local[:STATE_DIR]`: this host's store written directly (the hook
    /// side). The database is `DB_DIR/db.sqlite` and the collector's lock
    /// `STATE_DIR/gc.lock`. Without STATE_DIR: Guix's, `$GUIX_STATE_DIRECTORY`
    /// or `/var/guix`, with `$GUIX_DATABASE_DIRECTORY` or `STATE_DIR/db`;
    /// give `/nix/var/nix` for Nix.
    Local {
        /// The daemon's state directory.
        state_dir: PathBuf,
        /// The directory of its database.
        db_dir: PathBuf,
    },
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let path = |default: PathBuf| match arg {
            Some("") => Err(format!("{s:?}: nothing after ':'")),
            Some(a) => Ok(PathBuf::from(a)),
            None => Ok(default),
        };
        match kind {
            "guix-daemon" => path(paths::guix_daemon_socket()).map(Self::GuixDaemon),
            "nix-daemon" => path(NIX_DAEMON_SOCKET.into()).map(Self::NixDaemon),
            "embedded" => match arg {
                Some(a) if !a.is_empty() => Ok(Self::Embedded(a.into())),
                _ => Err("embedded needs its directory: embedded:DIR".into()),
            },
            "local" => match arg {
                None => Ok(Self::Local {
                    state_dir: paths::guix_state_dir(),
                    db_dir: paths::guix_database_dir(),
                }),
                Some(_) => path(PathBuf::new()).map(|state_dir| Self::Local {
                    db_dir: state_dir.join("db"),
                    state_dir,
                }),
            },
            _ => Err(format!(
                "unknown store {s:?}: use guix-daemon[:SOCKET], nix-daemon[:SOCKET], embedded:DIR or local[:STATE_DIR]"
            )),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GuixDaemon(p) => write!(f, "guix-daemon:{}", p.display()),
            Self::NixDaemon(p) => write!(f, "nix-daemon:{}", p.display()),
            Self::Embedded(p) => write!(f, "embedded:{}", p.display()),
            Self::Local { state_dir, .. } => write!(f, "local:{}", state_dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_refuse_unknown_kinds() {
        assert_eq!(
            "nix-daemon".parse::<StoreSpec>(),
            Ok(StoreSpec::NixDaemon(NIX_DAEMON_SOCKET.into()))
        );
        assert_eq!(
            "nix-daemon:/tmp/s".parse::<StoreSpec>(),
            Ok(StoreSpec::NixDaemon("/tmp/s".into()))
        );
        assert_eq!(
            "embedded:/srv/e".parse::<StoreSpec>(),
            Ok(StoreSpec::Embedded("/srv/e".into()))
        );
        assert_eq!(
            "local:/nix/var/nix".parse::<StoreSpec>(),
            Ok(StoreSpec::Local {
                state_dir: "/nix/var/nix".into(),
                db_dir: "/nix/var/nix/db".into()
            })
        );
        assert!("embedded".parse::<StoreSpec>().is_err());
        assert!("nix-daemon:".parse::<StoreSpec>().is_err());
        let err = "ssh://host".parse::<StoreSpec>().unwrap_err();
        assert!(err.contains("unknown store"), "{err}");
    }
}
