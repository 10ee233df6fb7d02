//! The layout of `src/` keeps its imports one way (docs/decisions.md, "Layout"): no two top-level modules use
//! each other, directly or through others, and neither do the files of one folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names that follow `prefix` in `text` (`crate::store::..` gives `store`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // `use crate::{a, b}`: every name in the braces.
        if name.is_empty() && rest.starts_with('{') {
            let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
            out.extend(inner.split(',').map(|n| n.trim().split("::").next().unwrap_or("").to_owned()));
            continue;
        }
        out.insert(name);
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Top level: module name of each file (`src/store/batch.rs` belongs to `store`).
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Inside each folder: which files use which (through `super::` or `crate::folder::`).
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
        if parts[0] == "lib" || parts[0] == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Only the code, not what its tests use, and not comments (a doc link is not an import).
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let module = parts[0].clone();
        let uses = names_after(code, "crate::");
        top.entry(module.clone()).or_default().extend(uses.iter().filter(|u| **u != module).cloned());
        if parts.len() == 2 && parts[1] != "mod" {
            let sibling_uses: BTreeSet<String> = names_after(code, "super::")
                .into_iter()
                .chain(names_after(code, &format!("crate::{module}::")))
                .filter(|u| *u != parts[1])
                .collect();
            inner.entry(module.clone()).or_default().entry(parts[1].clone()).or_default().extend(sibling_uses);
        }
    }
    let modules: BTreeSet<String> = top.keys().cloned().collect();
    for deps in top.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    assert!(top.len() > 10, "read the modules: {top:?}");
    assert_eq!(cycle(&top), None, "top-level modules that use each other");
    for (folder, mut graph) in inner {
        let files: BTreeSet<String> = graph.keys().cloned().collect();
        for deps in graph.values_mut() {
            deps.retain(|d| files.contains(d));
        }
        assert_eq!(cycle(&graph), None, "files of src/{folder}/ that use each other");
    }
}

#[test]
fn the_check_finds_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(names_after("use crate::{store, http::x}; crate::ledger::Op", "crate::").len(), 3);
}
