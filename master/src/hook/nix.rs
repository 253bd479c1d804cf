//! `offload-master nix-hook` (also run as `offload-nix-hook`, the name
//! nix-daemon's `build-hook` setting points at): Nix 2.8's build-hook
//! protocol (`nix-daemon.md` §5) on the engine the Guix hook uses.
//!
//! The daemon writes its settings (`u64 1, name, value`… `u64 0`), then
//! for each build `"try"`, am-willing, system, the `.drv` path and the
//! required features (a string set). The hook answers `# decline`,
//! `# postpone`, or `# accept` followed by the machine's name on the next
//! line; after accepting it reads the inputs (a path set) and the names of
//! the wanted outputs, and the daemon closes stdin. The build log goes to
//! fd 4; messages are `@nix {json}` lines (plain text is dropped by the
//! daemon). Every output of the derivation is registered in the daemon's
//! store directly: the daemon holds the output locks.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use offload_core::derivation::Derivation;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::spec::StoreSpec;

use super::request::BuildRequest;
use super::{Args, EXIT_HOOK_FAILED, Hook, Setup, Voice, reply};
use crate::hook::plan::Plan;

/// Most settings read.
const MAX_SETTINGS: usize = 4096;
/// Longest setting value (the `builders` list can be long).
const MAX_VALUE: u64 = 1 << 20;
/// Longest system, path or feature name.
const MAX_NAME: u64 = 4096;
/// Most paths in a set (the inputs' closure).
const MAX_PATHS: u64 = 1 << 20;
/// Most required features or wanted outputs.
const MAX_NAMES: u64 = 256;

fn read_u64(r: &mut impl Read) -> io::Result<Option<u64>> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut b[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(Some(u64::from_le_bytes(b)))
}

fn need_u64(r: &mut impl Read, what: &str) -> anyhow::Result<u64> {
    read_u64(r)?.with_context(|| format!("the daemon closed stdin before {what}"))
}

/// A string of at most `max` bytes.
pub fn read_string(r: &mut impl Read, max: u64, what: &str) -> anyhow::Result<String> {
    let len = need_u64(r, what)?;
    anyhow::ensure!(len <= max, "{what}: {len} bytes, more than {max}");
    let padded = len.div_ceil(8) * 8;
    let mut buf = vec![0u8; usize::try_from(padded)?];
    r.read_exact(&mut buf)
        .with_context(|| format!("reading {what}"))?;
    buf.truncate(usize::try_from(len)?);
    String::from_utf8(buf).with_context(|| format!("{what} is not UTF-8"))
}

/// A string set of at most `max` entries.
pub fn read_set(r: &mut impl Read, max: u64, what: &str) -> anyhow::Result<Vec<String>> {
    let n = need_u64(r, what)?;
    anyhow::ensure!(n <= max, "{what}: {n} entries, more than {max}");
    (0..n).map(|_| read_string(r, MAX_NAME, what)).collect()
}

/// The settings block.
pub fn read_settings(r: &mut impl Read) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    loop {
        match need_u64(r, "the settings")? {
            0 => return Ok(settings),
            1 => {}
            other => anyhow::bail!("bad settings marker {other}"),
        }
        anyhow::ensure!(
            settings.len() < MAX_SETTINGS,
            "more than {MAX_SETTINGS} settings"
        );
        let name = read_string(r, MAX_NAME, "a setting's name")?;
        let value = read_string(r, MAX_VALUE, "a setting's value")?;
        settings.insert(name, value);
    }
}

impl Setup {
    /// For nix-daemon's hook: its store (`NIX_STORE_DIR`, `NIX_STATE_DIR`,
    /// or `/nix/store` and `/nix/var/nix`), our key, ACL and machines from
    /// Guix's defaults.
    pub fn for_nix() -> anyhow::Result<Self> {
        let mut setup = Self::from_env()?;
        let store_dir = match std::env::var("NIX_STORE_DIR") {
            Ok(d) if !d.is_empty() => d,
            _ => "/nix/store".into(),
        };
        setup.store_dir =
            StoreDir::new(&store_dir).map_err(|e| anyhow::anyhow!("store {store_dir:?}: {e}"))?;
        let state = std::env::var_os("NIX_STATE_DIR")
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from);
        setup.store = StoreSpec::Local {
            db_dir: state.join("db"),
            state_dir: state.clone(),
        };
        setup.state_dir = state;
        Ok(setup)
    }
}

/// Run the Nix hook on this process's stdin/stdout/stderr and fd 4.
pub fn run() -> u8 {
    match serve() {
        Ok(code) => code,
        Err(e) => {
            Voice::Nix.say(&format!(
                "offload-nix-hook: error: {}",
                offload_core::report::error_chain(e.as_ref())
            ));
            EXIT_HOOK_FAILED
        }
    }
}

