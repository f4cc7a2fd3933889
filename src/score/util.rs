//! Small helpers shared by the Lua API files: errors that point at the caller's line,
//! argument checks, the value pretty-printer of the REPL and `orchestra.inspect`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mlua::{Lua, Table, Value};

/// `file.lua:12` of the nearest Lua function on the stack (skipping Rust callbacks and
/// the runtime's own prelude).
pub(crate) fn caller_location(lua: &Lua) -> Option<String> {
    location(lua, false)
}

/// [`caller_location`] past the stdlib's own files too: the score line that called
/// into `orchestra.arrange` or `orchestra.route`.
pub(crate) fn score_location(lua: &Lua) -> Option<String> {
    location(lua, true)
}

fn location(lua: &Lua, skip_stdlib: bool) -> Option<String> {
    for level in 0..24 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source();
            if src.what == "C" {
                return None;
            }
            let name = src.source.as_deref().unwrap_or("");
            if name.starts_with("=[orchestra") {
                return None;
            }
            if skip_stdlib
                && crate::score::sandbox::STDLIB
                    .iter()
                    .any(|(_, file, _)| name.strip_prefix('@') == Some(*file))
            {
                return None;
            }
            let short = src.short_src.as_deref().unwrap_or("?").to_string();
            Some(match d.current_line() {
                Some(l) => format!("{short}:{l}"),
                None => short,
            })
        });
        match found {
            None => return None, // no more levels
            Some(Some(loc)) => return Some(loc),
            Some(None) => continue,
        }
    }
    None
}

/// A Lua-facing misuse error (`file.lua:12: message`), raised at the caller's line.
pub(crate) fn misuse(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    match caller_location(lua) {
        Some(loc) => mlua::Error::RuntimeError(format!("{loc}: {message}")),
        None => mlua::Error::RuntimeError(message.to_string()),
    }
}

/// `a string`, `nil`, `a table` — for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => format!("`{b}`"),
        Value::Integer(i) => format!("the number {i}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", s.to_string_lossy()),
        other => format!("a {}", other.type_name()),
    }
}

