//! `orchestra.sampling{...}`: the sampling chain as a Lua value. Wherever a sampling
//! setting is accepted, a plain table works too (it is merged onto the instrument's
//! defaults); a `Sampling` value replaces them whole.
//!
//! ```lua
//! local precise = orchestra.sampling { temperature = 0.2, top_p = 0.9, seed = 7 }
//! local wilder = precise:with { temperature = 1.1 }
//! band.ella:generate("a haiku", { sampling = wilder })
//! ```

use mlua::{Lua, MetaMethod, Table, UserData, UserDataFields, UserDataMethods, Value};

use crate::engine::SamplingParams;

use crate::score::util::{describe, did_you_mean, misuse};

/// The fields a sampling table may set.
pub(crate) const FIELDS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "grammar",
    "greedy",
];

#[derive(Debug, Clone)]
pub(crate) struct Sampling(pub SamplingParams);

fn number(lua: &Lua, key: &str, v: &Value) -> mlua::Result<f64> {
    match v {
        Value::Integer(i) => Ok(*i as f64),
        Value::Number(n) => Ok(*n),
        other => Err(misuse(
            lua,
            format!("sampling `{key}` must be a number, got {}", describe(other)),
        )),
    }
}

fn integer(lua: &Lua, key: &str, v: &Value) -> mlua::Result<i64> {
    let n = number(lua, key, v)?;
    if n.fract() != 0.0 {
        return Err(misuse(
            lua,
            format!("sampling `{key}` must be a whole number, got {n}"),
        ));
    }
    Ok(n as i64)
}

fn in_range(lua: &Lua, key: &str, v: f64, lo: f64, hi: f64) -> mlua::Result<f64> {
    if v < lo || v > hi || v.is_nan() {
        return Err(misuse(
            lua,
            format!("sampling `{key}` must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(v)
}

/// Sets one field; `Ok(false)` when `key` is not a sampling field.
pub(crate) fn set_field(
    lua: &Lua,
    s: &mut SamplingParams,
    key: &str,
    v: &Value,
) -> mlua::Result<bool> {
    match key {
        "temperature" => {
            s.temperature = in_range(lua, key, number(lua, key, v)?, 0.0, 100.0)? as f32
        }
        "top_k" => s.top_k = in_range(lua, key, integer(lua, key, v)? as f64, 0.0, 1e9)? as i32,
        "top_p" => s.top_p = in_range(lua, key, number(lua, key, v)?, 0.0, 1.0)? as f32,
        "min_p" => s.min_p = in_range(lua, key, number(lua, key, v)?, 0.0, 1.0)? as f32,
        "repeat_penalty" => {
            s.repeat_penalty = in_range(lua, key, number(lua, key, v)?, 0.0, 100.0)? as f32
        }
        "repeat_last_n" => {
            s.repeat_last_n = in_range(lua, key, integer(lua, key, v)? as f64, -1.0, 1e9)? as i32
        }
        "frequency_penalty" => {
            s.frequency_penalty = in_range(lua, key, number(lua, key, v)?, -100.0, 100.0)? as f32
        }
        "presence_penalty" => {
            s.presence_penalty = in_range(lua, key, number(lua, key, v)?, -100.0, 100.0)? as f32
        }
        "seed" => {
            s.seed = match v {
                Value::Nil => None,
                v => Some(
                    in_range(lua, key, integer(lua, key, v)? as f64, 0.0, u32::MAX as f64)? as u32,
                ),
            }
        }
        "grammar" => {
            s.grammar = match v {
                Value::Nil => None,
                Value::String(g) => Some(g.to_str()?.to_string()),
                other => {
                    return Err(misuse(
                        lua,
                        format!(
                            "sampling `grammar` must be a GBNF string (root rule `root`), got {}",
                            describe(other)
                        ),
                    ));
                }
            }
        }
        "greedy" => match v {
            Value::Boolean(true) => s.temperature = 0.0,
            Value::Boolean(false) | Value::Nil => {}
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "sampling `greedy` must be true or false, got {}",
                        describe(other)
                    ),
                ));
            }
        },
        _ => return Ok(false),
    }
    Ok(true)
}

