//! `offload-master key …`

use std::io::Write;

use anyhow::{Context, bail};
use offload_core::hex;
use offload_core::keys::PublicKey;
use offload_core::signature::{Signature, Verdict};
use offload_files::{acl_file, key_file, paths};

use super::{EXIT_INVALID, KeyCommand};

pub(super) fn run(cmd: KeyCommand) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match cmd {
        KeyCommand::Generate { dir } => {
            let dir = dir.unwrap_or_else(paths::guix_config_dir);
            let public = key_file::generate(&dir)?;
            tracing::info!(dir = %dir.display(), fingerprint = %public.fingerprint(), "generated key pair");
            out.write_all(&public.to_advanced())?;
        }
        KeyCommand::Show { dir, fingerprint } => {
            let path = dir
                .unwrap_or_else(paths::guix_config_dir)
                .join("signing-key.pub");
            let public = key_file::load_public(&path)?;
            if fingerprint {
                writeln!(out, "{}", public.fingerprint())?;
            } else {
                out.write_all(&public.to_advanced())?;
            }
        }
        KeyCommand::Authorize { acl } => {
            let acl = acl.unwrap_or_else(paths::default_acl);
            let text =
                offload_files::bounded::read_at_most(std::io::stdin(), key_file::MAX_KEY_FILE)
                    .context("reading the public key from stdin")?;
            let key = PublicKey::parse(&text).context("the key on stdin")?;
            if !acl_file::authorize(&acl, &key)? {
                tracing::info!(acl = %acl.display(), "key {} was already authorized", key.fingerprint());
            }
        }
        KeyCommand::Sign { key, hash } => {
            let hash = parse_hash(&hash)?;
            let secret = key_file::load_secret(&key)?;
            let sig = Signature::create(&secret, &hash)
                .with_context(|| format!("signing with {}", key.display()))?;
            out.write_all(&sig.to_advanced())?;
        }
        KeyCommand::Verify {
            acl,
            hash,
            signature_file,
        } => {
            let hash = parse_hash(&hash)?;
            let acl = acl_file::load(&acl)?;
            let text = key_file::read_limited(
                &signature_file,
                offload_core::signature::MAX_SIGNATURE_LEN as u64,
            )
            .with_context(|| format!("reading {}", signature_file.display()))?;
            let (verdict, why) = match Signature::parse(&text) {
                Ok(sig) => {
                    let verdict = sig.check(&acl, &hash).verdict;
                    (verdict, verdict.explain().to_owned())
                }
                Err(e) => (Verdict::Corrupt, e.to_string()),
            };
            if verdict != Verdict::Valid {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "offload-master: {}: {verdict}: {why}",
                        signature_file.display()
                    );
                }
                return Ok(EXIT_INVALID);
            }
            writeln!(out, "valid")?;
        }
    }
    out.flush()?;
    Ok(0)
}

fn parse_hash(text: &str) -> anyhow::Result<[u8; 32]> {
    match hex::decode_hash(text.trim()) {
        Some(hash) => Ok(hash),
        None => bail!("--hash must be a SHA-256 hash in hex (64 digits), not `{text}`"),
    }
}
