//! No import circles among the modules of `dataplane/src`, `dataplane/src/pipeline` (its
//! stages) and `control/src`: a constant or type lives with its lowest user, and a stage never
//! reaches back into another that comes before it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules of a folder (its `.rs` files and subfolders) and, for each, which of its
/// siblings it names through `prefix` (`crate::` or `super::`).
fn graph(dir: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main", "mod", "bin"].contains(&name.as_str()) {
            continue;
        }
        let files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .collect()
        } else if path.extension().is_some_and(|e| e == "rs") {
            vec![path.clone()]
        } else {
            continue;
        };
        modules.insert(name, files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (name, files) in &modules {
        let mut uses = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(f).unwrap();
            // Test modules may reach anywhere; comments name what they like.
            let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = before_tests
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in code.match_indices(prefix) {
                let rest = &code[i + prefix.len()..];
                for target in referenced(rest) {
                    if names.contains(&target) && &target != name {
                        uses.insert(target);
                    }
                }
            }
        }
        edges.insert(name.clone(), uses);
    }
    edges
}

/// The module names right after a prefix: `x::..` or `{x, y::z, ..}`.
fn referenced(rest: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    if let Some(group) = rest.strip_prefix('{') {
        let body = &group[..group.find('}').unwrap_or(group.len())];
        body.split(',').map(|p| ident(p.trim())).filter(|s| !s.is_empty()).collect()
    } else {
        vec![ident(rest)]
    }
}

/// A cycle in the graph, if there is one, as the path around it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn no_import_circles() {
    for (dir, prefix) in
        [("dataplane/src", "crate::"), ("dataplane/src/pipeline", "super::"), ("control/src", "crate::")]
    {
        let edges = graph(&root().join(dir), prefix);
        assert!(edges.len() > 5, "{dir}: modules found: {edges:?}");
        if let Some(c) = cycle(&edges) {
            panic!("{dir}: an import circle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle(&edges).unwrap().join(" "), "a b c a");
    edges.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&edges), None);
    assert_eq!(referenced("{a, b::c, d}::x"), ["a", "b", "d"]);
}
