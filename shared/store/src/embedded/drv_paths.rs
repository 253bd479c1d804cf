//! What a derivation's output paths must be, recomputed as Nix 2.8 and the
//! Guix daemon do when a `.drv` is registered (`checkDerivationOutputs`,
//! `builder.md` §4):
//!
//! * `makeStorePath(type, h, name)` = `dir/nixbase32(fold20(sha256(type ":sha256:" hex(h) ":" dir ":" name)))-name`;
//! * an input-addressed output `o` is `makeStorePath("output:" o, hashModulo(drv, masked), name[-o])`,
//!   where `hashModulo` hashes the ATerm with each input derivation
//!   replaced by the hex of *its* `hashModulo` (unmasked) and, when
//!   masked, the output paths and the environment variables named after
//!   outputs printed empty;
//! * a fixed output is `makeStorePath("source", h, name)` for recursive
//!   SHA-256, else `makeStorePath("output:out", sha256("fixed:out:" [r:] algo ":" hex ":"), name)`;
//!   its `hashModulo` is `sha256("fixed:out:" algo ":" hex ":" path)`.
//!
//! Only input-addressed and fixed-output derivations are accepted:
//! floating content-addressed, deferred and impure outputs are refused.
//! Pure computation, apart from the caller's `load` of input derivations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;

use offload_core::derivation::Derivation;
use offload_core::hashing::HashingWriter;
use offload_core::store_path::{StoreDir, StorePath};
use offload_core::{hex, nixbase32};

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut w = HashingWriter::new(io::sink());
    // Writing to a sink cannot fail.
    let _ = io::Write::write_all(&mut w, data);
    w.take_hash().0
}

/// Nix's `compressHash(h, 20)`: XOR-fold into 20 bytes.
fn fold20(h: &[u8; 32]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in h.iter().enumerate() {
        out[i % 20] ^= b;
    }
    out
}

/// Nix's `makeStorePath(type, sha256 hash, name)`.
pub(crate) fn make_store_path(
    kind: &str,
    hash: &[u8; 32],
    dir: &StoreDir,
    name: &str,
) -> Result<StorePath, String> {
    let fingerprint = format!("{kind}:sha256:{}:{dir}:{name}", hex::encode_lower(hash));
    let base = format!(
        "{}-{name}",
        nixbase32::encode(&fold20(&sha256(fingerprint.as_bytes())))
    );
    StorePath::from_base(dir.clone(), &base).map_err(|e| e.to_string())
}

/// Nix's `outputPathName`: `name` for `out`, else `name-output`.
pub(crate) fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output}")
    }
}

/// A hash algorithm a fixed output may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "md5" => Self::Md5,
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha512" => Self::Sha512,
            _ => return None,
        })
    }

    /// The name Nix prints.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// The expected content of a fixed output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FixedOutput {
    /// Hash of the NAR (`r:`), or of the file's contents (flat).
    pub(crate) recursive: bool,
    /// The algorithm.
    pub(crate) algo: HashAlgo,
    /// The expected hash.
    pub(crate) hash: Vec<u8>,
}

impl FixedOutput {
    fn parse(algo: &str, hash: &str) -> Result<Self, String> {
        let (recursive, name) = match algo.strip_prefix("r:") {
            Some(rest) => (true, rest),
            None => (false, algo),
        };
        let algo = HashAlgo::parse(name)
            .ok_or_else(|| format!("unknown hash algorithm '{name}' of its fixed output"))?;
        let hash = hex::decode(hash.as_bytes())
            .filter(|h| h.len() == algo.len())
            .ok_or_else(|| {
                format!(
                    "the hash '{hash}' of its fixed output is not {} hexadecimal digits",
                    2 * algo.len()
                )
            })?;
        Ok(Self {
            recursive,
            algo,
            hash,
        })
    }

