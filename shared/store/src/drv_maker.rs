//! Writing new derivations, as `guix build` and `nix-instantiate` do: the
//! output paths follow from the derivation's hash modulo its inputs, and
//! the `.drv` is a text item whose path follows from its contents and
//! references. For try-outs (`offload-master demo`) that need derivations
//! without a Guix or Nix installation.

use std::collections::{BTreeMap, BTreeSet};

use offload_core::derivation::{Derivation, Output};
use offload_core::store_path::{StoreDir, StorePath};

use crate::embedded::drv_paths::{self, DrvHashes};

/// A derivation to write (input-addressed).
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// Its name (the `.drv` is `NAME.drv`).
    pub name: String,
    /// Its system.
    pub system: String,
    /// The builder program.
    pub builder: String,
    /// The builder's arguments.
    pub args: Vec<String>,
    /// The builder's environment (outputs are added).
    pub env: BTreeMap<String, String>,
    /// Input derivations and the outputs used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    /// Input sources.
    pub input_srcs: BTreeSet<String>,
    /// Output names (at least one).
    pub outputs: Vec<String>,
}

/// A derivation written.
#[derive(Clone, Debug)]
pub struct Written {
    /// The `.drv`'s path.
    pub path: StorePath,
    /// Its contents.
    pub text: Vec<u8>,
    /// Its references (input derivations and sources).
    pub references: Vec<StorePath>,
    /// Its outputs by name.
    pub outputs: BTreeMap<String, StorePath>,
    /// The derivation.
    pub drv: Derivation,
}

/// Makes derivations in one store directory, remembering the ones made
/// (inputs must have been made here first).
pub struct Maker {
    dir: StoreDir,
    made: BTreeMap<String, Derivation>,
    hashes: DrvHashes,
}

impl Maker {
    /// A maker for store directory `dir`.
    pub fn new(dir: StoreDir) -> Self {
        Self {
            dir,
            made: BTreeMap::new(),
            hashes: DrvHashes::default(),
        }
    }

    /// Write `recipe`.
    pub fn make(&mut self, recipe: Recipe) -> Result<Written, String> {
        if recipe.outputs.is_empty() {
            return Err(format!("{}: no outputs", recipe.name));
        }
        let mut drv = Derivation {
            outputs: recipe
                .outputs
                .iter()
                .map(|o| {
                    (
                        o.clone(),
                        Output {
                            path: String::new(),
                            hash_algo: String::new(),
                            hash: String::new(),
                        },
                    )
                })
                .collect(),
            input_drvs: recipe.input_drvs,
            input_srcs: recipe.input_srcs,
            system: recipe.system,
            builder: recipe.builder,
            args: recipe.args,
            env: recipe.env,
        };
        drv.env.insert("name".into(), recipe.name.clone());
        drv.env.insert("system".into(), drv.system.clone());
        drv.env.insert("builder".into(), drv.builder.clone());
        for o in &recipe.outputs {
            drv.env.insert(o.clone(), String::new());
        }
        let made = &self.made;
        let mut load = |p: &str| {
            made.get(p)
                .cloned()
                .ok_or_else(|| format!("input derivation {p} was not made here"))
        };
        self.hashes
            .fill_outputs(&self.dir, &recipe.name, &mut drv, &mut load)?;
        let text = drv.to_aterm();
        let mut references: Vec<StorePath> = drv
            .input_drvs
            .keys()
            .chain(&drv.input_srcs)
            .map(|p| StorePath::parse_in(&self.dir, p).map_err(|e| format!("{p}: {e}")))
            .collect::<Result<_, _>>()?;
        references.sort();
        references.dedup();
        let path = text_path(
            &self.dir,
            &format!("{}.drv", recipe.name),
            &text,
            &references,
        )?;
        let outputs = drv
            .outputs
            .iter()
            .map(|(n, o)| {
                StorePath::parse_in(&self.dir, &o.path)
                    .map(|p| (n.clone(), p))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        self.made.insert(path.to_string(), drv.clone());
        Ok(Written {
            path,
            text,
            references,
            outputs,
            drv,
        })
    }
}

/// Nix's `makeTextPath`: the path of a text item with these contents and
/// references.
pub fn text_path(
    dir: &StoreDir,
    name: &str,
    contents: &[u8],
    references: &[StorePath],
) -> Result<StorePath, String> {
    let mut kind = String::from("text");
    let mut refs: Vec<String> = references.iter().map(ToString::to_string).collect();
    refs.sort();
    for r in refs {
        kind.push(':');
        kind.push_str(&r);
    }
    drv_paths::make_store_path(&kind, &drv_paths::sha256(contents), dir, name)
}
