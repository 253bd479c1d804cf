//! Store paths: `<store-dir>/<32 nix-base32 chars>-<name>` (spec §3).
//!
//! * The store directory is absolute and normalised (no trailing `/`, no
//!   empty, `.` or `..` components); Guix uses `/gnu/store`, Nix `/nix/store`.
//! * The hash part is 32 characters of the nix-base32 alphabet (20 bytes).
//! * The name is 1–211 characters of `[A-Za-z0-9+-._?=]` and does not start
//!   with `.` (Nix `checkName`, Guix `checkStoreName`).

use std::fmt;

use crate::nixbase32;

/// Characters of the hash part.
pub const HASH_LEN: usize = 32;
/// Longest name Nix accepts.
pub const MAX_NAME_LEN: usize = 211;
/// Longest store directory we accept.
pub const MAX_STORE_DIR_LEN: usize = 1024;

/// The default logical store directory (Guix).
pub const GUIX_STORE_DIR: &str = "/gnu/store";

/// Why a store path or directory was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not an absolute, normalised directory.
    #[error("`{0}` is not a valid store directory (absolute, normalised, no trailing slash)")]
    BadStoreDir(String),
    /// Not under the expected store directory, or nested below it.
    #[error("`{path}` is not directly in the store directory `{dir}`")]
    NotInStore {
        /// The path.
        path: String,
        /// The store directory.
        dir: String,
    },
    /// The basename is not `<hash>-<name>`.
    #[error("`{0}` is not a valid store path: {1}")]
    BadBase(String, &'static str),
}

/// A logical store directory such as `/gnu/store`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreDir(String);

impl StoreDir {
    /// Validate a store directory.
    pub fn new(dir: &str) -> Result<Self, Error> {
        let bad = || Error::BadStoreDir(dir.to_owned());
        if !dir.starts_with('/')
            || dir.len() > MAX_STORE_DIR_LEN
            || dir.contains('\0')
            || dir == "/"
        {
            return Err(bad());
        }
        if dir[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad());
        }
        Ok(Self(dir.to_owned()))
    }

    /// The directory as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self(GUIX_STORE_DIR.to_owned())
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute store path: a store directory and a validated basename.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    dir: StoreDir,
    base: String,
}

impl StorePath {
    /// Parse an absolute path whose parent is taken as its store directory.
    pub fn parse(path: &str) -> Result<Self, Error> {
        let (dir, base) = path
            .rsplit_once('/')
            .ok_or_else(|| Error::BadBase(path.to_owned(), "not an absolute path"))?;
        Self::from_base(StoreDir::new(dir)?, base)
    }

    /// Parse an absolute path that must lie directly in `dir`.
    pub fn parse_in(dir: &StoreDir, path: &str) -> Result<Self, Error> {
        let not_in = || Error::NotInStore {
            path: path.to_owned(),
            dir: dir.to_string(),
        };
        let base = path
            .strip_prefix(dir.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(not_in)?;
        if base.contains('/') {
            return Err(not_in());
        }
        Self::from_base(dir.clone(), base)
    }

    /// A store path from a directory and a basename `<hash>-<name>`.
    pub fn from_base(dir: StoreDir, base: &str) -> Result<Self, Error> {
        check_base(base).map_err(|why| Error::BadBase(format!("{dir}/{base}"), why))?;
        Ok(Self {
            dir,
            base: base.to_owned(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &StoreDir {
        &self.dir
    }

    /// `<hash>-<name>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_LEN]
    }

    /// The name after the hash and dash.
    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dir, self.base)
    }
}

/// Check a basename `<hash>-<name>`; the error says what is wrong.
pub fn check_base(base: &str) -> Result<(), &'static str> {
    let bytes = base.as_bytes();
    if bytes.len() < HASH_LEN + 2 {
        return Err("too short for <32-char hash>-<name>");
    }
    if !bytes[..HASH_LEN].iter().all(|b| nixbase32::is_char(*b)) {
        return Err("the hash part is not 32 nix-base32 characters");
    }
    if bytes[HASH_LEN] != b'-' {
        return Err("no `-` after the hash part");
    }
    check_name(&base[HASH_LEN + 1..])
}

/// Check a store item name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 211 characters");
    }
    if name.starts_with('.') {
        return Err("name starts with `.`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
    {
        return Err("name has a character outside [A-Za-z0-9+-._?=]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, ok: bool) {
        assert_eq!(StorePath::parse(path).is_ok(), ok, "{path}");
    }

    #[test]
    fn accepts_and_rejects() {
        check(
            "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello.txt",
            true,
        );
        check("/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello", true);
        check(
            "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-a+b-1.0_x?=y",
            true,
        );
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwxye-hello", false); // `e`
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-", false);
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-.hidden", false);
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-a b", false);
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz_hello", false);
        check("/gnu/store/0123456789abcdfghijklmnpqrsvwx-hello", false);
        check("gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello", false);
        check("/gnu//store/0123456789abcdfghijklmnpqrsvwxyz-hello", false);
        check(
            "/gnu/../store/0123456789abcdfghijklmnpqrsvwxyz-hello",
            false,
        );
        check(
            &format!("/s/0123456789abcdfghijklmnpqrsvwxyz-{}", "a".repeat(211)),
            true,
        );
        check(
            &format!("/s/0123456789abcdfghijklmnpqrsvwxyz-{}", "a".repeat(212)),
            false,
        );
    }

    #[test]
    fn parts_and_store_dir() {
        let dir = StoreDir::new("/gnu/store").unwrap();
        let p = StorePath::parse_in(
            &dir,
            "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello.txt",
        )
        .unwrap();
        assert_eq!(p.hash_part(), "0123456789abcdfghijklmnpqrsvwxyz");
        assert_eq!(p.name(), "hello.txt");
        assert_eq!(
            p.to_string(),
            "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello.txt"
        );
        assert!(
            StorePath::parse_in(&dir, "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello").is_err()
        );
        assert!(
            StorePath::parse_in(&dir, "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x/y").is_err()
        );
        assert!(StoreDir::new("/gnu/store/").is_err());
        assert!(StoreDir::new("relative").is_err());
    }
}