    /// `[r:]algo`, as Nix's `printMethodAlgo`.
    fn method_algo(&self) -> String {
        format!(
            "{}{}",
            if self.recursive { "r:" } else { "" },
            self.algo.name()
        )
    }

    /// Nix's `makeFixedOutputPath` (no references).
    pub(crate) fn path(&self, dir: &StoreDir, name: &str) -> Result<StorePath, String> {
        let hex = hex::encode_lower(&self.hash);
        if self.recursive && self.algo == HashAlgo::Sha256 {
            let mut h = [0u8; 32];
            h.copy_from_slice(&self.hash);
            make_store_path("source", &h, dir, name)
        } else {
            let inner = format!(
                "fixed:out:{}{}:{hex}:",
                if self.recursive { "r:" } else { "" },
                self.algo.name()
            );
            make_store_path("output:out", &sha256(inner.as_bytes()), dir, name)
        }
    }

    /// The hash in SRI form (`sha256-<base64>`), as Nix prints mismatches.
    pub(crate) fn sri(algo: HashAlgo, hash: &[u8]) -> String {
        format!("{}-{}", algo.name(), base64(hash))
    }
}

/// What kind of derivation this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Every output has its path fixed by the derivation's hash.
    InputAddressed,
    /// A single output `out` with a known hash.
    Fixed(FixedOutput),
}

/// The kind of `drv` (Nix's `BasicDerivation::type`), or why it is not
/// supported.
pub(crate) fn kind(drv: &Derivation) -> Result<Kind, String> {
    if drv.outputs.is_empty() {
        return Err("it has no outputs".into());
    }
    if let [(name, out)] = drv.outputs.iter().collect::<Vec<_>>()[..]
        && !out.hash.is_empty()
        && out.hash != "impure"
    {
        if name != "out" {
            return Err("single fixed output must be named \"out\"".into());
        }
        if out.path.is_empty() {
            return Err("its fixed output has no path".into());
        }
        return FixedOutput::parse(&out.hash_algo, &out.hash).map(Kind::Fixed);
    }
    for (name, out) in &drv.outputs {
        if out.hash == "impure" {
            return Err(format!("output '{name}' is impure (not supported)"));
        }
        if !out.hash_algo.is_empty() || !out.hash.is_empty() {
            return Err(format!(
                "output '{name}' is content-addressed (not supported) or mixes fixed and input-addressed outputs"
            ));
        }
        if out.path.is_empty() {
            return Err(format!("output '{name}' is deferred (not supported)"));
        }
    }
    Ok(Kind::InputAddressed)
}

/// Per-output `hashDerivationModulo` of one derivation (unmasked).
type Modulo = BTreeMap<String, [u8; 32]>;

/// Memoised `hashDerivationModulo` of input derivations (Nix's `drvHashes`).
#[derive(Default)]
pub(crate) struct DrvHashes {
    cache: HashMap<String, Modulo>,
}

impl DrvHashes {
    /// Check that the outputs of `drv` (read from `drv_path`) are the
    /// paths and environment variables Nix would have written; their
    /// store paths by name. `load` reads an input derivation.
    pub(crate) fn check_outputs(
        &mut self,
        drv_path: &StorePath,
        drv: &Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, String>,
    ) -> Result<BTreeMap<String, StorePath>, String> {
        let dir = drv_path.dir();
        let drv_name = drv_path
            .name()
            .strip_suffix(".drv")
            .ok_or_else(|| format!("'{drv_path}' is not a .drv file"))?;
        let mut outputs = BTreeMap::new();
        for (name, out) in &drv.outputs {
            let path = StorePath::parse_in(dir, &out.path)
                .map_err(|e| format!("output '{name}' of '{drv_path}': {e}"))?;
            outputs.insert(name.clone(), path);
        }
        let expected: BTreeMap<String, StorePath> = match kind(drv)? {
            Kind::Fixed(fixed) => [("out".to_owned(), fixed.path(dir, drv_name)?)].into(),
            Kind::InputAddressed => {
                let h = self.modulo_hash(drv, true, load)?;
                drv.outputs
                    .keys()
                    .map(|o| {
                        let path = make_store_path(
                            &format!("output:{o}"),
                            &h,
                            dir,
                            &output_path_name(drv_name, o),
                        )?;
                        Ok((o.clone(), path))
                    })
                    .collect::<Result<_, String>>()?
            }
        };
        for (name, want) in &expected {
            let Some(got) = outputs.get(name) else {
                return Err(format!("derivation '{drv_path}' has no output '{name}'"));
            };
            if got != want {
                return Err(format!(
                    "derivation '{drv_path}' has incorrect output '{got}', should be '{want}'"
                ));
            }
            if drv.env.get(name) != Some(&want.to_string()) {
                return Err(format!(
                    "derivation '{drv_path}' has incorrect environment variable '{name}', should be '{want}'"
                ));
            }
        }
        Ok(outputs)
    }

