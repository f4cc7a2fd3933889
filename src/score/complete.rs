//! Tab completion for the REPL: globals, table fields, and the fields and methods of
//! the runtime's userdata (`band.col<TAB>`, `band.coltrane:gen<TAB>`). Reads values
//! without running Lua code, except the runtime's own field getters.

use mlua::{AnyUserData, Lua, ObjectLike, Table, Value};

use super::api::band::{self, Band};
use super::api::model::{self, Instrument};
use super::api::orchestra;
use super::api::sampling::{self, Sampling};
use super::api::stage::{self, StageHandle};
use super::util::{LUA_KEYWORDS, is_identifier};

/// Methods of `Model` (the rest of its names are fields).
const MODEL_METHODS: &[&str] = &[
    "load",
    "unload",
    "info",
    "generate",
    "stream",
    "chat",
    "tokenize",
    "detokenize",
    "embed",
];
const BAND_FIELDS: &[&str] = &["stage", "budget"];

/// `(start, candidates)`: replace `line[start..pos]` with one of the candidates.
pub(crate) fn complete(lua: &Lua, line: &str, pos: usize) -> (usize, Vec<String>) {
    let pos = pos.min(line.len());
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.' || *c == ':'))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let expr = &before[start..];
    let (word_start, mut names) = match expr.rfind(['.', ':']) {
        None => {
            let mut names = table_names(&lua.globals(), false);
            names.extend(LUA_KEYWORDS.iter().map(|s| s.to_string()));
            (start, names)
        }
        Some(i) => {
            let methods_only = expr.as_bytes()[i] == b':';
            let names = match resolve(lua, &expr[..i]) {
                Some(v) => names_of(lua, &v, methods_only),
                None => Vec::new(),
            };
            (start + i + 1, names)
        }
    };
    let prefix = &line[word_start..pos];
    names.retain(|n| n.starts_with(prefix));
    names.sort();
    names.dedup();
    (word_start, names)
}

/// The value of a dotted path (`band.coltrane`), without calling Lua functions.
fn resolve(lua: &Lua, path: &str) -> Option<Value> {
    let mut parts = path.split(['.', ':']);
    let mut v: Value = lua.globals().raw_get(parts.next()?).ok()?;
    for part in parts {
        v = match &v {
            Value::Table(t) => {
                let direct: Value = t.raw_get(part).ok()?;
                if direct.is_nil() {
                    let meta = t.metatable()?;
                    match meta.raw_get::<Value>("__index").ok()? {
                        Value::Table(idx) => idx.raw_get(part).ok()?,
                        _ => Value::Nil,
                    }
                } else {
                    direct
                }
            }
            Value::UserData(ud) if is_runtime_userdata(ud) => ud.get::<Value>(part).ok()?,
            _ => return None,
        };
        if v.is_nil() {
            return None;
        }
    }
    Some(v)
}

fn is_runtime_userdata(ud: &AnyUserData) -> bool {
    ud.is::<Band>() || ud.is::<Instrument>() || ud.is::<StageHandle>() || ud.is::<Sampling>()
}

fn table_names(t: &Table, functions_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |t: &Table| {
        for (k, v) in t.pairs::<Value, Value>().flatten() {
            if let Value::String(s) = k {
                let s = s.to_string_lossy();
                if is_identifier(&s) && (!functions_only || matches!(v, Value::Function(_))) {
                    out.push(s);
                }
            }
        }
    };
    add(t);
    if let Some(meta) = t.metatable()
        && let Ok(Value::Table(idx)) = meta.raw_get::<Value>("__index")
    {
        add(&idx);
    }
    out
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn class_names(lua: &Lua, class: &str) -> Vec<String> {
    lua.named_registry_value::<Table>(class)
        .map(|t| table_names(&t, false))
        .unwrap_or_default()
}

fn names_of(lua: &Lua, v: &Value, methods_only: bool) -> Vec<String> {
    match v {
        Value::Table(t) => {
            let mut names = table_names(t, methods_only);
            // `orchestra.` also offers what is documented even before first use.
            if let Ok(Value::Table(o)) = lua.globals().raw_get::<Value>("orchestra")
                && o.to_pointer() == t.to_pointer()
            {
                names.extend(strs(orchestra::NAMES));
            }
            names
        }
        Value::String(_) => lua
            .globals()
            .raw_get::<Table>("string")
            .map(|t| table_names(&t, true))
            .unwrap_or_default(),
        Value::UserData(ud) => {
            if let Ok(b) = ud.borrow::<Band>() {
                let mut names: Vec<String> = band::NAMES
                    .iter()
                    .filter(|n| !methods_only || !BAND_FIELDS.contains(n))
                    .map(|s| s.to_string())
                    .collect();
                if !methods_only {
                    names.extend(b.members().iter().map(|m| m.name.clone()));
                }
                names.extend(class_names(lua, band::CLASS));
                names
            } else if ud.is::<Instrument>() {
                let mut names = if methods_only {
                    strs(MODEL_METHODS)
                } else {
                    strs(model::NAMES)
                };
                names.extend(class_names(lua, model::CLASS));
                names
            } else if ud.is::<StageHandle>() {
                strs(stage::NAMES)
            } else if ud.is::<Sampling>() {
                if methods_only {
                    strs(&["with", "table"])
                } else {
                    strs(sampling::NAMES)
                }
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}
