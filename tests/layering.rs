//! The layering that src/lib.rs and loadtest/src/lib.rs write down is the one the code has:
//! every `use crate::…` (and every `crate::…` path) of a module names a module of a lower layer.
//! Reads the numbered layer list of each lib.rs and every source file under its folder.

use std::collections::BTreeMap;
use std::path::Path;

/// Module name → layer number, from the lines `//! N. [`a`], `b`, …: description`.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, names)) = rest.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.parse::<usize>() else {
            continue;
        };
        let names = names.split_once(": ").map_or(names, |(n, _)| n);
        for name in names.split(", ") {
            let name = name.trim_matches(|c| matches!(c, '[' | ']' | '`'));
            out.insert(name.to_string(), layer);
        }
    }
    out
}

/// The top-level modules a source text names through `crate::`, including inside
/// `use crate::{a::X, b::{Y, Z}}` groups.
fn crate_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (1, true);
            let mut chars = group.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if depth == 1 && start && (c.is_alphanumeric() || c == '_') => {
                        let word: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        for _ in 1..word.chars().count() {
                            chars.next();
                        }
                        out.push(word);
                        start = false;
                    }
                    c if !c.is_whitespace() && depth == 1 => start = false,
                    _ => {}
                }
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(word);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every edge that breaks the layering of the crate rooted at `src`.
fn violations(src: &Path) -> Vec<String> {
    let layers = layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        layers.len() > 5,
        "no layer list found in {}",
        src.join("lib.rs").display()
    );
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(&module) else {
            bad.push(format!(
                "{}: module `{module}` is in no layer of lib.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for target in crate_refs(&text) {
            if target == module {
                continue;
            }
            match layers.get(&target) {
                Some(&theirs) if theirs < own => {}
                Some(&theirs) => bad.push(format!(
                    "{}: `{module}` (layer {own}) uses `{target}` (layer {theirs})",
                    rel.display()
                )),
                None => bad.push(format!(
                    "{}: `{module}` uses `crate::{target}`, which is in no layer",
                    rel.display()
                )),
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn roomcast_modules_only_use_lower_layers() {
    let bad = violations(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn loadtest_modules_only_use_lower_layers() {
    let bad = violations(&Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/src"));
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_nested_uses() {
    let text = "use crate::{config::{A, B}, hub::Hub};\nlet x = crate::node::Node::new();";
    assert_eq!(crate_refs(text), ["config", "hub", "node"]);
}