    /// Set the output paths of the input-addressed `drv`, named `name`,
    /// and the environment variables named after them, as the daemons
    /// compute them when a derivation is written (`load` reads inputs).
    pub(crate) fn fill_outputs(
        &mut self,
        dir: &StoreDir,
        name: &str,
        drv: &mut Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, String>,
    ) -> Result<(), String> {
        let h = self.modulo_hash(drv, true, load)?;
        let names: Vec<String> = drv.outputs.keys().cloned().collect();
        for o in names {
            let path =
                make_store_path(&format!("output:{o}"), &h, dir, &output_path_name(name, &o))?
                    .to_string();
            drv.env.insert(o.clone(), path.clone());
            if let Some(out) = drv.outputs.get_mut(&o) {
                out.path = path;
            }
        }
        Ok(())
    }

    /// `hashDerivationModulo(drv, mask)` for a non-fixed derivation: every
    /// input derivation is computed first (iteratively; `load` reads them).
    fn modulo_hash(
        &mut self,
        drv: &Derivation,
        mask: bool,
        load: &mut dyn FnMut(&str) -> Result<Derivation, String>,
    ) -> Result<[u8; 32], String> {
        for input in drv.input_drvs.keys() {
            self.ensure(input, load)?;
        }
        let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (input, wanted) in &drv.input_drvs {
            let hashes = self
                .cache
                .get(input)
                .ok_or_else(|| format!("internal: no hash for {input}"))?;
            for o in wanted {
                let h = hashes
                    .get(o)
                    .ok_or_else(|| format!("derivation '{input}' has no output '{o}'"))?;
                inputs
                    .entry(hex::encode_lower(h))
                    .or_default()
                    .insert(o.clone());
            }
        }
        let mut copy = Derivation {
            input_drvs: inputs,
            ..drv.clone()
        };
        if mask {
            for (name, out) in &mut copy.outputs {
                out.path.clear();
                if let Some(v) = copy.env.get_mut(name) {
                    v.clear();
                }
            }
        }
        Ok(sha256(&copy.to_aterm()))
    }

