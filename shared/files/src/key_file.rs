//! Guix key files: `signing-key.sec` (mode 0400) and `signing-key.pub`
//! (0444), spec §11.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use offload_core::keys::{self, PublicKey, SecretKey};

use crate::atomic;

/// Largest key file read (an RSA-16384 secret key is ~10 KiB).
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O on the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file does not hold a usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: keys::Error,
    },
    /// A secret key readable by group or others (the Guix daemon refuses these too).
    #[error("file `{0}' should be secret (inaccessible to everybody else)! Run `chmod 0400` on it")]
    NotSecret(PathBuf),
    /// The key file does not exist.
    #[error(
        "{0}: no such key file; create a key pair with `offload-master key generate`, or name the key with --key"
    )]
    Missing(PathBuf),
    /// `generate` would overwrite a key.
    #[error("key pair exists under '{0}'; remove it first")]
    Exists(PathBuf),
    /// Randomness unavailable.
    #[error("no randomness for key generation: {0}")]
    Random(String),
}

/// Read a file of at most `max` bytes.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let data = crate::bounded::read_file_at_most(path, max)?;
    Ok(data)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, Error> {
    read_limited(path, MAX_KEY_FILE).map_err(|source| key_io(path, source))
}

/// An I/O error on a key file; a missing file says how to make one.
fn key_io(path: &Path, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound {
        Error::Missing(path.to_owned())
    } else {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Load a secret key, refusing one that others can read. The permission
/// check and the read use the same open file. When `signing-key.pub` sits
/// next to it (`.sec` → `.pub`), that file is the public key embedded in
/// signatures, as with Guix's signing agent.
pub fn load_secret(path: &Path) -> Result<SecretKey, Error> {
    let mut file = fs::File::open(path).map_err(|source| key_io(path, source))?;
    let meta = file.metadata().map_err(|source| key_io(path, source))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::NotSecret(path.to_owned()));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_KEY_FILE} bytes"),
            ),
        });
    }
    // Sized up front so the buffer holding the secret is never reallocated.
    let mut text = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE)
        .read_to_end(&mut text)
        .map_err(|source| key_io(path, source))?;
    let key = SecretKey::parse(&text).map_err(|source| Error::Key {
        path: path.to_owned(),
        source,
    })?;
    let public_path = public_path_for(path);
    match fs::symlink_metadata(&public_path) {
        Ok(_) => {
            let public = load_public(&public_path)?;
            key.with_public_key(public).map_err(|source| Error::Key {
                path: public_path,
                source,
            })
        }
        Err(_) => Ok(key),
    }
}

/// Load a public key file.
pub fn load_public(path: &Path) -> Result<PublicKey, Error> {
    PublicKey::parse(&read_key_file(path)?).map_err(|source| Error::Key {
        path: path.to_owned(),
        source,
    })
}

/// The public key file next to a secret key file (`.sec` → `.pub`).
pub fn public_path_for(secret: &Path) -> PathBuf {
    secret.with_extension("pub")
}

/// Generate a key pair in Guix's shape under `dir` (created if missing):
/// `signing-key.sec` (0400) and `signing-key.pub` (0444). Refuses if
/// either exists. Returns the public key.
pub fn generate(dir: &Path) -> Result<PublicKey, Error> {
    let secret_path = dir.join("signing-key.sec");
    let public_path = dir.join("signing-key.pub");
    if secret_path.exists() || public_path.exists() {
        return Err(Error::Exists(dir.to_owned()));
    }
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut random = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut random[..]).map_err(|e| Error::Random(e.to_string()))?;
    let key = SecretKey::from_random(&random);
    // ECC keys made here always print.
    let secret_text = key
        .to_advanced()
        .ok_or_else(|| Error::Random("generated key cannot be printed".into()))?;
    let exists = |e: io::Error, path: &Path| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::Exists(dir.to_owned()),
        _ => Error::Io {
            path: path.to_owned(),
            source: e,
        },
    };
    // Never replace a key that appeared meanwhile.
    atomic::create_file(&secret_path, &secret_text, 0o400).map_err(|e| exists(e, &secret_path))?;
    let public = key.public_key().clone();
    if let Err(e) = atomic::create_file(&public_path, &public.to_advanced(), 0o444) {
        let _ = fs::remove_file(&secret_path);
        return Err(exists(e, &public_path));
    }
    Ok(public)
}
