//! Tidy checks over `src/`: the rules of the layout that the compiler does
//! not check by itself (ARCHITECTURE.md, "Wings").
//!
//! - **Wing boundaries.** Which wing may name which: the path never names
//!   the store, the queue's insides, the exporter or the admin side; the
//!   recorder reaches the outputs only through the queue (and redaction's
//!   header literals, and metrics); the outputs never name the admin side
//!   or the recorder's machinery. Read from every `crate::…` path in the
//!   code (including `use crate::wing::{a, b}` groups).
//! - **Room sizes.** No file under `src/` over 900 lines; no function
//!   outside `#[cfg(test)]` code over 120 lines.
//!
//! The scan strips comments, strings and char literals before it looks at
//! code, so a doc comment that mentions `crate::output::store` is not a
//! dependency and a `'{'` is not a brace.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 900;
const MAX_FN_LINES: usize = 120;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The code with comments, string and char literals blanked out (newlines
/// kept, so line numbers hold).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let rest = |k: usize| c.get(i + k).copied();
        match c[i] {
            '/' if rest(1) == Some('/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if rest(1) == Some('*') => {
                let mut depth = 0;
                while i < c.len() {
                    let next = c.get(i + 1).copied();
                    if c[i] == '/' && next == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && next == Some('/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                }
            }
            'r' if (rest(1) == Some('"') || rest(1) == Some('#'))
                && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_')) =>
            {
                // A raw string: r"…", r#"…"#, …
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                out.push('"');
                j += 1;
                loop {
                    match c.get(j) {
                        None => break,
                        Some('"') if (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) => {
                            j += 1 + hashes;
                            break;
                        }
                        Some(&ch) => {
                            blank(&mut out, ch);
                            j += 1;
                        }
                    }
                }
                out.push('"');
                i = j;
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                    if i < c.len() {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                }
                out.push('"');
                i += 1;
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
                if rest(1) == Some('\\') {
                    let mut j = i + 2;
                    while j < c.len() && c[j] != '\'' {
                        j += 1;
                    }
                    out.push_str("' '");
                    i = j + 1;
                } else if rest(2) == Some('\'') {
                    out.push_str("' '");
                    i += 3;
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// `crate::a::b` paths named in `code`, as "a::b" (groups expanded one
/// level: `crate::output::{sink, metrics}` gives both).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let wing = ident(rest);
        let after = &rest[wing.len()..];
        let Some(after) = after.strip_prefix("::") else {
            found.insert(wing);
            continue;
        };
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let m = ident(item.trim());
                if !m.is_empty() {
                    found.insert(format!("{wing}::{m}"));
                }
            }
        } else {
            found.insert(format!("{wing}::{}", ident(after)));
        }
    }
    found
}

/// The lines of `code` inside `#[cfg(test)]` items (their line indexes).
fn test_lines(code: &str) -> BTreeSet<usize> {
    let lines: Vec<&str> = code.lines().collect();
    let mut inside = BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            let (start, end) = block_from(&lines, i);
            inside.extend(start..=end);
            i = end + 1;
        } else {
            i += 1;
        }
    }
    inside
}

/// The line range from `from` to the line closing the first `{` at or
/// after it (or to the first `;` before any brace: a bodiless item).
fn block_from(lines: &[&str], from: usize) -> (usize, usize) {
    let mut depth = 0i32;
    let mut parens = 0i32;
    let mut opened = false;
    for (n, line) in lines.iter().enumerate().skip(from) {
        for ch in line.chars() {
            match ch {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                '(' | '[' => parens += 1,
                ')' | ']' => parens -= 1,
                ';' if !opened && depth == 0 && parens == 0 => return (from, n),
                _ => {}
            }
        }
        if opened && depth <= 0 {
            return (from, n);
        }
    }
    (from, lines.len().saturating_sub(1))
}

/// `(name, first line, length in lines)` of every function outside tests.
fn long_functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let tests = test_lines(code);
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if tests.contains(&n) {
            continue;
        }
        let t = line.trim_start();
        let Some(pos) = t.find("fn ") else { continue };
        let head = &t[..pos];
        let is_fn = head.split_whitespace().all(|w| {
            matches!(w, "pub" | "async" | "unsafe" | "const" | "extern")
                || w.starts_with("pub(")
                || w.starts_with('"')
        });
        if !is_fn {
            continue;
        }
        let name: String = t[pos + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (start, end) = block_from(&lines, n);
        let len = end - start + 1;
        if len > MAX_FN_LINES {
            out.push((name, n + 1, len));
        }
    }
    out
}

