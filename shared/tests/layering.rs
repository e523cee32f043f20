//! Architecture checks for the workspace, run by `cargo test -p blapi --test layering`.
//!
//! 1. Layers inside `shared/src` (crate `blapi`): every top-level module belongs to a layer
//!    (plumbing 0 < external systems 1 < domains 2). A file in module `M` may name `crate::X`
//!    (also inside `use crate::{X, ...}`) only if `X == M` or layer(X) < layer(M); plumbing may
//!    use other plumbing. A domain may use another domain only through [`ALLOWED_DOMAIN_DEPS`].
//!    Names re-exported by `lib.rs` (`crate::Error`) count as their module. An unassigned
//!    top-level module fails the check.
//! 2. External-system modules (`stripe`, `crm`) import no domain (a case of rule 1, named so).
//! 3. Every `functions/*/src/main.rs` is wiring only: at most 40 code lines, no `match`, `if`,
//!    `for`, `while` or `loop`, and a call to `run(` (lambda_runtime::run).
//! 4. No copied code: no window of 8 normalized lines appears twice in `shared/src` and
//!    `functions/*/src` (whitespace collapsed; blank, comment, `use` and punctuation-only
//!    lines dropped).
//!
//! Test code is exempt from every rule: files named `tests.rs` or `*_tests.rs`, files under a
//! `tests/`, `benches/` or `examples/` folder, and everything after the first line containing
//! `#[cfg(test)]` in a file (so keep `#[cfg(test)]` items at the end of a file).
//! Comments and string-literal contents are ignored. This file uses only `std`; it can also be
//! built alone: `rustc --edition 2024 --test shared/tests/layering.rs -o /tmp/layering &&
//! (cd shared && /tmp/layering)`. The `self_test` module feeds synthetic sources to the checkers.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

/// Layers, lowest first: (kind, the top-level modules of `shared/src` in it).
const LAYERS: [(&str, &str); 3] = [
    (
        "plumbing",
        "config aws secrets error telemetry http tls retry deadline ledger storage archive queue values events subjects notice",
    ),
    ("external-system", "stripe crm"),
    (
        "domain",
        "webhook billing licensing leads customers revenue privacy notify portal",
    ),
];
/// Domain -> domain references that are allowed, as (from, to). Every entry must be justified
/// by a comment next to it saying why the dependency cannot be moved down a layer.
const ALLOWED_DOMAIN_DEPS: &[(&str, &str)] = &[
    // Customer sync routes account owners by lead routing's rules (territories, round-robin
    // counters, the account directory, the free-mail list): one set of rules decides who owns
    // a company, whether it arrived as a lead or as a buyer. Copying them would let the two
    // drift; moving them below the domains would put sales rules in plumbing.
    ("customers", "leads"),
    // Revenue operations report on what the other domains store and own (customer-sync's
    // subscription histories and licenses, billing's usage by day and dunning): it reads
    // their stores through their own types and ports, so there is one definition of each
    // record. It writes nothing of theirs.
    ("revenue", "customers"),
    ("revenue", "billing"),
    // Privacy requests must find, export and erase a person's data in every domain's store
    // (leads, customer states, licenses, billing records): each connector goes through that
    // domain's own store port, so the erasure uses the same keys and layout the writer does.
    // Nothing else of those domains is used.
    ("privacy", "leads"),
    ("privacy", "customers"),
    ("privacy", "licensing"),
    ("privacy", "billing"),
    // The portal API shows a customer what the other domains store (customer-sync's account
    // state, licenses and their files, billing's invoices and dunning) through those domains'
    // own store ports and types: one definition of each record, one place that reads it.
    ("portal", "customers"),
    ("portal", "licensing"),
    ("portal", "billing"),
    // A sales-assisted seat change is an opportunity in the CRM, written through the CRM port
    // and its record type; a privacy request from the portal is checked by the privacy
    // domain's own rules (kinds, jurisdictions, deadline) before it is handed over.
    ("portal", "crm"),
    ("portal", "privacy"),
];
const MAX_MAIN_LINES: usize = 40;
const BANNED_IN_MAIN: &[&str] = &["match", "if", "for", "while", "loop"];
const WINDOW: usize = 8;

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let n = LAYERS
        .iter()
        .position(|(_, m)| m.split(' ').any(|x| x == module))?;
    Some((n, LAYERS[n].0))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits `text` into lines twice: `code` (comments removed, strings kept) and `bare`
