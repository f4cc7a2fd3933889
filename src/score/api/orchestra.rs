//! The `orchestra` global: constructors (`band`, `sampling`), the event bus (`emit`,
//! `narrate`), logging into `tracing` (`log`), concurrency (`together`, `sleep`),
//! small utilities (`json`, `inspect`, `clock`) and the rehearsal band's files.
//!
//! ```lua
//! orchestra.log("routing", req.prompt)           -- info
//! orchestra.log.warn("no reviewer available")
//! orchestra.emit("routed", { section = "code" })  -- an event on the bus
//! local path = orchestra.rehearsal_model("coltrane")
//! ```

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};

use crate::events::EventKind;
use crate::score::context::ctx;
use crate::score::options::Sandbox;
use crate::score::util::{caller_location, describe, misuse, pretty, score_location};

use super::band::{self, STANDARD_SECTIONS};
use super::model::to_lua;
use super::sampling::{Sampling, from_value as sampling_from};

pub(crate) const NAMES: &[&str] = &[
    "band",
    "sampling",
    "log",
    "emit",
    "narrate",
    "together",
    "sleep",
    "clock",
    "json",
    "inspect",
    "rehearsal_model",
    "rehearsal_band",
    "score",
    "sandbox",
    "sections",
    "version",
    "Model",
    "Band",
    "offstage",
    "deprecated",
];

/// Registry name of `orchestra.offstage`, the set of sections whose instruments never
/// play (kept in the registry so a score that shadows `orchestra` cannot lose it).
pub(crate) const OFFSTAGE: &str = "orchestra.offstage";

/// Reports an old form a score still uses, once per VM: a `tracing` warning while
/// playing and a note of `orchestra check`, pointing at the score's line.
///
/// ```lua
/// orchestra.deprecated("`mylib.play(req, band)`", "write `mylib.play(band, req)`")
/// ```
pub(crate) fn deprecated(lua: &Lua, what: &str, instead: &str) {
    let c = ctx(lua);
    if !c.first_deprecation(what) {
        return;
    }
    let at = score_location(lua).unwrap_or_else(|| c.score_name.clone());
    let note = format!("{at}: deprecated: {what}; {instead}");
    if !c.options.check_only {
        let score = c.score_name.as_str();
        tracing::warn!(target: "orchestra::score", score, "{note}");
    }
    c.warn(note);
}

/// Joins `print`-style arguments with `tostring`.
pub(crate) fn join_args(lua: &Lua, args: &MultiValue, sep: &str) -> mlua::Result<String> {
    let tostring: mlua::Function = lua.globals().raw_get("tostring")?;
    let mut parts = Vec::with_capacity(args.len());
    for a in args.iter() {
        match a {
            Value::String(s) => parts.push(s.to_string_lossy()),
            other => parts.push(tostring.call::<String>(other.clone())?),
        }
    }
    Ok(parts.join(sep))
}

fn log(lua: &Lua, level: &str, args: &MultiValue) -> mlua::Result<()> {
    let message = join_args(lua, args, " ")?;
    let c = ctx(lua);
    let at = caller_location(lua).unwrap_or_default();
    let score = c.score_name.as_str();
    match level {
        "debug" => tracing::debug!(target: "orchestra::score", score, at, "{message}"),
        "warn" => tracing::warn!(target: "orchestra::score", score, at, "{message}"),
        "error" => tracing::error!(target: "orchestra::score", score, at, "{message}"),
        _ => tracing::info!(target: "orchestra::score", score, at, "{message}"),
    }
    Ok(())
}

fn to_json(lua: &Lua, what: &str, v: Value) -> mlua::Result<serde_json::Value> {
    if v.is_nil() {
        return Ok(serde_json::Value::Null);
    }
    lua.from_value::<serde_json::Value>(v).map_err(|e| {
        misuse(
            lua,
            format!("{what} must be plain data (tables, strings, numbers, booleans): {e}"),
        )
    })
}

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

