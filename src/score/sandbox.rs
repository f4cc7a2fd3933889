//! The sandbox of shared scores and the module finder behind `require`.
//!
//! A shared score gets the safe standard library minus everything that reaches outside
//! the VM: no programs (`os.execute`, `io.popen`), no files outside the score's folder
//! (`io.open`, `io.lines`, `io.input`, `io.output` are confined; `loadfile`/`dofile`
//! are gone), no native modules (`package.loadlib`, no C searchers), no binary chunks
//! (`string.dump`, `load` in text mode only), no environment (`os.getenv`), no process
//! control (`os.exit`, `os.setlocale`) and no `__gc` finalizers (they would run outside
//! any CPU budget). Disabled functions stay in place and raise an error that says why
//! and how to allow them, instead of a puzzling "attempt to call a nil value".

use std::path::Path;
use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::context::{VmContext, ctx};
use super::error::flatten;
use super::util::{confine, describe, display_path, misuse};

/// The stdlib: (module name, file shown in tracebacks, source).
pub(crate) const STDLIB: &[(&str, &str, &str)] = &[
    (
        "orchestra.text",
        "stdlib/text.lua",
        include_str!("../../stdlib/text.lua"),
    ),
    (
        "orchestra.list",
        "stdlib/list.lua",
        include_str!("../../stdlib/list.lua"),
    ),
    (
        "orchestra.trace",
        "stdlib/trace.lua",
        include_str!("../../stdlib/trace.lua"),
    ),
    (
        "orchestra.route",
        "stdlib/route.lua",
        include_str!("../../stdlib/route.lua"),
    ),
    (
        "orchestra.arrange",
        "stdlib/arrange.lua",
        include_str!("../../stdlib/arrange.lua"),
    ),
];

const PRELUDE: &str = include_str!("prelude.lua");

const TRUST_HINT: &str = "pass `--allow-unsafe` to trust this score";

fn disabled(lua: &Lua, name: &'static str, why: &'static str) -> mlua::Result<Function> {
    lua.create_function(move |lua, _: MultiValue| -> mlua::Result<()> {
        Err(misuse(
            lua,
            format!("`{name}` is disabled in shared scores ({why}): {TRUST_HINT}"),
        ))
    })
}

fn path_arg(lua: &Lua, func: &str, v: &Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(misuse(
            lua,
            format!("`{func}` needs a file name, got {}", describe(other)),
        )),
    }
}

fn confined(lua: &Lua, c: &VmContext, func: &str, path: &str) -> mlua::Result<String> {
    confine(&c.dir, Path::new(path))
        .map(|p| p.display().to_string())
        .map_err(|e| {
            misuse(
                lua,
                format!("`{func}`: {e}; shared scores may only open files in their own folder: {TRUST_HINT}"),
            )
        })
}