/// (comments removed, string and char literal contents blanked), both with the same lines.
fn lex(text: &str) -> (Vec<String>, Vec<String>) {
    let s: Vec<char> = text.chars().collect();
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let (mut code, mut bare) = (String::new(), String::new());
    let mut i = 0;
    while i < s.len() {
        // A string literal may start here: optional b/c prefix, optional r and #s, then `"`.
        let word_start = i == 0 || !is_ident(s[i - 1]);
        let p = i + usize::from(word_start && matches!(s[i], 'b' | 'c'));
        let raw = word_start && at(p) == 'r';
        let hashes = (p + usize::from(raw)..)
            .take_while(|&k| raw && at(k) == '#')
            .count();
        let quote = p + usize::from(raw) + hashes;
        // (end of the token, (chars kept at its start, at its end) or None for a comment)
        let (end, keep) = if s[i] == '/' && at(i + 1) == '/' {
            (
                (i..s.len()).find(|&k| s[k] == '\n').unwrap_or(s.len()),
                None,
            )
        } else if s[i] == '/' && at(i + 1) == '*' {
            let close = (i + 2..s.len()).find(|&k| s[k] == '*' && at(k + 1) == '/');
            (close.map_or(s.len(), |k| k + 2), None)
        } else if at(quote) == '"' {
            let mut k = quote + 1;
            while k < s.len() && !(s[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#')) {
                k += if !raw && s[k] == '\\' { 2 } else { 1 };
            }
            (
                (k + 1 + hashes).min(s.len()),
                Some((quote + 1 - i, 1 + hashes)),
            )
        } else if s[i] == '\'' && (at(i + 1) == '\\' || (at(i + 2) == '\'' && at(i + 1) != '\'')) {
            let from = if at(i + 1) == '\\' { i + 3 } else { i + 2 };
            let k = (from..s.len()).find(|&k| s[k] == '\'').unwrap_or(s.len());
            ((k + 1).min(s.len()), Some((1, 1))) // a char literal; a lone `'` is a lifetime
        } else {
            (i + 1, Some((1, 0)))
        };
        for (n, &ch) in s[i..end].iter().enumerate() {
            let Some((head, tail)) = keep else {
                code.extend((ch == '\n').then_some('\n'));
                bare.extend((ch == '\n').then_some('\n'));
                continue;
            };
            let inner = n >= head && n + tail < end - i && ch != '\n';
            code.push(ch);
            bare.push(if inner { ' ' } else { ch });
        }
        if keep.is_none() {
            code.push(' ');
            bare.push(' ');
        }
        i = end;
    }
    let lines = |t: String| t.split('\n').map(str::to_string).collect::<Vec<_>>();
    (lines(code), lines(bare))
}

fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path
            .split('/')
            .any(|c| matches!(c, "tests" | "benches" | "examples"))
}

/// The production part of a file: `(code, bare)` lines before the first `#[cfg(test)]`;
/// nothing for a test file.
fn production(path: &str, text: &str) -> (Vec<String>, Vec<String>) {
    if is_test_file(path) {
        return (Vec::new(), Vec::new());
    }
    let (mut code, mut bare) = lex(text);
    let end = bare
        .iter()
        .position(|l| l.contains("#[cfg(test)]"))
        .unwrap_or(bare.len());
    code.truncate(end);
    bare.truncate(end);
    (code, bare)
}

