//! Derivations written by `offload_store::drv_maker` are the ones Nix 2.8
//! writes for the same expression: the same output paths and the same
//! `.drv` path, including derivations that depend on others.

use std::collections::{BTreeMap, BTreeSet};

use offload_core::store_path::StoreDir;
use offload_store::drv_maker::{Maker, Recipe};
use offload_tests::agents::Drvs;

fn recipe(name: &str, script: &str, inputs: &[(&str, &str)]) -> Recipe {
    Recipe {
        name: name.into(),
        system: offload_tests::current_system(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        input_drvs: inputs
            .iter()
            .map(|(d, o)| ((*d).to_owned(), BTreeSet::from([(*o).to_owned()])))
            .collect(),
        input_srcs: BTreeSet::new(),
        outputs: vec!["out".into()],
    }
}

#[test]
fn derivations_made_here_are_the_ones_nix_makes() {
    let drvs = Drvs::new();
    let mut maker = Maker::new(StoreDir::default());
    let base = maker.make(recipe("base", "echo base > $out", &[])).unwrap();
    let nix_base = drvs.sh("base", "echo base > $out");
    assert_eq!(base.path.to_string(), nix_base);
    let out = base.outputs["out"].to_string();
    let script = format!("cat {out} > $out");
    let top = maker
        .make(recipe("top", &script, &[(&nix_base, "out")]))
        .unwrap();
    let nix_top = drvs.instantiate(&format!(
        "derivation {{ name = \"top\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [\"-c\" \"cat ${{{}}} > $out\"]; }}",
        offload_tests::nixd::IsolatedNix::sh_derivation("base", "echo base > $out")
    ));
    assert_eq!(top.path.to_string(), nix_top.trim());
    assert_eq!(top.references.len(), 1);
}
