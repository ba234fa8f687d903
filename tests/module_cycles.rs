//! No import circle between the modules of a crate (issue 15): a module never imports its
//! caller. Edges are the `crate::…` and `super::…` paths a module's source names outside
//! its unit tests, resolved to the deepest module file that exists; a circle is a
//! strongly connected component of more than one module.
//!
//! The operator, the API types, the topology crate and the cache node must have none
//! (the node's circle, `Shared` owning every subsystem that reached back into it, was
//! taken apart by issue 15).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn the_operator_has_no_import_circle() {
    assert_no_circle("src");
}

#[test]
fn the_api_and_topology_crates_have_no_import_circle() {
    assert_no_circle("crates/meridian-api/src");
    assert_no_circle("crates/meridian-topology/src");
}

#[test]
fn the_node_has_no_import_circle() {
    assert_no_circle("crates/meridian-node/src");
}

#[test]
fn the_checker_finds_a_circle_and_resolves_paths() {
    let graph = ModuleGraph::from_sources(&[
        ("a", "use crate::b::Thing;"),
        ("b", "fn f() { crate::c::go() }"),
        (
            "c",
            "use super::a::X; // c is top level: super is the crate",
        ),
        ("d", "use crate::a;"),
        ("d::e", "use super::Item; use crate::d::f::G;"),
        ("d::f", ""),
        (
            "g",
            "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::g2::X;\n}",
        ),
        ("g2", "use crate::g::Y;"),
    ]);
    assert_eq!(
        graph.edges["d::e"],
        BTreeSet::from(["d".into(), "d::f".into()])
    );
    assert_eq!(
        graph.circles(),
        vec![vec!["a".to_string(), "b".into(), "c".into()]],
        "unit tests' imports do not count"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn assert_no_circle(src: &str) {
    let graph = ModuleGraph::read(&root().join(src));
    assert!(graph.edges.len() > 1, "no modules read below {src}");
    let circles = graph.circles();
    assert!(
        circles.is_empty(),
        "import circles between the modules of {src}: {circles:?}"
    );
}

/// Module path (`controller::region`; `` for the crate root) → modules it names.
struct ModuleGraph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl ModuleGraph {
    fn read(src: &Path) -> Self {
        let mut sources = Vec::new();
        collect(src, src, &mut sources);
        let borrowed: Vec<(&str, &str)> = sources
            .iter()
            .map(|(module, text)| (module.as_str(), text.as_str()))
            .collect();
        Self::from_sources(&borrowed)
    }

    fn from_sources(sources: &[(&str, &str)]) -> Self {
        let modules: BTreeSet<&str> = sources.iter().map(|(module, _)| *module).collect();
        let mut edges = BTreeMap::new();
        for (module, text) in sources {
            let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
            let mut named = BTreeSet::new();
            for (prefix, base) in [("crate::", ""), ("super::", parent)] {
                for path in paths_after(without_unit_tests(text), prefix) {
                    let target = deepest_module(&modules, base, &path);
                    if target != *module && !target.is_empty() {
                        named.insert(target);
                    }
                }
            }
            edges.insert(module.to_string(), named);
        }
        ModuleGraph { edges }
    }

    /// Strongly connected components of more than one module, each sorted (Tarjan).
    fn circles(&self) -> Vec<Vec<String>> {
        struct Walk<'a> {
            graph: &'a ModuleGraph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            circles: Vec<Vec<String>>,
        }
        impl<'a> Walk<'a> {
            fn visit(&mut self, module: &'a str) {
                let order = self.index.len();
                self.index.insert(module, order);
                self.low.insert(module, order);
                self.stack.push(module);
                for next in &self.graph.edges[module] {
                    let next = next.as_str();
                    if !self.graph.edges.contains_key(next) {
                        continue;
                    }
                    if !self.index.contains_key(next) {
                        self.visit(next);
                        let low = self.low[module].min(self.low[next]);
                        self.low.insert(module, low);
                    } else if self.stack.contains(&next) {
                        let low = self.low[module].min(self.index[next]);
                        self.low.insert(module, low);
                    }
                }
                if self.low[module] == self.index[module] {
                    let mut component = Vec::new();
                    while let Some(member) = self.stack.pop() {
                        component.push(member.to_string());
                        if member == module {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.circles.push(component);
                    }
                }
            }
        }
        let mut walk = Walk {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            circles: Vec::new(),
        };
        for module in self.edges.keys() {
            if !walk.index.contains_key(module.as_str()) {
                walk.visit(module);
            }
        }
        walk.circles.sort();
        walk.circles
    }
}

/// Every `.rs` file below `dir` as (module path, source).
fn collect(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(src, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path
                .strip_prefix(src)
                .expect("below src")
                .with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            out.push((parts.join("::"), text));
        }
    }
}

/// The source before its `#[cfg(test)]` unit-test module (tests may import anything).
fn without_unit_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod ")
        .map_or(text, |at| &text[..at])
}

/// The `::`-separated identifiers after each occurrence of `prefix` that starts a path
/// (`crate::a::b::{c, d}` gives `[a, b]`; braces end the path).
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let starts_path = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|before| !(before.is_alphanumeric() || before == '_' || before == ':'));
        rest = &rest[at + prefix.len()..];
        if !starts_path {
            continue;
        }
        let mut path = Vec::new();
        let mut tail = rest;
        loop {
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if end == 0 {
                break;
            }
            path.push(tail[..end].to_string());
            match tail[end..].strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        paths.push(path);
    }
    paths
}

/// The deepest existing module `base::path[..n]` (the item's own module).
fn deepest_module(modules: &BTreeSet<&str>, base: &str, path: &[String]) -> String {
    let mut found = base.to_string();
    let mut current = base.to_string();
    for part in path {
        current = if current.is_empty() {
            part.clone()
        } else {
            format!("{current}::{part}")
        };
        if modules.contains(current.as_str()) {
            found = current.clone();
        } else {
            break;
        }
    }
    found
}