/// Every `crate::X` and every `X` directly inside `crate::{...}` as (1-based line, X).
fn crate_refs(bare: &[String]) -> Vec<(usize, String)> {
    let s = bare.join("\n");
    let line_at = |i: usize| 1 + s[..i].matches('\n').count();
    let skip_ws = |i: usize| s.len() - s[i..].trim_start().len();
    let ident_at = |i: usize| s[i..].split(|c| !is_ident(c)).next().map(str::to_string);
    let mut refs = Vec::new();
    for (start, needle) in s.match_indices("crate::") {
        let i = skip_ws(start + needle.len());
        if s[..start].ends_with(is_ident) {
            continue;
        } else if !s[i..].starts_with('{') {
            refs.push((line_at(i), ident_at(i).unwrap_or_default()));
            continue;
        }
        let mut depth = 0;
        for (k, c) in s[i..].char_indices() {
            if (c == '{' && depth == 0) || (c == ',' && depth == 1) {
                let j = skip_ws(i + k + 1);
                refs.push((line_at(j), ident_at(j).unwrap_or_default()));
            }
            depth += usize::from(c == '{');
            depth -= usize::from(c == '}');
            if depth == 0 {
                break;
            }
        }
    }
    refs.retain(|(_, x)| !x.is_empty() && x != "self");
    refs
}

/// Top-level module of a file under `shared/src` (`None` for lib.rs and files elsewhere).
fn module_of(path: &str) -> Option<String> {
    let rel = path.strip_prefix("shared/src/")?;
    let first = rel.split('/').next()?;
    (rel != "lib.rs").then(|| first.trim_end_matches(".rs").to_string())
}

/// Names that `lib.rs` re-exports (`pub use error::{Error, Result};`) mapped to their module.
fn reexports(lib_rs: &str) -> HashMap<String, String> {
    let text = lex(lib_rs).1.join("\n");
    let mut map = HashMap::new();
    for part in text.split("pub use ").skip(1) {
        let stmt = part.split(';').next().unwrap_or("");
        let mut names = stmt
            .split(|c: char| !is_ident(c))
            .filter(|w| !w.is_empty() && !matches!(*w, "as" | "self" | "crate"));
        let Some(module) = names.next() else { continue };
        for name in names {
            map.insert(name.to_string(), module.to_string());
        }
    }
    map
}

/// Rules 1 and 2 over `(workspace-relative path, text)` pairs; `shared/src/lib.rs`, if given,
/// only supplies the re-exports.
fn check_layers(files: &[(String, String)]) -> Vec<String> {
    let lib = files.iter().find(|(p, _)| p == "shared/src/lib.rs");
    let reexported = lib.map(|(_, t)| reexports(t)).unwrap_or_default();
    let assign = |m: &str| format!("assign module {m} to a layer in shared/tests/layering.rs");
    let (mut out, mut unknown) = (Vec::new(), HashSet::new());
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let Some((from_layer, from_kind)) = layer_of(&module) else {
            if unknown.insert(module.clone()) {
                out.push(format!(
                    "{path}:1: top-level module `{module}` has no layer: {}",
                    assign(&module)
                ));
            }
            continue;
        };
        for (line, name) in crate_refs(&production(path, text).1) {
            let reexport = layer_of(&name)
                .is_none()
                .then(|| reexported.get(&name))
                .flatten();
            let target = reexport.cloned().unwrap_or(name.clone());
            let at = format!("{path}:{line}: `crate::{name}`");
            let Some((to_layer, to_kind)) = layer_of(&target) else {
                out.push(format!(
                    "{at} names `{target}`, which has no layer: {}",
                    assign(&target)
                ));
                continue;
            };
            let ok = target == module
                || to_layer < from_layer
                || (from_kind == "plumbing" && to_kind == "plumbing")
                || (from_kind == "domain"
                    && to_kind == "domain"
                    && ALLOWED_DOMAIN_DEPS.contains(&(module.as_str(), target.as_str())));
            if ok {
                continue;
            }
            out.push(match (from_kind, to_kind) {
                ("external-system", "domain") => format!(
                    "{at}: external-system module `{module}` must not import domain `{target}` \
                     (external systems import no domain; move the shared piece down to plumbing)"
                ),
                ("domain", "domain") => format!(
                    "{at}: domain `{module}` must not reference domain `{target}` unless \
                     (\"{module}\", \"{target}\") is in ALLOWED_DOMAIN_DEPS with a justification"
                ),
                _ => format!(
                    "{at}: {from_kind} module `{module}` (layer {from_layer}) must not depend on \
                     {to_kind} module `{target}` (layer {to_layer}); dependencies point down only"
                ),
            });
        }
    }
    out
}

