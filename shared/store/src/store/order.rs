//! Topological order of store items.

use std::collections::{BTreeSet, HashMap};

use offload_core::store_path::StorePath;

use super::Error;

/// Order `roots` so that every item comes after the items (among them) it
/// refers to; ties broken by path for a stable order.
pub(super) fn topo_sort(
    roots: &BTreeSet<StorePath>,
    refs: &HashMap<StorePath, Vec<StorePath>>,
) -> Result<Vec<StorePath>, Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&StorePath, Mark> = HashMap::new();
    let mut out = Vec::with_capacity(roots.len());
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        // Iterative depth-first search: (node, index of next reference).
        let mut stack: Vec<(&StorePath, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Visiting);
        while let Some((node, i)) = stack.pop() {
            let deps = refs.get(node).map(Vec::as_slice).unwrap_or_default();
            if let Some(dep) = deps.get(i) {
                stack.push((node, i + 1));
                if dep == node || !roots.contains(dep) {
                    continue;
                }
                match marks.get(dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        return Err(Error::Other(format!(
                            "reference cycle between {node} and {dep}"
                        )));
                    }
                    None => {
                        marks.insert(dep, Mark::Visiting);
                        stack.push((dep, 0));
                    }
                }
            } else {
                marks.insert(node, Mark::Done);
                out.push(node.clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> StorePath {
        StorePath::parse(&format!(
            "/gnu/store/{}-{name}",
            "0".repeat(32).replacen('0', &name.len().to_string(), 1)
        ))
        .expect("path")
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_refused() {
        let (a, b, c, d) = (p("a"), p("bb"), p("ccc"), p("dddd"));
        // d → b, c; b → a; c → a, c (self-reference); x outside the set is ignored.
        let outside = p("xxxxx");
        let refs: HashMap<StorePath, Vec<StorePath>> = [
            (d.clone(), vec![b.clone(), c.clone()]),
            (b.clone(), vec![a.clone(), outside]),
            (c.clone(), vec![a.clone(), c.clone()]),
            (a.clone(), vec![]),
        ]
        .into();
        let roots: BTreeSet<StorePath> = [&a, &b, &c, &d].into_iter().cloned().collect();
        let order = topo_sort(&roots, &refs).expect("no cycle");
        let pos = |x: &StorePath| order.iter().position(|y| y == x).expect("present");
        assert_eq!(order.len(), 4);
        assert!(pos(&a) < pos(&b) && pos(&a) < pos(&c) && pos(&b) < pos(&d) && pos(&c) < pos(&d));

        let mut cyclic = refs.clone();
        cyclic.insert(a.clone(), vec![d.clone()]);
        let err = topo_sort(&roots, &cyclic).expect_err("a cycle");
        assert!(err.to_string().contains("reference cycle"), "{err}");
    }
}
