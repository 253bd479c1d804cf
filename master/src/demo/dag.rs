//! The demo's sample DAG: a source, a fan-out of chapters, one render
//! step that needs the feature `big` (which only one agent has), fan-ins,
//! and a final check. Builders are `/bin/sh` scripts using absolute paths
//! (builds see no PATH); each output names its inputs, so outputs refer
//! to outputs as real packages do.

use std::collections::{BTreeMap, BTreeSet};

use offload_core::store_path::StoreDir;
use offload_store::drv_maker::{Maker, Recipe, Written};

/// One derivation: name, inputs (by name), features, extra script.
struct Step {
    name: &'static str,
    inputs: &'static [&'static str],
    features: &'static [&'static str],
    work: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        name: "demo-source",
        inputs: &[],
        features: &[],
        work: "echo 'Once upon a time, a build farm configured itself.'",
    },
    Step {
        name: "demo-chapter-1",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'Agents advertise over mDNS.'",
    },
    Step {
        name: "demo-chapter-2",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'The master links to each over QUIC.'",
    },
    Step {
        name: "demo-chapter-3",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'Keys are proven in the handshake.'",
    },
    Step {
        name: "demo-chapter-4",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'Inputs travel as signed archives.'",
    },
    Step {
        name: "demo-chapter-5",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'Logs stream back while builds run.'",
    },
    Step {
        name: "demo-chapter-6",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.4; echo 'Outputs come home signed.'",
    },
    Step {
        name: "demo-cover",
        inputs: &["demo-source"],
        features: &[],
        work: "/bin/sleep 0.2; echo 'cover art'",
    },
    Step {
        name: "demo-render",
        inputs: &["demo-chapter-1", "demo-chapter-2"],
        features: &["big"],
        work: "/bin/sleep 0.6; echo 'rendered on a big machine'",
    },
    Step {
        name: "demo-toc",
        inputs: &[
            "demo-chapter-1",
            "demo-chapter-2",
            "demo-chapter-3",
            "demo-chapter-4",
            "demo-chapter-5",
            "demo-chapter-6",
        ],
        features: &[],
        work: "echo 'table of contents'",
    },
    Step {
        name: "demo-book",
        inputs: &[
            "demo-toc",
            "demo-render",
            "demo-cover",
            "demo-chapter-3",
            "demo-chapter-4",
        ],
        features: &[],
        work: "/bin/sleep 0.3; echo 'the book'",
    },
    Step {
        name: "demo-check",
        inputs: &["demo-book"],
        features: &[],
        work: "/bin/grep -q 'Once upon a time' $out && echo 'checked'",
    },
];

/// A derivation of the DAG.
pub(super) struct Node {
    /// Its short name.
    pub(super) name: &'static str,
    /// What was written.
    pub(super) written: Written,
    /// Its required features.
    pub(super) features: Vec<String>,
    /// Its input derivations' paths.
    pub(super) inputs: Vec<String>,
}

/// The sample DAG for `system` in store directory `dir`, inputs first.
pub(super) fn sample(dir: &StoreDir, system: &str) -> Result<Vec<Node>, String> {
    let mut maker = Maker::new(dir.clone());
    let mut nodes: Vec<Node> = Vec::new();
    for step in STEPS {
        let mut script = format!("echo {} > $out; ", step.name);
        let mut input_drvs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut inputs = Vec::new();
        for dep in step.inputs {
            let node = nodes
                .iter()
                .find(|n| n.name == *dep)
                .ok_or_else(|| format!("{}: unknown input {dep}", step.name))?;
            let out = &node.written.outputs["out"];
            script.push_str(&format!("echo {out} >> $out; /bin/cat {out} >> $out; "));
            input_drvs.insert(
                node.written.path.to_string(),
                BTreeSet::from(["out".to_owned()]),
            );
            inputs.push(node.written.path.to_string());
        }
        script.push_str(&format!("{{ {}; }} >> $out", step.work));
        let mut env = BTreeMap::new();
        if !step.features.is_empty() {
            env.insert("requiredSystemFeatures".to_owned(), step.features.join(" "));
        }
        let written = maker.make(Recipe {
            name: step.name.into(),
            system: system.into(),
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            env,
            input_drvs,
            input_srcs: BTreeSet::new(),
            outputs: vec!["out".into()],
        })?;
        nodes.push(Node {
            name: step.name,
            written,
            features: step.features.iter().map(|f| (*f).to_owned()).collect(),
            inputs,
        });
    }
    Ok(nodes)
}