/// Rule 3: a `functions/*/src/main.rs` is wiring only.
fn check_main(path: &str, text: &str) -> Vec<String> {
    let (code, bare) = lex(text);
    let mut out = Vec::new();
    let mut count = 0;
    for (n, line) in bare.iter().enumerate() {
        if code[n].trim().is_empty() {
            continue;
        }
        count += 1;
        if count == MAX_MAIN_LINES + 1 {
            out.push(format!(
                "{path}:{}: main.rs has more than {MAX_MAIN_LINES} code lines; it must only wire \
                 the handler (move logic into the crate)",
                n + 1
            ));
        }
        let words: Vec<&str> = line.split(|c: char| !is_ident(c)).collect();
        for kw in BANNED_IN_MAIN.iter().filter(|kw| words.contains(kw)) {
            out.push(format!(
                "{path}:{}: `{kw}` in main.rs (wiring only; move the logic into the crate): {}",
                n + 1,
                code[n].trim()
            ));
        }
    }
    let calls_run = bare.iter().any(|l| {
        l.match_indices("run(")
            .any(|(i, _)| !l[..i].chars().next_back().is_some_and(is_ident))
    });
    if !calls_run {
        out.push(format!(
            "{path}:1: main.rs does not call `run(` (lambda_runtime::run)"
        ));
    }
    out
}

/// Normalized production lines of a file as (1-based line, text), for rule 4.
fn normalized(path: &str, text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_use = false;
    let mut in_signature = false;
    for (n, line) in production(path, text).0.iter().enumerate() {
        let norm = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let starts_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .any(|p| norm.starts_with(p));
        if in_use || starts_use {
            in_use = !norm.contains(';');
            continue;
        }
        // A function signature is dictated by the trait it implements (every adapter of a
        // port repeats it): signatures are not copied logic, bodies are.
        let starts_fn = [
            "fn ",
            "async fn ",
            "pub fn ",
            "pub async fn ",
            "pub(crate) fn ",
        ]
        .iter()
        .any(|p| norm.starts_with(p));
        if in_signature || starts_fn {
            in_signature = !(norm.ends_with('{') || norm.ends_with(';') || norm.ends_with('}'));
            continue;
        }
        if !norm.chars().all(|c| c.is_ascii_punctuation() || c == ' ') {
            out.push((n + 1, norm));
        }
    }
    out
}

/// Rule 4: any window of [`WINDOW`] normalized lines found twice (overlapping runs merged).
fn check_duplicates(files: &[(String, String)]) -> Vec<String> {
    let norm: Vec<Vec<(usize, String)>> = files.iter().map(|(p, t)| normalized(p, t)).collect();
    let window = |f: usize, i: usize| norm[f][i..i + WINDOW].iter().map(|(_, l)| l.as_str());
    let mut seen: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    let mut pairs = HashSet::new();
    for (f, lines) in norm.iter().enumerate() {
        for i in 0..lines.len().saturating_sub(WINDOW - 1) {
            let mut h = DefaultHasher::new();
            window(f, i).for_each(|l| l.hash(&mut h));
            let earlier = seen.entry(h.finish()).or_default();
            let first = earlier
                .iter()
                .find(|&&(g, j)| (g != f || i >= j + WINDOW) && window(g, j).eq(window(f, i)));
            if let Some(&(g, j)) = first {
                pairs.insert((g, j, f, i));
            }
            earlier.push((f, i));
        }
    }
    let mut starts: Vec<_> = pairs
        .iter()
        .filter(|&&(g, j, f, i)| j == 0 || i == 0 || !pairs.contains(&(g, j - 1, f, i - 1)))
        .copied()
        .collect();
    starts.sort();
    let at = |f: usize, from: usize, to: usize| {
        format!("{}:{}-{}", files[f].0, norm[f][from].0, norm[f][to].0)
    };
    starts
        .into_iter()
        .map(|(g, j, f, i)| {
            let k = (0..)
                .take_while(|k| pairs.contains(&(g, j + k, f, i + k)))
                .count();
            format!(
                "{}: copied block of {} normalized lines, also at {} (extract a shared function)",
                at(g, j, j + k + WINDOW - 2),
                k + WINDOW - 1,
                at(f, i, i + k + WINDOW - 2)
            )
        })
        .collect()
}