fn serve() -> anyhow::Result<u8> {
    let mut stdin = io::stdin().lock();
    let settings = read_settings(&mut stdin)?;
    let secs = |name: &str| {
        settings
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let args = Args {
        system: settings.get("system").cloned().unwrap_or_default(),
        max_silent_secs: secs("max-silent-time"),
        trace: false,
        timeout_secs: secs("timeout"),
    };
    let mut setup = Setup::for_nix()?;
    if let Some(builders) = settings.get("builders") {
        let machines = crate::machines::nix_file::parse(
            builders,
            std::path::Path::new("the builders setting"),
            &mut |path| {
                offload_files::bounded::read_file_at_most(path, 8 << 20)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            },
        )?;
        setup.nix_machines =
            crate::machines::from_nix::entries(&machines, &args.system, "the builders setting");
    }
    let dir = setup.store_dir.clone();
    let mut hook = Hook::new(args, setup, Voice::Nix)?;
    loop {
        let kind = match read_u64(&mut stdin)? {
            None => return Ok(0),
            Some(len) => {
                anyhow::ensure!(len <= 16, "unknown request of {len} bytes");
                let mut buf = vec![0u8; 16.min(usize::try_from(len.div_ceil(8) * 8)?)];
                stdin.read_exact(&mut buf)?;
                buf.truncate(usize::try_from(len)?);
                String::from_utf8_lossy(&buf).into_owned()
            }
        };
        anyhow::ensure!(kind == "try", "unknown request {kind:?}");
        let willing = need_u64(&mut stdin, "am-willing")? == 1;
        let system = read_string(&mut stdin, MAX_NAME, "the system")?;
        let drv_text = read_string(&mut stdin, MAX_NAME, "the derivation")?;
        let features = read_set(&mut stdin, MAX_NAMES, "the required features")?;
        let drv = StorePath::parse_in(&dir, &drv_text)
            .map_err(|e| anyhow::anyhow!("the derivation {drv_text:?}: {e}"))?;
        let req = BuildRequest {
            local_slot_free: willing,
            system,
            drv,
            features,
        };
        match hook.plan(&req)? {
            Plan::Decline(why) => {
                Voice::Nix.say(&format!("not offloading '{}': {why}", req.drv));
                reply("decline")?;
            }
            Plan::Postpone(why) => {
                tracing::info!(drv = %req.drv, "postpone: {why}");
                reply("postpone")?;
            }
            Plan::Accept(choices) => {
                let mut candidates = hook.by_locality(&req, choices);
                let Some(claim) = hook.claim(&mut candidates, &[]) else {
                    reply("postpone")?;
                    continue;
                };
                {
                    let mut out = io::stdout().lock();
                    writeln!(out, "# accept\n{}", claim.choice.name)?;
                    out.flush()?;
                }
                let inputs = read_set(&mut stdin, MAX_PATHS, "the inputs")?;
                let _wanted = read_set(&mut stdin, MAX_NAMES, "the wanted outputs")?;
                let (inputs, outputs) = job_paths(&mut hook, &req.drv, &inputs)?;
                return hook.build(&req, &inputs, &outputs, claim, candidates);
            }
        }
    }
}

/// What the build needs (the `.drv`'s closure — Nix leaves it out — and
/// the inputs), and every output of the derivation not valid here (Nix
/// checks them all, not only the wanted ones).
fn job_paths(
    hook: &mut Hook,
    drv: &StorePath,
    inputs: &[String],
) -> anyhow::Result<(Vec<StorePath>, Vec<StorePath>)> {
    let dir = hook.setup.store_dir.clone();
    let mut store = hook.take_store()?;
    let result = hook.runtime.block_on(async {
        let mut all: Vec<StorePath> = store.closure(std::slice::from_ref(drv)).await?;
        for p in inputs {
            all.push(
                StorePath::parse_in(&dir, p).map_err(|e| anyhow::anyhow!("input {p:?}: {e}"))?,
            );
        }
        all.sort();
        all.dedup();
        let text = offload_files::bounded::read_file_at_most(
            std::path::Path::new(&drv.to_string()),
            offload_core::derivation::MAX_DRV_LEN as u64,
        )?;
        let parsed = Derivation::parse(&text)?;
        let mut outputs = Vec::new();
        for o in parsed.outputs.values() {
            let p = StorePath::parse_in(&dir, &o.path)
                .map_err(|e| anyhow::anyhow!("output {:?}: {e}", o.path))?;
            if store.path_info(&p).await?.is_none() {
                outputs.push(p);
            }
        }
        anyhow::Ok((all, outputs))
    });
    hook.store = Some(store);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.resize(out.len().div_ceil(8) * 8, 0);
    }

    #[test]
    fn settings_and_sets_parse_as_the_daemon_writes_them() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u64.to_le_bytes());
        s(&mut bytes, "accept-flake-config");
        s(&mut bytes, "false");
        bytes.extend_from_slice(&1u64.to_le_bytes());
        s(&mut bytes, "access-tokens");
        s(&mut bytes, "");
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let settings = read_settings(&mut &bytes[..]).unwrap();
        assert_eq!(settings["accept-flake-config"], "false");
        assert_eq!(settings["access-tokens"], "");
        let mut set = 2u64.to_le_bytes().to_vec();
        s(&mut set, "big-parallel");
        s(&mut set, "kvm");
        assert_eq!(
            read_set(&mut &set[..], 8, "features").unwrap(),
            ["big-parallel", "kvm"]
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let mut bytes = 1u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = read_settings(&mut &bytes[..]).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        let set = (MAX_NAMES + 1).to_le_bytes();
        assert!(read_set(&mut &set[..], MAX_NAMES, "features").is_err());
        // A truncated block is an error, not a hang or a panic.
        let mut short = 1u64.to_le_bytes().to_vec();
        short.extend_from_slice(&5u64.to_le_bytes());
        short.extend_from_slice(b"sys");
        assert!(read_settings(&mut &short[..]).is_err());
    }
}