/// The wing of a file under `src/`: its first folder, or the file itself.
fn wing(rel: &str) -> &str {
    let inner = rel.strip_prefix("src/").unwrap_or(rel);
    inner.split('/').next().unwrap_or(inner)
}

/// Paths a wing must never name: (wing, forbidden prefix, why).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("path", "output::store", "the path never calls the store"),
    (
        "path",
        "output::sink",
        "the path reaches the outputs only through the recorder",
    ),
    (
        "path",
        "output::queue",
        "the path reaches the outputs only through the recorder",
    ),
    ("path", "output::otlp", "the path never calls an exporter"),
    ("path", "output::redact", "redaction runs off the path"),
    ("path", "admin", "the admin side is not on the path"),
    (
        "record",
        "output::store",
        "the recorder never calls the store",
    ),
    (
        "record",
        "output::otlp",
        "the recorder hands spans to the queue, not to an exporter",
    ),
    ("record", "admin", "the recorder does not serve"),
    ("output", "admin", "the outputs do not serve"),
    (
        "output",
        "record::exchange",
        "the outputs take finished spans, not exchanges",
    ),
    (
        "output",
        "record::request",
        "the outputs take finished spans, not exchanges",
    ),
    (
        "output",
        "record::response",
        "the outputs take finished spans, not exchanges",
    ),
    (
        "output",
        "record::finisher",
        "the outputs take finished spans, not exchanges",
    ),
    (
        "output",
        "record::stitch",
        "the outputs take finished spans, not exchanges",
    ),
    ("output", "path::proxy", "the outputs never touch traffic"),
    (
        "output",
        "path::upstream",
        "the outputs never touch traffic",
    ),
    (
        "output",
        "path::listener",
        "the outputs never touch traffic",
    ),
    ("output", "path::tee", "the outputs never touch traffic"),
    (
        "admin",
        "path::proxy",
        "the admin side never touches traffic",
    ),
    (
        "admin",
        "path::upstream",
        "the admin side never touches traffic",
    ),
    ("admin", "path::tee", "the admin side never touches traffic"),
];

#[test]
fn wings_name_only_what_they_may() {
    let mut broken = Vec::new();
    for (rel, text) in src_files() {
        let w = wing(&rel);
        for p in crate_paths(&code_only(&text)) {
            for (fw, prefix, why) in FORBIDDEN {
                if *fw == w && (p == *prefix || p.starts_with(&format!("{prefix}::"))) {
                    broken.push(format!("{rel} names crate::{p}: {why}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "wing boundaries crossed:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_file_is_over_the_room_size() {
    let big: Vec<String> = src_files()
        .into_iter()
        .filter(|(_, t)| t.lines().count() > MAX_FILE_LINES)
        .map(|(rel, t)| format!("{rel}: {} lines", t.lines().count()))
        .collect();
    assert!(
        big.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        big.join("\n")
    );
}

#[test]
fn no_function_outside_tests_is_over_the_room_size() {
    let mut long = Vec::new();
    for (rel, text) in src_files() {
        for (name, line, len) in long_functions(&code_only(&text)) {
            long.push(format!("{rel}:{line} fn {name}: {len} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

// === the checks, checked ===

#[test]
fn the_scan_sees_through_comments_strings_and_groups() {
    let code = code_only(
        "// crate::admin::x\nuse crate::output::{sink, metrics};\nlet s = \"crate::output::store\";\nlet c = '{';\nfn f<'a>(x: &'a str) {}\n/* crate::admin */ let r = r#\"crate::admin\"#;\n",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        ["output::metrics", "output::sink"]
    );
    assert_eq!(code.lines().count(), 6);
}

#[test]
fn a_long_function_is_found_and_tests_are_skipped() {
    let body = "    x += 1;\n".repeat(MAX_FN_LINES);
    let code = format!(
        "pub(crate) async fn long() {{\n{body}}}\nfn short() {{ if true {{ }} }}\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    let found = long_functions(&code_only(&code));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "long");
    assert_eq!(found[0].2, MAX_FN_LINES + 2);
}

#[test]
fn a_forbidden_path_is_reported() {
    let paths = crate_paths(&code_only("use crate::output::store::Store;"));
    let hit = FORBIDDEN
        .iter()
        .any(|(w, p, _)| *w == "path" && paths.iter().any(|q| q.starts_with(p)));
    assert!(hit);
    assert_eq!(wing("src/path/proxy.rs"), "path");
    assert_eq!(wing("src/lib.rs"), "lib.rs");
}