/// Applies the shared-score sandbox to a fresh VM (after the standard libraries are
/// loaded, before the prelude).
pub(crate) fn apply_shared(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.set(
        "loadfile",
        disabled(lua, "loadfile", "it reads any file; use `require`")?,
    )?;
    g.set(
        "dofile",
        disabled(lua, "dofile", "it runs any file; use `require`")?,
    )?;

    let string: Table = g.get("string")?;
    string.set(
        "dump",
        disabled(lua, "string.dump", "binary chunks can escape the VM")?,
    )?;

    let os: Table = g.get("os")?;
    for (name, full, why) in [
        ("execute", "os.execute", "it runs programs"),
        ("exit", "os.exit", "it ends the whole process"),
        ("remove", "os.remove", "it deletes files"),
        ("rename", "os.rename", "it moves files"),
        (
            "tmpname",
            "os.tmpname",
            "it creates files outside the score's folder",
        ),
        (
            "getenv",
            "os.getenv",
            "environment variables may hold secrets",
        ),
        ("setlocale", "os.setlocale", "it changes the whole process"),
    ] {
        os.set(name, disabled(lua, full, why)?)?;
    }

    let io: Table = g.get("io")?;
    io.set("popen", disabled(lua, "io.popen", "it runs programs")?)?;
    io.set(
        "tmpfile",
        disabled(
            lua,
            "io.tmpfile",
            "it creates files outside the score's folder",
        )?,
    )?;
    let raw_open: Function = io.get("open")?;
    io.set(
        "open",
        lua.create_function(move |lua, (path, rest): (Value, MultiValue)| {
            let c = ctx(lua);
            let p = path_arg(lua, "io.open", &path)?;
            let p = confined(lua, &c, "io.open", &p)?;
            raw_open.call::<MultiValue>((p, rest))
        })?,
    )?;
    let raw_lines: Function = io.get("lines")?;
    io.set(
        "lines",
        lua.create_function(move |lua, (path, rest): (Value, MultiValue)| {
            if path.is_nil() {
                return raw_lines.call::<MultiValue>(());
            }
            let c = ctx(lua);
            let p = path_arg(lua, "io.lines", &path)?;
            let p = confined(lua, &c, "io.lines", &p)?;
            raw_lines.call::<MultiValue>((p, rest))
        })?,
    )?;
    for name in ["input", "output"] {
        let raw: Function = io.get(name)?;
        let func: &'static str = if name == "input" {
            "io.input"
        } else {
            "io.output"
        };
        io.set(
            name,
            lua.create_function(move |lua, arg: Value| match &arg {
                Value::String(s) => {
                    let c = ctx(lua);
                    let p = confined(lua, &c, func, &s.to_str()?)?;
                    raw.call::<MultiValue>(p)
                }
                _ => raw.call::<MultiValue>(arg),
            })?,
        )?;
    }

    let package: Table = g.get("package")?;
    package.set(
        "loadlib",
        disabled(
            lua,
            "package.loadlib",
            "native code runs outside the sandbox",
        )?,
    )?;
    package.set("cpath", "")?;
    package.set("path", "")?;
    package.set("searchers", lua.create_table()?)?;

    // No debug library (it reaches into any function's upvalues and the registry),
    // except a traceback for `xpcall` handlers; other fields say why they are missing.
    let debug = lua.create_table()?;
    debug.set(
        "traceback",
        lua.create_function(|lua, (msg, level): (Option<String>, Option<usize>)| {
            lua.traceback(msg.as_deref(), level.unwrap_or(1))
        })?,
    )?;
    let debug_meta = lua.create_table()?;
    debug_meta.set(
        "__index",
        lua.create_function(|lua, (_t, key): (Value, Value)| -> mlua::Result<()> {
            Err(misuse(
                lua,
                format!(
                    "`debug.{}` is disabled in shared scores (the debug library reaches into other code): {TRUST_HINT}",
                    key.to_string().unwrap_or_default()
                ),
            ))
        })?,
    )?;
    debug.set_metatable(Some(debug_meta))?;
    g.set("debug", debug)?;

    let raw_gc: Function = g.get("collectgarbage")?;
    g.set(
        "collectgarbage",
        lua.create_function(move |lua, (opt, rest): (Value, MultiValue)| {
            let allowed = match &opt {
                Value::Nil => true,
                Value::String(s) => {
                    matches!(&*s.to_str()?, "collect" | "count" | "step" | "isrunning")
                }
                _ => false,
            };
            if !allowed {
                return Err(misuse(
                    lua,
                    format!(
                        "`collectgarbage({})` is disabled in shared scores (only \"collect\", \"count\", \"step\" and \"isrunning\"): {TRUST_HINT}",
                        describe(&opt)
                    ),
                ));
            }
            raw_gc.call::<MultiValue>((opt, rest))
        })?,
    )?;
    Ok(())
}

/// Runs the prelude: `require`, and the Lua half of the shared sandbox.
pub(crate) fn run_prelude(lua: &Lua, shared: bool) -> mlua::Result<()> {
    let finder = lua.create_function(|lua, name: String| find_module(lua, &name))?;
    let error_message = lua.create_function(|lua, v: Value| match v {
        Value::Error(e) => Ok(Value::String(lua.create_string(flatten(&e).0)?)),
        other => Ok(other),
    })?;
    lua.load(PRELUDE)
        .set_name("=[orchestra prelude]")
        .set_mode(ChunkMode::Text)
        .call::<()>((finder, shared, error_message))
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// `(loader, file)` for a module name, or `(nil, why)`.
fn find_module(lua: &Lua, name: &str) -> mlua::Result<(Value, String)> {
    if let Some((_, file, source)) = STDLIB.iter().find(|(n, ..)| *n == name) {
        let f = lua
            .load(*source)
            .set_name(format!("@{file}"))
            .set_mode(ChunkMode::Text)
            .into_function()?;
        return Ok((Value::Function(f), file.to_string()));
    }
    if name.starts_with("orchestra.") {
        let known: Vec<String> = STDLIB.iter().map(|(n, ..)| format!("`{n}`")).collect();
        return Ok((
            Value::Nil,
            format!(
                "no stdlib module `{name}`: the stdlib has {}",
                known.join(", ")
            ),
        ));
    }
    if !is_module_name(name) {
        return Ok((
            Value::Nil,
            format!(
                "`{name}` is not a module name: use dots between folder names (`require(\"lib.util\")` loads `lib/util.lua` beside the score)"
            ),
        ));
    }
    let c: Arc<VmContext> = ctx(lua);
    let rel = name.replace('.', "/");
    let candidates = [format!("{rel}.lua"), format!("{rel}/init.lua")];
    for cand in &candidates {
        let full = c.dir.join(cand);
        if full.is_file() {
            let text = std::fs::read_to_string(&full).map_err(|e| {
                misuse(lua, format!("cannot read module `{}`: {e}", full.display()))
            })?;
            c.add_dep(&full);
            let shown = display_path(&c.dir_display.join(cand));
            let f = lua
                .load(text)
                .set_name(format!("@{shown}"))
                .set_mode(ChunkMode::Text)
                .into_function()?;
            return Ok((Value::Function(f), shown));
        }
    }
    Ok((
        Value::Nil,
        format!(
            "module `{name}` not found: looked for `{}` and `{}` (modules load from the score's folder)",
            display_path(&c.dir_display.join(&candidates[0])),
            display_path(&c.dir_display.join(&candidates[1]))
        ),
    ))
}
