//! The shape the README's architecture section draws, checked on the sources: no import
//! circles between modules, the configuration imports nothing above it, the query service does
//! not depend on the collector, no production file over 900 lines, and `Result<_, String>` in
//! at most two production files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 5] = [
    "core/src",
    "collector/src",
    "query/src",
    "localcluster/src",
    "src",
];

/// A crate's modules: module path (`ingest::pipeline`) → file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src) {
        let path = entry.unwrap().into_path();
        if path.is_dir() || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        out.insert(parts.join("::"), path);
    }
    out
}

/// The production part of a file: everything before its `#[cfg(test)]` module.
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The modules a file refers to (`crate::a::b`, `super::c`), resolved to known modules.
fn references(module: &str, text: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let own: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let is_dir_module = known
        .get(module)
        .is_some_and(|p| p.ends_with("mod.rs") || p.ends_with("lib.rs"));
    let mut out = BTreeSet::new();
    // Code only: a doc comment may name a module it does not use.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("crate::") || w.starts_with("super::"))
        .collect();
    for word in words {
        let mut parts: Vec<&str> = word.split("::").filter(|p| !p.is_empty()).collect();
        let mut base: Vec<&str> = if parts[0] == "crate" {
            parts.remove(0);
            Vec::new()
        } else {
            // `super` of a file module is its parent; of a `mod.rs`, the grandparent.
            let mut base = own.clone();
            if is_dir_module {
                base.pop();
            }
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop();
            }
            base
        };
        // The longest known module the path names.
        let mut best = None;
        for part in parts {
            base.push(part);
            let name = base.join("::");
            if known.contains_key(&name) {
                best = Some(name);
            }
        }
        if let Some(target) = best {
            out.insert(target);
        }
    }
    out
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a.is_empty() || b.starts_with(&format!("{a}::"))
}

/// The import graph of a crate, without edges between a module and its ancestors (a parent
/// declares and re-exports its children; children use what the parent defines).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    known
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            let targets = references(module, production(&text), &known)
                .into_iter()
                .filter(|t| t != module && !is_ancestor(t, module) && !is_ancestor(module, t))
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// Every cycle found by a depth-first search, as the path that closes it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(i) = path.iter().position(|n| n == node) {
            found.push(
                path[i..]
                    .iter()
                    .cloned()
                    .chain([node.to_string()])
                    .collect(),
            );
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_circles_between_modules() {
    for krate in CRATES {
        let found = cycles(&graph(&root().join(krate)));
        assert!(found.is_empty(), "{krate}: import circles {found:?}");
    }
}

#[test]
fn the_configuration_imports_nothing_above_it() {
    let graph = graph(&root().join("core/src"));
    let below: BTreeSet<&str> = [
        "site",
        "goals",
        "tracker",
        "visit",
        "proxies",
        "ip_prefix",
        "clock",
    ]
    .into();
    for (module, targets) in graph.iter().filter(|(m, _)| m.starts_with("config")) {
        for target in targets {
            assert!(
                below.contains(target.as_str()) || target.starts_with("config"),
                "{module} imports {target}, a layer above the configuration"
            );
        }
    }
    // And those modules stand on nothing but each other.
    for module in &below {
        for target in &graph[*module] {
            assert!(below.contains(target.as_str()), "{module} imports {target}");
        }
    }
}

#[test]
fn the_query_service_does_not_depend_on_the_collector() {
    let manifest = std::fs::read_to_string(root().join("query/Cargo.toml")).unwrap();
    assert!(!manifest.contains("glimpse-collector"), "{manifest}");
    let core = std::fs::read_to_string(root().join("core/Cargo.toml")).unwrap();
    assert!(!core.contains("glimpse-collector") && !core.contains("glimpse-query"));
}

