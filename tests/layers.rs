//! The tree shows the flow (docs/architecture.md, "Stages and what each may import"): every
//! product file imports only from its own stage or the stages below, and no two product files
//! import each other in a loop. Read from the `crate::` and `super::` paths of `src/`, with
//! comments and `#[cfg(test)] mod tests` left out (tests may reach anywhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

/// The stages, bottom-up: a file of stage N may import stages 0..=N only.
const STAGES: &[(&str, usize)] = &[
    ("diag", 0),
    ("files", 0),
    ("table", 0),
    ("lab", 1),
    ("guest", 2),
    ("host", 3),
    ("plan", 4),
    ("apply", 5),
    ("verify", 6),
    ("results", 7),
    ("session", 7),
    ("cli", 8),
];

fn stage(top: &str) -> Option<usize> {
    STAGES.iter().find(|(n, _)| *n == top).map(|(_, s)| *s)
}

fn product_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "snapshots") {
                product_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs")
            && !p.file_stem().is_some_and(|s| s.to_string_lossy().ends_with("tests"))
        {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` block.
fn code(text: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#[cfg(test)]") && lines.get(i + 1).is_some_and(|n| n.contains("mod tests")) {
            break;
        }
        let l = line.split("//").next().unwrap_or("");
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The module path of `file` under `src/` (`plan/vm.rs` -> [plan, vm]; `plan/mod.rs` -> [plan]).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The product file that defines the longest prefix of module path `m`.
fn file_of(files: &BTreeMap<Vec<String>, usize>, m: &[String]) -> Option<usize> {
    (1..=m.len()).rev().find_map(|k| files.get(&m[..k]).copied())
}

/// Every module path a file's code names: `crate::a::b::{c, d::e}` gives `a::b::c`, `a::b::d::e`;
/// `super::x` is resolved against the file's own module.
fn imports(own: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (start, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':')
        {
            continue;
        }
        let mut base: Vec<String> = if code[start..].starts_with("crate::") {
            Vec::new()
        } else {
            // `own` of a mod.rs is its folder, of another file the file: `super` is one up.
            let mut b = own.to_vec();
            b.pop();
            b
        };
        let rest = &code[start..];
        let rest = rest.split_once("::").map(|(_, r)| r).unwrap_or("");
        let mut chars = rest.chars().peekable();
        let mut seg = String::new();
        loop {
            match chars.peek() {
                Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                    seg.push(*c);
                    chars.next();
                }
                Some(':') => {
                    chars.next();
                    if chars.peek() == Some(&':') {
                        chars.next();
                    }
                    if seg == "super" {
                        base.pop();
                    } else if !seg.is_empty() {
                        base.push(std::mem::take(&mut seg));
                    }
                    seg.clear();
                }
                Some('{') => {
                    // a group: take each first segment of the group as its own import
                    let group: String = chars.clone().take_while(|c| *c != '}').collect();
                    for item in group.split(',') {
                        let first: String =
                            item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                        if !first.is_empty() && first != "self" {
                            let mut p = base.clone();
                            p.push(first);
                            out.push(p);
                        }
                    }
                    break;
                }
                _ => {
                    if !seg.is_empty() {
                        base.push(seg);
                    }
                    out.push(base);
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn imports_run_down_the_stages_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    product_files(&src, &mut paths);
    paths.sort();
    let mut index = BTreeMap::new();
    let mut graph = DiGraph::<String, ()>::new();
    let mut nodes = Vec::new();
    for p in &paths {
        let m = module_of(&src, p);
        nodes.push(graph.add_node(p.strip_prefix(&src).unwrap().display().to_string()));
        index.insert(m, nodes.len() - 1);
    }
    let mut upward = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let own = module_of(&src, p);
        let Some(top) = own.first() else { continue };
        if top == "main" {
            continue;
        }
        let Some(mine) = stage(top) else {
            upward.push(format!(
                "{}: its folder is in no stage (add it to STAGES and docs/architecture.md)",
                p.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(p).unwrap();
        for m in imports(&own, &code(&text)) {
            let Some(first) = m.first() else { continue };
            if let Some(theirs) = stage(first)
                && theirs > mine
            {
                upward.push(format!("{} imports {} (stage {theirs} above {mine})", p.display(), m.join("::")));
            }
            if let Some(j) = file_of(&index, &m)
                && j != i
                && !m.starts_with(&own)
            {
                graph.update_edge(nodes[i], nodes[j], ());
            }
        }
    }
    assert!(upward.is_empty(), "imports that climb a stage:\n{}", upward.join("\n"));
    let circles: Vec<String> = tarjan_scc(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(|n| graph[*n].clone()).collect::<Vec<_>>().join(" -> "))
        .collect();
    assert!(circles.is_empty(), "files that import each other in a loop:\n{}", circles.join("\n"));
}

/// The two boundaries of `host/` (docs/architecture.md, stage 3) know nothing of each other:
/// the libvirt boundary (`host/hypervisor/`, its in-memory doubles excepted) imports neither
/// the machine (`host::machine`) nor the pair that joins them (`host::Host`, `host/mod.rs`),
/// and the machine imports neither libvirt's nor the pair.
#[test]
fn the_libvirt_and_machine_boundaries_import_each_other_not() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    product_files(&src.join("host"), &mut paths);
    let host = |m: &[String], what: &str| m.len() >= 2 && m[0] == "host" && m[1] == what;
    let pair = |m: &[String]| m.len() >= 2 && m[0] == "host" && m[1].starts_with(|c: char| c.is_ascii_uppercase());
    let mut crossing = Vec::new();
    for p in &paths {
        let own = module_of(&src, p);
        let libvirt_side = own.get(1).is_some_and(|s| s == "hypervisor") && own.get(2).is_none_or(|s| s != "memory");
        let machine_side = own.get(1).is_some_and(|s| s == "machine");
        let text = std::fs::read_to_string(p).unwrap();
        for m in imports(&own, &code(&text)) {
            let crosses = (libvirt_side && (host(&m, "machine") || m == ["host"] || pair(&m)))
                || (machine_side && (host(&m, "hypervisor") || m == ["host"] || pair(&m)));
            if crosses {
                crossing.push(format!("{} imports {}", p.display(), m.join("::")));
            }
        }
    }
    assert!(crossing.is_empty(), "imports across the host's two boundaries:\n{}", crossing.join("\n"));
}