    /// Compute and cache the unmasked `hashDerivationModulo` of `root` and
    /// of every derivation it depends on, depth first without recursion.
    fn ensure(
        &mut self,
        root: &str,
        load: &mut dyn FnMut(&str) -> Result<Derivation, String>,
    ) -> Result<(), String> {
        let mut stack = vec![(root.to_owned(), false)];
        let mut open: HashMap<String, Derivation> = HashMap::new();
        let mut in_progress = HashSet::new();
        while let Some((path, expanded)) = stack.pop() {
            if self.cache.contains_key(&path) {
                continue;
            }
            if !expanded {
                if !in_progress.insert(path.clone()) {
                    return Err(format!("derivation '{path}' depends on itself"));
                }
                let drv = load(&path)?;
                stack.push((path.clone(), true));
                for input in drv.input_drvs.keys() {
                    if !self.cache.contains_key(input) {
                        stack.push((input.clone(), false));
                    }
                }
                open.insert(path, drv);
                continue;
            }
            let drv = open
                .remove(&path)
                .ok_or_else(|| format!("internal: {path} was not loaded"))?;
            let hashes = match kind(&drv).map_err(|e| format!("derivation '{path}': {e}"))? {
                Kind::Fixed(fixed) => {
                    let out = drv
                        .outputs
                        .get("out")
                        .ok_or_else(|| format!("internal: {path} has no out"))?;
                    let text = format!(
                        "fixed:out:{}:{}:{}",
                        fixed.method_algo(),
                        out.hash,
                        out.path
                    );
                    [("out".to_owned(), sha256(text.as_bytes()))].into()
                }
                Kind::InputAddressed => {
                    let h = self.modulo_hash(&drv, false, load)?;
                    drv.outputs.keys().map(|o| (o.clone(), h)).collect()
                }
            };
            in_progress.remove(&path);
            self.cache.insert(path, hashes);
        }
        Ok(())
    }
}

/// Standard base64 with padding (for SRI hashes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(d: &str) -> StoreDir {
        StoreDir::new(d).unwrap()
    }

    #[test]
    fn text_path_of_nix_daemon_md() {
        // `builtins.toFile "hello.txt" "hello, world\n"` with store /gnu/store
        // (nix-daemon.md §3): a text path without references.
        let h = sha256(b"hello, world\n");
        let p = make_store_path("text", &h, &dir("/gnu/store"), "hello.txt").unwrap();
        assert_eq!(
            p.to_string(),
            "/gnu/store/zvknnn6gzcjdyb9hn5ffp4sx1ncjp45r-hello.txt"
        );
    }

    #[test]
    fn hello_output_path_of_nix_daemon_md() {
        // nix-daemon.md §4.1: the `hello` derivation in /nix/store.
        let aterm = |out: &str| {
            format!(
                "Derive([(\"out\",\"{out}\",\"\",\"\")],[],[],\"x86_64-linux\",\"/bin/sh\",\
                 [\"-c\",\"echo hi > $out\"],[(\"builder\",\"/bin/sh\"),(\"name\",\"hello\"),\
                 (\"out\",\"{out}\"),(\"system\",\"x86_64-linux\")])"
            )
        };
        let out = "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello";
        let drv = Derivation::parse(aterm(out).as_bytes()).unwrap();
        let drv_path =
            StorePath::parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv").unwrap();
        let mut hashes = DrvHashes::default();
        let mut load = |p: &str| Err(format!("unexpected load of {p}"));
        let outputs = hashes.check_outputs(&drv_path, &drv, &mut load).unwrap();
        assert_eq!(outputs["out"].to_string(), out);

        let wrong = aterm("/nix/store/0000000000000000000000000000000a-hello");
        let drv = Derivation::parse(wrong.as_bytes()).unwrap();
        let err = hashes
            .check_outputs(&drv_path, &drv, &mut load)
            .unwrap_err();
        assert!(err.contains("has incorrect output"), "{err}");
        assert!(err.contains(out), "{err}");
    }

    #[test]
    fn kinds() {
        let mut drv = Derivation::default();
        assert!(kind(&drv).is_err());
        drv.outputs.insert(
            "out".into(),
            offload_core::derivation::Output {
                path: "/s/x".into(),
                hash_algo: "r:sha256".into(),
                hash: "00".repeat(32),
            },
        );
        assert!(
            matches!(kind(&drv), Ok(Kind::Fixed(f)) if f.recursive && f.algo == HashAlgo::Sha256)
        );
        drv.outputs.get_mut("out").unwrap().hash = "00".into();
        assert!(kind(&drv).unwrap_err().contains("hexadecimal"));
        drv.outputs.get_mut("out").unwrap().hash = String::new();
        assert!(kind(&drv).unwrap_err().contains("content-addressed"));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input), want);
        }
    }
}