/// Whether some `Result<…>` in `code` has `String` as its error type (its last argument at
/// the top level of the angle brackets).
fn returns_string_errors(code: &str) -> bool {
    code.match_indices("Result<").any(|(start, _)| {
        let mut depth = 0;
        let mut last_arg = String::new();
        for c in code[start + "Result".len()..].chars() {
            match c {
                '<' | '(' => {
                    depth += 1;
                    if depth > 1 {
                        last_arg.push(c);
                    }
                }
                '>' | ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return last_arg.trim() == "String";
                    }
                    last_arg.push(c);
                }
                ',' if depth == 1 => last_arg.clear(),
                _ => last_arg.push(c),
            }
        }
        false
    })
}

#[test]
fn string_errors_are_recognised() {
    assert!(returns_string_errors("fn f() -> Result<(), String> {"));
    assert!(returns_string_errors("Result<Vec<(u8, u16)>, String>"));
    assert!(!returns_string_errors(
        "Result<HashMap<String, String>, ApiError>"
    ));
    assert!(!returns_string_errors(
        "type R = Result<Query<Map<String, String>>, Rejection>;"
    ));
}

#[test]
fn production_files_are_short_and_errors_are_typed() {
    let mut long = Vec::new();
    let mut stringly = Vec::new();
    for krate in CRATES {
        for path in modules(&root().join(krate)).into_values() {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = production(&text);
            let lines = code.lines().count();
            if lines > 900 {
                long.push(format!("{} ({lines} lines)", path.display()));
            }
            if returns_string_errors(code) {
                stringly.push(path.display().to_string());
            }
        }
    }
    assert!(long.is_empty(), "production files over 900 lines: {long:?}");
    assert!(
        stringly.len() <= 2,
        "{} production files return Result<_, String>: {stringly:?}",
        stringly.len()
    );
}

/// The dependency names of a manifest's `[section]`.
fn dependencies(manifest: &str, section: &str) -> Vec<String> {
    let header = format!("[{section}]");
    let Some(start) = manifest.lines().position(|l| l.trim() == header) else {
        return Vec::new();
    };
    manifest
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| l.contains('=') && !l.trim_start().starts_with('#'))
        .map(|l| l.split(['=', '.']).next().unwrap_or("").trim().to_string())
        .collect()
}

/// Whether `name` (a crate's `snake_case` name) appears as a word in a file under `path`.
fn used_in(path: &Path, name: &str) -> bool {
    if path.is_dir() {
        return std::fs::read_dir(path)
            .unwrap()
            .any(|e| used_in(&e.unwrap().path(), name));
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    // A module included from elsewhere (`#[path = "…"]`) counts as this file's.
    let included = text.split("#[path = \"").skip(1).any(|rest| {
        let file = rest.split('"').next().unwrap_or("");
        path.parent()
            .is_some_and(|dir| file.ends_with(".rs") && used_in(&dir.join(file), name))
    });
    included
        || text.match_indices(name).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
}

/// `cargo machete`'s check, without installing it: every dependency a manifest lists is
/// named in the sources that may use it.
#[test]
fn every_dependency_is_used() {
    let mut unused = Vec::new();
    for (dir, sources) in [
        ("core", &["src", "build.rs"][..]),
        ("collector", &["src"][..]),
        ("query", &["src"][..]),
        ("bench", &["src"][..]),
        ("localcluster", &["src"][..]),
        (".", &["src"][..]),
    ] {
        let manifest = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
        for (section, extra) in [
            ("dependencies", &[][..]),
            ("dev-dependencies", &["tests", "benches"][..]),
        ] {
            for dep in dependencies(&manifest, section) {
                let name = dep.replace('-', "_");
                let found = sources.iter().chain(extra).any(|s| {
                    let path = if dir == "." && *s == "src" {
                        root().join("src")
                    } else {
                        root().join(dir).join(s)
                    };
                    used_in(&path, &name)
                });
                if !found {
                    unused.push(format!("{dir}: {section}.{dep}"));
                }
            }
        }
    }
    assert!(unused.is_empty(), "unused dependencies: {unused:?}");
}