/// Checks that every key of an options table is one of `known`.
pub(crate) fn check_keys(lua: &Lua, t: &Table, what: &str, known: &[&str]) -> mlua::Result<()> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => {
                return Err(misuse(
                    lua,
                    format!("{what} takes named fields, got key {}", describe(other)),
                ));
            }
        };
        if !known.contains(&key.as_str()) {
            let hint = did_you_mean(&key, known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(misuse(
                lua,
                format!(
                    "{what} has no field `{key}`{hint}; known fields: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The closest known word, when one is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A path as users should read it: relative to the working directory when inside it.
pub(crate) fn display_path(p: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = p.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    p.display().to_string()
}

/// `path` if it lies inside `dir` (both resolved through symlinks; a file that does not
/// exist yet is judged by its folder).
pub(crate) fn confine(dir: &Path, path: &Path) -> Result<PathBuf, String> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    // Resolve the longest existing ancestor, then re-append the rest.
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    let canon = loop {
        match existing.canonicalize() {
            Ok(c) => break c,
            Err(_) => {
                let Some(name) = existing.file_name() else {
                    return Err(format!("`{}` cannot be resolved", full.display()));
                };
                rest.push(name.to_os_string());
                existing = existing
                    .parent()
                    .ok_or_else(|| format!("`{}` cannot be resolved", full.display()))?;
            }
        }
    };
    let mut resolved = canon;
    for part in rest.iter().rev() {
        if part == ".." || part == "." {
            return Err(format!("`{}` cannot be resolved", full.display()));
        }
        resolved.push(part);
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if resolved.starts_with(&dir) {
        Ok(resolved)
    } else {
        Err(format!(
            "`{}` is outside the score's folder `{}`",
            path.display(),
            dir.display()
        ))
    }
}

/// Pretty-prints a Lua value: strings quoted, tables expanded (sorted keys, cycles and
/// depth cut), on one line when short.
pub(crate) fn pretty(v: &Value) -> String {
    let mut seen = HashSet::new();
    let mut out = String::new();
    write_value(&mut out, v, 0, &mut seen);
    out
}

const MAX_DEPTH: usize = 5;
const MAX_ITEMS: usize = 200;
const LINE: usize = 72;

fn write_value(out: &mut String, v: &Value, indent: usize, seen: &mut HashSet<usize>) {
    match v {
        Value::Nil => out.push_str("nil"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Number(n) => {
            if n.fract() == 0.0 && n.is_finite() && n.abs() < 1e15 {
                let _ = write!(out, "{n:.1}");
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Value::String(s) => out.push_str(&quote(&s.to_string_lossy())),
        Value::Table(t) => write_table(out, t, indent, seen),
        Value::Function(f) => {
            let info = f.info();
            match (info.what, info.short_src, info.line_defined) {
                ("C", _, _) | (_, None, _) => out.push_str("function: builtin"),
                (_, Some(src), Some(line)) => {
                    let _ = write!(out, "function: {src}:{line}");
                }
                (_, Some(src), None) => {
                    let _ = write!(out, "function: {src}");
                }
            }
        }
        other => match other.to_string() {
            Ok(s) => out.push_str(&s),
            Err(_) => out.push_str(other.type_name()),
        },
    }
}

fn write_table(out: &mut String, t: &Table, indent: usize, seen: &mut HashSet<usize>) {
    let id = t.to_pointer() as usize;
    if seen.contains(&id) {
        out.push_str("<cycle>");
        return;
    }
    if indent / 2 >= MAX_DEPTH {
        out.push_str("{ … }");
        return;
    }
    let mut entries: Vec<(Value, Value)> =
        t.pairs::<Value, Value>().filter_map(Result::ok).collect();
    if entries.is_empty() {
        out.push_str("{}");
        return;
    }
    seen.insert(id);
    let len = t.raw_len();
    let is_sequence = len == entries.len();
    entries.sort_by(|(a, _), (b, _)| key_order(a, b));
    let truncated = entries.len() > MAX_ITEMS;
    entries.truncate(MAX_ITEMS);
    let mut items = Vec::with_capacity(entries.len());
    for (k, v) in &entries {
        let mut item = String::new();
        if !is_sequence {
            match k {
                Value::String(s) if is_identifier(&s.to_string_lossy()) => {
                    let _ = write!(item, "{} = ", s.to_string_lossy());
                }
                other => {
                    item.push('[');
                    write_value(&mut item, other, indent + 2, seen);
                    item.push_str("] = ");
                }
            }
        }
        write_value(&mut item, v, indent + 2, seen);
        items.push(item);
    }
    if truncated {
        items.push("…".into());
    }
    seen.remove(&id);
    let one_line_len: usize = items.iter().map(|s| s.len() + 2).sum::<usize>() + 4;
    if one_line_len + indent <= LINE && items.iter().all(|s| !s.contains('\n')) {
        out.push_str("{ ");
        out.push_str(&items.join(", "));
        out.push_str(" }");
    } else {
        out.push_str("{\n");
        for item in items {
            out.push_str(&" ".repeat(indent + 2));
            out.push_str(&item);
            out.push_str(",\n");
        }
        out.push_str(&" ".repeat(indent));
        out.push('}');
    }
}

fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Integer(_) | Value::Number(_) => 0,
            Value::String(_) => 1,
            _ => 2,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(&y.as_bytes()),
        _ => match rank(a).cmp(&rank(b)) {
            Ordering::Equal => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
            o => o,
        },
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !LUA_KEYWORDS.contains(&s)
}

pub(crate) const LUA_KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

/// A Lua string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\{}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        let known = ["temperature", "top_k", "top_p", "seed"];
        assert_eq!(did_you_mean("temprature", &known), Some("temperature"));
        assert_eq!(did_you_mean("banana", &known), None);
    }

    #[test]
    fn tables_print_sorted_and_quoted() {
        let lua = Lua::new();
        let v: Value = lua
            .load(r#"return { b = 2, a = "x\n", [1] = true, list = {1, 2, 3} }"#)
            .eval()
            .unwrap();
        assert_eq!(
            pretty(&v),
            r#"{ [1] = true, a = "x\n", b = 2, list = { 1, 2, 3 } }"#
        );
    }

    #[test]
    fn paths_outside_the_folder_are_refused() {
        let dir = std::env::temp_dir();
        assert!(confine(&dir, Path::new("/etc/passwd")).is_err());
        assert!(confine(&dir, Path::new("../x")).is_err());
        assert!(confine(&dir, Path::new("new-file.txt")).is_ok());
    }
}
