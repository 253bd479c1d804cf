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
    /// `generate` would overwrite a key.
    #[error("key pair exists under '{0}'; remove it first")]
    Exists(PathBuf),
    /// Randomness unavailable.
    #[error("no randomness for key generation: {0}")]
    Random(String),
}

/// Read a file of at most `max` bytes.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    fs::File::open(path)?.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, Error> {
    read_limited(path, MAX_KEY_FILE).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Load a secret key, refusing one that others can read.
pub fn load_secret(path: &Path) -> Result<SecretKey, Error> {
    let meta = fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::NotSecret(path.to_owned()));
    }
    SecretKey::parse(&read_key_file(path)?).map_err(|source| Error::Key {
        path: path.to_owned(),
        source,
    })
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
    atomic::write_file(&secret_path, &secret_text, 0o400).map_err(|source| Error::Io {
        path: secret_path.clone(),
        source,
    })?;
    let public = key.public_key().clone();
    atomic::write_file(&public_path, &public.to_advanced(), 0o444).map_err(|source| Error::Io {
        path: public_path,
        source,
    })?;
    Ok(public)
}
