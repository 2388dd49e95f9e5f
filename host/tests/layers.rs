//! The host's modules form layers: no module reaches, through the `crate::` paths it names, back to itself.
//! Modules name each other's items by their module (`crate::vm::Vm`), not by the root's re-exports, so
//! every dependency shows.

use std::collections::{BTreeMap, BTreeSet};

/// Each module of `host/src` and the modules its code names (`crate::name`, or `crate::{name, ...}`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().map(Result::unwrap) {
        let name = entry.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if name == "lib" {
            continue; // the root only declares and re-exports
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut named = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let leading = |path: &str| {
                path.trim().split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string()
            };
            let heads: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(0)].split(',').map(leading).collect(),
                None => vec![leading(rest)],
            };
            for head in heads.into_iter().filter(|head| !head.is_empty()) {
                assert!(head.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name} names crate::{head}");
                named.insert(head);
            }
        }
        named.retain(|module| *module != name);
        graph.insert(name, named);
    }
    graph
}

#[test]
fn no_module_of_the_host_imports_itself_back() {
    let graph = imports();
    assert!(graph.contains_key("vm") && graph["vm"].contains("transform_abi"), "{graph:?}");
    for start in graph.keys() {
        // Every module reachable from `start`; `start` must not be among them.
        let mut seen = BTreeSet::new();
        let mut next: Vec<&String> = graph[start].iter().collect();
        while let Some(module) = next.pop() {
            assert_ne!(module, start, "{start} reaches itself: {graph:?}");
            if seen.insert(module.clone()) {
                next.extend(graph.get(module).into_iter().flatten());
            }
        }
    }
}
