//! `band.stage`: the memory budget and who is resident, as seen from Lua.
//!
//! ```lua
//! local stage = band.stage
//! print(stage:budget(), stage:used())
//! for _, r in ipairs(stage:resident()) do print(r.name, r.footprint, r.playing) end
//! stage:pin(band.coltrane)          -- never evicted nor unloaded when idle
//! stage:evict("ella")               -- true if it was loaded; nil, err while it plays
//! ```

use mlua::{Lua, MetaMethod, UserData, UserDataMethods, Value};

use crate::stage::{Stage, human_bytes};

use super::model::name_of;

#[derive(Clone)]
pub(crate) struct StageHandle(pub(crate) Stage);

pub(crate) const NAMES: &[&str] = &[
    "budget",
    "used",
    "resident",
    "is_resident",
    "pin",
    "evict",
    "names",
];

fn failure(lua: &Lua, err: impl std::fmt::Display) -> mlua::Result<(Value, Value)> {
    Ok((
        Value::Nil,
        Value::String(lua.create_string(err.to_string())?),
    ))
}

impl UserData for StageHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("budget", |_, s, ()| Ok(s.0.budget()));
        methods.add_method("used", |_, s, ()| Ok(s.0.used()));
        methods.add_method("names", |lua, s, ()| lua.create_sequence_from(s.0.names()));

        // Resident models, most recently used first:
        // `{ name, footprint, pinned, playing, idle_ms }`.
        methods.add_method("resident", |lua, s, ()| {
            let out = lua.create_table()?;
            for r in s.0.resident() {
                let t = lua.create_table()?;
                t.set("name", r.name)?;
                t.set("footprint", r.footprint_bytes)?;
                t.set("footprint_human", human_bytes(r.footprint_bytes))?;
                t.set("pinned", r.pinned)?;
                t.set("playing", r.playing)?;
                t.set("idle_ms", r.idle_ms)?;
                out.raw_push(t)?;
            }
            Ok(out)
        });

        methods.add_method("is_resident", |lua, s, who: Value| {
            Ok(s.0.is_resident(&name_of(lua, "`stage:is_resident` argument", &who)?))
        });

        // `stage:pin(model)` / `stage:pin(model, false)`.
        methods.add_method("pin", |lua, s, (who, pinned): (Value, Option<bool>)| {
            let name = name_of(lua, "`stage:pin` argument", &who)?;
            s.0.pin(&name, pinned.unwrap_or(true))
                .map_err(|e| crate::score::util::misuse(lua, e))
        });

        methods.add_method("evict", |lua, s, who: Value| {
            let name = name_of(lua, "`stage:evict` argument", &who)?;
            match s.0.evict(&name) {
                Ok(was) => Ok((Value::Boolean(was), Value::Nil)),
                Err(e) => failure(lua, e),
            }
        });

        methods.add_meta_method(MetaMethod::ToString, |_, s, ()| {
            Ok(format!(
                "Stage({} of {} used, {} resident)",
                human_bytes(s.0.used()),
                human_bytes(s.0.budget()),
                s.0.resident().len()
            ))
        });
    }
}