pub(crate) fn register(lua: &Lua) -> mlua::Result<()> {
    let c = ctx(lua);
    let o = lua.create_table()?;
    o.set("version", env!("CARGO_PKG_VERSION"))?;
    o.set(
        "sandbox",
        match c.options.sandbox {
            Sandbox::Shared => "shared",
            Sandbox::Trusted => "trusted",
        },
    )?;
    o.set(
        "sections",
        lua.create_sequence_from(STANDARD_SECTIONS.iter().copied())?,
    )?;
    let score = lua.create_table()?;
    score.set("name", c.score_name.as_str())?;
    score.set("dir", c.dir.display().to_string())?;
    o.set("score", score)?;

    o.set(
        "band",
        lua.create_function(|lua, opts: Value| match opts {
            Value::Nil => band::create(lua, None),
            Value::Table(t) => band::create(lua, Some(t)),
            other => Err(misuse(
                lua,
                format!(
                    "`orchestra.band` takes a table of settings `{{ memory = \"12GiB\", idle_unload = \"10m\" }}`, got {}",
                    describe(&other)
                ),
            )),
        })?,
    )?;

    o.set(
        "sampling",
        lua.create_function(|lua, t: Value| {
            Ok(Sampling(sampling_from(
                lua,
                &crate::engine::SamplingParams::default(),
                &t,
            )?))
        })?,
    )?;

    // `orchestra.log(...)` logs at info; `orchestra.log.warn(...)` and friends pick a level.
    let log_t = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        log_t.set(
            level,
            lua.create_function(move |lua, args: MultiValue| log(lua, level, &args))?,
        )?;
    }
    let log_meta = lua.create_table()?;
    log_meta.set(
        "__call",
        lua.create_function(|lua, (_self, args): (Value, MultiValue)| log(lua, "info", &args))?,
    )?;
    log_t.set_metatable(Some(log_meta))?;
    o.set("log", log_t)?;

    o.set(
        "emit",
        lua.create_function(|lua, (name, data): (Value, Value)| {
            let Value::String(name) = name else {
                return Err(misuse(
                    lua,
                    format!(
                        "`orchestra.emit` needs an event name first, got {}",
                        describe(&name)
                    ),
                ));
            };
            let data = to_json(lua, "`orchestra.emit` data", data)?;
            ctx(lua).options.events.emit(EventKind::Custom {
                name: name.to_str()?.to_string(),
                data,
            });
            Ok(())
        })?,
    )?;

    o.set(
        "narrate",
        lua.create_function(|lua, args: MultiValue| {
            let text = join_args(lua, &args, " ")?;
            ctx(lua).options.events.emit(EventKind::Custom {
                name: "narration".into(),
                data: serde_json::json!({ "text": text }),
            });
            Ok(())
        })?,
    )?;

    o.set(
        "together",
        lua.create_async_function(|lua, fns: Value| band::together(lua, fns))?,
    )?;

    // Waits without using the CPU budget.
    o.set(
        "sleep",
        lua.create_async_function(|lua, seconds: Value| {
            let d = match seconds {
                Value::Integer(n) if n >= 0 => Ok(Duration::from_secs(n as u64)),
                Value::Number(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
                other => Err(misuse(
                    &lua,
                    format!(
                        "`orchestra.sleep` needs seconds (a number), got {}",
                        describe(&other)
                    ),
                )),
            };
            async move {
                tokio::time::sleep(d?).await;
                Ok(())
            }
        })?,
    )?;

    // Seconds since the process started (monotonic; for measuring).
    o.set(
        "clock",
        lua.create_function(|_, ()| Ok(clock_origin().elapsed().as_secs_f64()))?,
    )?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, (v, opts): (Value, Option<Table>)| {
            let pretty = match &opts {
                Some(o) => o.get::<Option<bool>>("pretty")?.unwrap_or(false),
                None => false,
            };
            let j = to_json(lua, "`orchestra.json.encode` input", v)?;
            let s = if pretty {
                serde_json::to_string_pretty(&j)
            } else {
                serde_json::to_string(&j)
            };
            s.map_err(mlua::Error::external)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, s: Value| {
            let Value::String(s) = s else {
                return Err(misuse(
                    lua,
                    format!(
                        "`orchestra.json.decode` needs a string, got {}",
                        describe(&s)
                    ),
                ));
            };
            match serde_json::from_slice::<serde_json::Value>(&s.as_bytes()) {
                Ok(j) => Ok((to_lua(lua, &j)?, Value::Nil)),
                Err(e) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!("invalid JSON: {e}"))?),
                )),
            }
        })?,
    )?;
    o.set("json", json)?;

    o.set(
        "inspect",
        lua.create_function(|_, v: Value| Ok(pretty(&v)))?,
    )?;

    // The path of a rehearsal band member (the band is written on first use).
    o.set(
        "rehearsal_model",
        lua.create_function(|lua, name: Value| {
            let Value::String(name) = name else {
                return Err(misuse(
                    lua,
                    format!(
                        "`orchestra.rehearsal_model` needs a member name (\"coltrane\", \"ella\", \"monk\", \"mingus\"), got {}",
                        describe(&name)
                    ),
                ));
            };
            ctx(lua)
                .rehearsal_model(&name.to_str()?)
                .map(|p| p.display().to_string())
                .map_err(|e| misuse(lua, e))
        })?,
    )?;

    // `{ { name, section, script }, ... }`: who is in the rehearsal band.
    o.set(
        "rehearsal_band",
        lua.create_function(|lua, ()| {
            let out = lua.create_table()?;
            for m in crate::synth::rehearsal_band() {
                let t = lua.create_table()?;
                t.set("name", m.name)?;
                t.set("section", m.section)?;
                t.set("script", m.script)?;
                out.raw_push(t)?;
            }
            Ok(out)
        })?,
    )?;

    // Extension points: methods added here are found on every `Model` / `Band`.
    let model_class = lua.create_table()?;
    let band_class = lua.create_table()?;
    lua.set_named_registry_value(super::model::CLASS, model_class.clone())?;
    lua.set_named_registry_value(band::CLASS, band_class.clone())?;
    o.set("Model", model_class)?;
    o.set("Band", band_class)?;

    // Sections whose instruments route and never play (`band:lead`, `band:reviewer`,
    // `band:players` and the arrangements skip them): `orchestra.offstage.tuning = true`.
    let offstage = lua.create_table()?;
    offstage.set("routing", true)?;
    lua.set_named_registry_value(OFFSTAGE, offstage.clone())?;
    o.set("offstage", offstage)?;

    o.set(
        "deprecated",
        lua.create_function(|lua, (what, instead): (Value, Option<String>)| {
            let Value::String(what) = what else {
                return Err(misuse(
                    lua,
                    format!(
                        "`orchestra.deprecated` needs the old form first: `orchestra.deprecated(\"`f(a, b)`\", \"write `f(b, a)`\")`, got {}",
                        describe(&what)
                    ),
                ));
            };
            deprecated(lua, &what.to_str()?, instead.as_deref().unwrap_or("see the README"));
            Ok(())
        })?,
    )?;

    lua.globals().set("orchestra", o)?;

    // `print` goes to the runtime's printer (stdout, or above the REPL prompt).
    let printer = c.options.printer.clone();
    lua.globals().set(
        "print",
        lua.create_function(move |lua, args: MultiValue| {
            printer(&join_args(lua, &args, "\t")?);
            Ok(())
        })?,
    )?;
    Ok(())
}
