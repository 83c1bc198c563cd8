//! Test: the modules of the crate form no cycle.
//!
//! Reads every `src/**/*.rs` (but `main.rs`), collects the module paths it
//! names (`crate::a::b`, `super::x`, `use` trees with braces), and draws an
//! edge between the two siblings under the nearest common ancestor
//! (`drain` → `state` for `crate::state::journal::Journal` in `drain.rs`;
//! `juju::tools` → `juju::results` inside `juju`). A module naming its own
//! ancestor or descendant draws none. Test-only code (`#[cfg(test)]`
//! modules, inline or in files) is left out: test scaffolding may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`, `src/a/mod.rs` → `[a]`, `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The text without line comments and without `#[cfg(test)]` inline
/// modules (everything from the first one on: they close the files here);
/// also the names of file modules it declares under `#[cfg(test)]`.
fn non_test_text(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_mods = Vec::new();
    let mut cfg_test = false;
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let t = code.trim();
        if cfg_test {
            let decl = t
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ") {
                if let Some(file_mod) = name.strip_suffix(';') {
                    test_mods.push(file_mod.trim().to_string());
                } else {
                    break;
                }
            }
        }
        cfg_test = t == "#[cfg(test)]";
        out.push_str(code);
        out.push('\n');
    }
    (out, test_mods)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses a path or use tree at `s[i..]`: `a::b`, `a::{b, c::d}`, `a::*`.
fn parse_tree(s: &[u8], mut i: usize) -> (Vec<ModPath>, usize) {
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut prefix: ModPath = Vec::new();
    loop {
        i = skip_ws(i);
        if i < s.len() && s[i] == b'{' {
            let mut all = Vec::new();
            i += 1;
            loop {
                i = skip_ws(i);
                if i >= s.len() || s[i] == b'}' {
                    return (all, i + 1);
                }
                let (sub, j) = parse_tree(s, i);
                for p in sub {
                    all.push(prefix.iter().cloned().chain(p).collect());
                }
                i = skip_ws(j);
                if i < s.len() && s[i] == b',' {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        if s[i..].starts_with(b"::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Module paths `text` names, resolved against `me` (its own module).
fn referenced(text: &str, me: &ModPath) -> Vec<ModPath> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    for (word, base) in [
        ("crate::", Vec::new()),
        ("super::", me[..me.len().saturating_sub(1)].to_vec()),
    ] {
        let mut from = 0;
        while let Some(k) = text[from..].find(word) {
            let at = from + k;
            from = at + word.len();
            if at > 0 && (is_ident(s[at - 1]) || s[at - 1] == b':') {
                continue;
            }
            let (paths, _) = parse_tree(s, at + word.len());
            for p in paths {
                out.push(base.iter().cloned().chain(p).collect());
            }
        }
    }
    out
}

/// The module graph: an edge per pair of siblings, with a witness file.
fn graph(src: &Path) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
    let mut all = Vec::new();
    files(src, &mut all);
    let mut texts = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for f in &all {
        if f.file_name().is_some_and(|n| n == "main.rs") {
            continue;
        }
        let m = module_of(src, f);
        let (text, test_mods) = non_test_text(&std::fs::read_to_string(f).unwrap());
        for t in test_mods {
            test_only.insert(m.iter().cloned().chain([t]).collect::<ModPath>());
        }
        texts.insert(m, (f.clone(), text));
    }
    let known: BTreeSet<ModPath> = texts
        .keys()
        .filter(|m| !test_only.iter().any(|t| m.starts_with(t)))
        .cloned()
        .collect();
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for m in &known {
        let (file, text) = &texts[m];
        for r in referenced(text, m) {
            // The longest known module the path starts with.
            let Some(target) = (0..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            let common = m.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == m.len() || common == target.len() {
                continue;
            }
            let (from, to) = (m[..=common].to_vec(), target[..=common].to_vec());
            edges
                .entry(from)
                .or_default()
                .insert(to, file.strip_prefix(src).unwrap().display().to_string());
        }
    }
    edges
}

/// A cycle, if any, as the modules along it.
fn find_cycle(edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>) -> Option<Vec<ModPath>> {
    fn visit(
        n: &ModPath,
        edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
        stack: &mut Vec<ModPath>,
        done: &mut BTreeSet<ModPath>,
    ) -> Option<Vec<ModPath>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.clone());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for next in edges.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn name(m: &ModPath) -> String {
    m.join("::")
}

#[test]
fn the_parser_reads_paths_use_trees_and_super() {
    let me: ModPath = vec!["juju".into(), "log".into()];
    let text = "use crate::{config::Config, state::{self, Journal}};\nuse super::tools::X;\nlet x = crate::text::shown(a, 3);\nlet y = nocrate::z;";
    let got: BTreeSet<String> = referenced(text, &me).iter().map(name).collect();
    let want: BTreeSet<String> = [
        "config::Config",
        "state::self",
        "state::Journal",
        "juju::tools::X",
        "text::shown",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    let (text, test_mods) = non_test_text(
        "use crate::a; // crate::b\n#[cfg(test)]\nmod props;\n#[cfg(test)]\nmod tests {\n use crate::c;\n}\n",
    );
    assert_eq!(test_mods, vec!["props".to_string()]);
    assert!(text.contains("crate::a") && !text.contains("crate::b") && !text.contains("crate::c"));
    let edges = BTreeMap::from([
        (
            vec!["a".to_string()],
            BTreeMap::from([(vec!["b".to_string()], String::new())]),
        ),
        (
            vec!["b".to_string()],
            BTreeMap::from([(vec!["a".to_string()], String::new())]),
        ),
    ]);
    assert!(find_cycle(&edges).is_some());
}

#[test]
fn no_module_cycle() {
    // NLM_MODULE_GRAPH_SRC: check another tree's src/ (e.g. an older commit's).
    let src = std::env::var_os("NLM_MODULE_GRAPH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = graph(&src);
    assert!(
        edges.contains_key(&vec!["drain".to_string()]),
        "the graph is not empty: {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                format!(
                    "{} -> {} (in {})",
                    name(&w[0]),
                    name(&w[1]),
                    edges[&w[0]][&w[1]]
                )
            })
            .collect();
        panic!("module cycle:\n  {}", steps.join("\n  "));
    }
}
