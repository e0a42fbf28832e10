//! The tree rule "no function over ~80 lines in `src/`" as a test: it lists every function
//! (free, method, nested or in a test module) longer than [`MAX_LINES`], counted from its
//! `fn` line to its closing brace, and fails naming them. It reads rustfmt-formatted code: a
//! body closes with a `}` at the indentation of its `fn` line.

use std::path::{Path, PathBuf};

/// The longest function `src/` may hold, in lines (signature to closing brace).
const MAX_LINES: usize = 80;

/// `(file:line name, lines)` of every function in `text` longer than `max` lines.
fn long_functions(file: &str, text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let indent = &line[..line.len() - line.trim_start().len()];
        // The signature ends at the first line ending in `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        let l = lines[open].trim_end();
        if !l.ends_with('{') {
            continue; // a declaration or a one-line body
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == close) {
            let n = end - i + 1;
            if n > max {
                out.push((format!("{file}:{} {name}", i + 1), n));
            }
        }
    }
    out
}

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if rest.starts_with("//") {
        return None;
    }
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            Some(r) => r.split_once(')')?.1.trim_start(),
            None => r.trim_start(),
        };
    }
    for q in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(q).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn no_function_in_src_is_longer_than_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.strip_prefix(&src).unwrap().display().to_string();
        long.extend(long_functions(&name, &text, MAX_LINES));
    }
    let listed: Vec<String> = long
        .iter()
        .map(|(f, n)| format!("{f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them):\n{}",
        listed.join("\n")
    );
}

#[test]
fn the_check_measures_bodies_and_skips_declarations() {
    let body: String = (0..5)
        .map(|i| format!("        let x{i} = {i};\n"))
        .collect();
    let text = format!(
        "impl A {{\n    pub(crate) fn long(\n        a: u8,\n    ) -> u8 {{\n{body}        a\n    }}\n    fn short() {{}}\n}}\ntrait T {{\n    fn decl(&self);\n}}\n"
    );
    // `long` spans its signature (3 lines), 6 body lines and the closing brace: 10 lines.
    assert_eq!(
        long_functions("x.rs", &text, 9),
        vec![("x.rs:2 long".to_string(), 10)]
    );
    assert!(long_functions("x.rs", &text, 10).is_empty());
    assert_eq!(fn_name("    pub unsafe fn f<T>(x: T)"), Some("f"));
    assert_eq!(fn_name("    // fn g()"), None);
}