/// Every `.rs` file under `shared/src` and `functions/*/src` as (workspace-relative path, text).
/// The workspace root is the parent of this crate (`shared/`), or of the current directory when
/// this file is built alone with rustc.
fn workspace_sources() -> Vec<(String, String)> {
    let shared = option_env!("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("current directory"));
    let root = shared.parent().expect("shared/ has a parent").to_path_buf();
    let mut stack = vec![root.join("shared/src")];
    for function in std::fs::read_dir(root.join("functions")).expect("read functions/") {
        stack.push(function.expect("directory entry").path().join("src"));
    }
    let mut out = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.map(|e| e.expect("directory entry").path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path
                    .strip_prefix(&root)
                    .expect("under root")
                    .to_string_lossy();
                let text = std::fs::read_to_string(&path).expect("read a source file");
                out.push((rel.replace('\\', "/"), text));
            }
        }
    }
    out.sort();
    for must in ["shared/src/lib.rs", "/src/main.rs"] {
        let found = out.iter().any(|(p, _)| p.ends_with(must));
        assert!(found, "no {must} under {}: wrong root?", root.display());
    }
    out
}

fn assert_none(rule: &str, violations: Vec<String>) {
    let (n, list) = (violations.len(), violations.join("\n"));
    assert!(violations.is_empty(), "{rule}: {n} violation(s):\n{list}");
}

#[test]
fn shared_modules_respect_layers() {
    assert_none("layering (shared/src)", check_layers(&workspace_sources()));
}

#[test]
fn function_mains_are_wiring_only() {
    let is_main = |p: &str| p.starts_with("functions/") && p.split('/').count() == 4;
    let mains = workspace_sources()
        .into_iter()
        .filter(|(p, _)| is_main(p) && p.ends_with("/src/main.rs"));
    assert_none(
        "wiring-only main.rs",
        mains.flat_map(|(p, t)| check_main(&p, &t)).collect(),
    );
}

#[test]
fn no_copied_blocks() {
    let found = check_duplicates(&workspace_sources());
    let left: Vec<String> = found
        .into_iter()
        .filter(|v| {
            !KNOWN_COPIES
                .iter()
                .any(|(a, b, _)| v.starts_with(a) && v.contains(b))
        })
        .collect();
    assert_none("copied code", left);
}

/// Copies known and scheduled for removal, each with its reason. Keep it short; an entry is
/// a debt, not a permission.
const KNOWN_COPIES: &[(&str, &str, &str)] = &[];

mod self_test {
    use super::*;

    /// Files under `shared/src/`, each introduced by a `== path` line.
    fn files(spec: &str) -> Vec<(String, String)> {
        let file = |f: &str| {
            f.split_once('\n')
                .map(|(p, t)| (format!("shared/src/{p}"), t.into()))
        };
        spec.split("== ").filter_map(file).collect()
    }

    fn expect(violations: &[String], wanted: &[&str]) {
        let found = |w: &&str| violations.iter().any(|v| v.contains(*w));
        let ok = violations.len() == wanted.len() && wanted.iter().all(found);
        assert!(ok, "expected {wanted:#?}\nfound {violations:#?}");
    }