/// Merges a sampling table onto `base`; unknown keys are misuse.
pub(crate) fn merge_table(
    lua: &Lua,
    base: &SamplingParams,
    t: &Table,
) -> mlua::Result<SamplingParams> {
    let mut s = base.clone();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = match &k {
            Value::String(k) => k.to_str()?.to_string(),
            other => {
                return Err(misuse(
                    lua,
                    format!("sampling takes named fields, got key {}", describe(other)),
                ));
            }
        };
        if !set_field(lua, &mut s, &key, &v)? {
            let hint = did_you_mean(&key, FIELDS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(misuse(
                lua,
                format!(
                    "sampling has no field `{key}`{hint}; known fields: {}",
                    FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(s)
}

/// A sampling setting given as a table, a `Sampling` value or nil (keep `base`).
pub(crate) fn from_value(
    lua: &Lua,
    base: &SamplingParams,
    v: &Value,
) -> mlua::Result<SamplingParams> {
    match v {
        Value::Nil => Ok(base.clone()),
        Value::Table(t) => merge_table(lua, base, t),
        Value::UserData(ud) => match ud.borrow::<Sampling>() {
            Ok(s) => Ok(s.0.clone()),
            Err(_) => Err(misuse(
                lua,
                "sampling must be a table or an `orchestra.sampling{...}` value",
            )),
        },
        other => Err(misuse(
            lua,
            format!(
                "sampling must be a table or an `orchestra.sampling{{...}}` value, got {}",
                describe(other)
            ),
        )),
    }
}

/// The fields of a sampling chain as a Lua table.
pub(crate) fn to_table(lua: &Lua, s: &SamplingParams) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("temperature", s.temperature)?;
    t.set("top_k", s.top_k)?;
    t.set("top_p", s.top_p)?;
    t.set("min_p", s.min_p)?;
    t.set("repeat_penalty", s.repeat_penalty)?;
    t.set("repeat_last_n", s.repeat_last_n)?;
    t.set("frequency_penalty", s.frequency_penalty)?;
    t.set("presence_penalty", s.presence_penalty)?;
    t.set("seed", s.seed)?;
    t.set("grammar", s.grammar.clone())?;
    Ok(t)
}

impl UserData for Sampling {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("temperature", |_, s| Ok(s.0.temperature));
        fields.add_field_method_get("top_k", |_, s| Ok(s.0.top_k));
        fields.add_field_method_get("top_p", |_, s| Ok(s.0.top_p));
        fields.add_field_method_get("min_p", |_, s| Ok(s.0.min_p));
        fields.add_field_method_get("repeat_penalty", |_, s| Ok(s.0.repeat_penalty));
        fields.add_field_method_get("repeat_last_n", |_, s| Ok(s.0.repeat_last_n));
        fields.add_field_method_get("frequency_penalty", |_, s| Ok(s.0.frequency_penalty));
        fields.add_field_method_get("presence_penalty", |_, s| Ok(s.0.presence_penalty));
        fields.add_field_method_get("seed", |_, s| Ok(s.0.seed));
        fields.add_field_method_get("grammar", |_, s| Ok(s.0.grammar.clone()));
        fields.add_field_method_get("greedy", |_, s| Ok(s.0.is_greedy()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // A copy with some fields changed.
        methods.add_method("with", |lua, s, t: Table| {
            Ok(Sampling(merge_table(lua, &s.0, &t)?))
        });
        // The fields as a plain table.
        methods.add_method("table", |lua, s, ()| to_table(lua, &s.0));
        methods.add_meta_method(MetaMethod::NewIndex, |lua, _, (k, _): (Value, Value)| {
            Err::<(), _>(misuse(
                lua,
                format!(
                    "sampling values do not change in place (field {}): make a new one with `s:with{{...}}`",
                    describe(&k)
                ),
            ))
        });
        methods.add_meta_method(MetaMethod::ToString, |_, s, ()| {
            let p = &s.0;
            let mut parts = vec![if p.is_greedy() {
                "greedy".to_string()
            } else {
                format!(
                    "temperature={} top_k={} top_p={} min_p={}",
                    p.temperature, p.top_k, p.top_p, p.min_p
                )
            }];
            if p.repeat_penalty != 1.0 {
                parts.push(format!("repeat_penalty={}", p.repeat_penalty));
            }
            if p.frequency_penalty != 0.0 {
                parts.push(format!("frequency_penalty={}", p.frequency_penalty));
            }
            if p.presence_penalty != 0.0 {
                parts.push(format!("presence_penalty={}", p.presence_penalty));
            }
            if let Some(seed) = p.seed {
                parts.push(format!("seed={seed}"));
            }
            if p.grammar.is_some() {
                parts.push("grammar".into());
            }
            Ok(format!("Sampling({})", parts.join(" ")))
        });
    }
}

/// Method and field names, for REPL completion.
pub(crate) const NAMES: &[&str] = &[
    "with",
    "table",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "grammar",
    "greedy",
];