    #[test]
    fn upward_and_sideways_references_are_flagged() {
        let v = check_layers(&files(
            r#"== lib.rs
pub mod ledger;
pub use error::{Error, Result};
== ledger.rs
use crate::error::Error;
use crate::billing::M;
crate::Mystery
== stripe.rs
fn f() -> crate::Result<()> { crate::leads::x() }
== crm.rs
use crate::{
    config::Env,
    stripe::Client,
};
== leads/a.rs
use crate::{crm, webhook::{A, B}};
== billing/x.rs
// crate::leads
let s = "crate::leads"; use crate::billing::a;
#[cfg(test)]
use crate::leads;
== billing/tests.rs
use crate::leads;
== gizmo/mod.rs
use crate::Mystery;
"#,
        ));
        expect(
            &v,
            &[
                "shared/src/ledger.rs:2: `crate::billing`: plumbing module `ledger` (layer 0)",
                "shared/src/ledger.rs:3: `crate::Mystery` names `Mystery`, which has no layer",
                "shared/src/stripe.rs:1: `crate::leads`: external-system module `stripe` must not",
                "shared/src/crm.rs:3: `crate::stripe`: external-system module `crm` (layer 1)",
                "shared/src/leads/a.rs:1: `crate::webhook`: domain `leads` must not reference",
                "shared/src/gizmo/mod.rs:1: top-level module `gizmo` has no layer: assign module",
            ],
        );
    }

    #[test]
    fn main_with_logic_is_flagged() {
        let long = format!("fn main() {{\n{}    run(x);\n}}\n", "    a();\n".repeat(40));
        let cases = [
            (
                "fn main() {\n    // if, match, loop\n    ::run(f(\"for\"));\n}",
                None,
            ),
            (
                "fn main() {\n    match x { _ => run(f) }\n}\n",
                Some("m.rs:2: `match` in main.rs"),
            ),
            (
                "fn main() { rerun(); }",
                Some("m.rs:1: main.rs does not call `run(`"),
            ),
            (&long, Some("m.rs:41: main.rs has more than 40 code lines")),
        ];
        for (text, wanted) in cases {
            expect(&check_main("m.rs", text), wanted.as_slice());
        }
    }

    const BLOCK: &str = "let a = 1;\nlet b = 2;\nlet c = a + b;\n}\n\nlet d = c * 2;\n\
                         // note\nlet e = d - 1;\nlet f = e / 2;\nlet g = f + a;\nlet h = g;\n";

    #[test]
    fn copied_windows_are_flagged_once_with_both_places() {
        let a = format!("fn one() {{\n{BLOCK}}}\n");
        let b = BLOCK.replace("a + b", "a  +  b");
        let v = check_duplicates(&files(&format!(
            "== a.rs\n{a}== b.rs\nuse x;\nfn two() {{\n{b}}}"
        )));
        expect(
            &v,
            &["src/a.rs:2-12: copied block of 8 normalized lines, also at shared/src/b.rs:3-13"],
        );
        let v = check_duplicates(&files(&format!("== a.rs\n{a}\nfn other() {{}}\n{a}")));
        expect(
            &v,
            &["a.rs:2-12: copied block of 8 normalized lines, also at shared/src/a.rs:17-27"],
        );
    }

    #[test]
    fn test_code_is_not_checked_for_copies() {
        let a = format!("fn one() {{\n{BLOCK}}}\n");
        let b = format!("fn two() {{}}\n#[cfg(test)]\nmod tests {{\n{BLOCK}}}\n");
        let v = check_duplicates(&files(&format!(
            "== a.rs\n{a}== b.rs\n{b}== x/tests.rs\n{a}"
        )));
        expect(&v, &[]);
    }

    #[test]
    fn lexer_keeps_lines_and_blanks_comments_and_strings() {
        let (code, bare) = lex("a /* x\ny */ b\nr#\"crate::q\"# 'c' '\\'' &'a x // c\n\"s\\\"\n\"");
        assert_eq!(code.len(), 5);
        assert_eq!(bare[2].trim_end(), "r#\"        \"# ' ' '  ' &'a x");
        assert!(crate_refs(&bare).is_empty() && code[2].contains("crate::q"));
    }
}
