//! `Band`: the instruments of a score on one memory-budgeted stage, and the ways a
//! score picks players: `lead`, `players`, `section`, `others`, `reviewer`, `together`.
//! [`plays`] is the one rule of who may lead, comp, solo or review; the arrangements
//! of `stdlib/arrange.lua` ask it too (`model.plays`, `band:players`).
//!
//! ```lua
//! local band = orchestra.band { memory = "12GiB", idle_unload = "10m" }
//! band:add("coltrane", { model = "models/coder.gguf", section = "code", context = 4096,
//!                        sampling = { temperature = 0.2 } })
//! local soloist = band:lead("code")               -- first instrument of the section that plays
//! local reviewer = band:reviewer(soloist)          -- the review section's, never the soloist
//! local comping = band:players { except = { soloist.section, "review" } }
//! local results = band:together {                 -- concurrent; results in order
//!   function() return band.monk:generate("why?") end,
//!   function() return band.ella:generate("a poem") end,
//! }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mlua::{
    AnyUserData, ErrorContext, Function, Lua, MetaMethod, MultiValue, Table, UserData,
    UserDataFields, UserDataMethods, Value,
};

use crate::engine::{DEFAULT_MAX_TOKENS, LoadOptions, SamplingParams, SnapshotOptions};
use crate::score::context::{StageKey, ctx};
use crate::score::error::ScoreError;
use crate::score::options::parse_duration;
use crate::score::resolve::resolve_model;
use crate::score::util::{check_keys, describe, did_you_mean, is_identifier, misuse};
use crate::stage::{ModelSpec, Stage, human_bytes, parse_bytes};

use super::model::{Instrument, Member, name_of};
use super::orchestra::{OFFSTAGE, deprecated};
use super::sampling;
use super::stage::StageHandle;

/// Sections a band has unless it declares its own.
pub const STANDARD_SECTIONS: &[&str] = &["code", "creative", "analysis", "review"];

/// Registry name of the Lua table holding extension methods (`orchestra.Band`).
pub(crate) const CLASS: &str = "orchestra.Band";

/// Method and field names, for REPL completion (members are added at run time).
pub(crate) const NAMES: &[&str] = &[
    "add", "lead", "players", "section", "sections", "has", "members", "others", "reviewer",
    "together", "info", "stage", "budget",
];

const BAND_OPTIONS: &[&str] = &["memory", "idle_unload", "wait_for_room", "sections"];
const MEMBER_OPTIONS: &[&str] = &[
    "model",
    "section",
    "context",
    "slots",
    "batch",
    "threads",
    "gpu_layers",
    "kv_cache",
    "embeddings",
    "prompt_cache",
    "sampling",
    "max_tokens",
    "system",
    "pinned",
    "template",
    "url",
    "api_key_env",
    "timeout",
    "connect_timeout",
    "retries",
];

/// Options that only make sense for a model on this machine, or only for a remote one.
const LOCAL_ONLY: &[&str] = &[
    "slots",
    "kv_cache",
    "prompt_cache",
    "batch",
    "threads",
    "gpu_layers",
    "embeddings",
    "pinned",
    "template",
];
const REMOTE_ONLY: &[&str] = &["api_key_env", "timeout", "connect_timeout", "retries"];

/// Default memory budget of a band that says nothing.
const DEFAULT_MEMORY: u64 = 8 << 30;

pub(crate) struct BandState {
    /// Members in the order they were added, with their Lua values (one value per
    /// member, so `band.x == band.x` and members work as table keys).
    pub(crate) members: Vec<(Arc<Member>, AnyUserData)>,
}

/// The `Band` userdata. Clones share one band.
#[derive(Clone)]
pub(crate) struct Band {
    pub(crate) state: Arc<Mutex<BandState>>,
    pub(crate) stage: Stage,
    pub(crate) key: StageKey,
    pub(crate) sections: Arc<Vec<String>>,
    /// Whether the score declared `sections` itself.
    pub(crate) declared_sections: bool,
}

impl Band {
    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.state
            .lock()
            .unwrap()
            .members
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    fn member_values(&self) -> Vec<(Arc<Member>, AnyUserData)> {
        self.state.lock().unwrap().members.clone()
    }

    fn check_section(&self, lua: &Lua, section: &str, method: &str) -> mlua::Result<()> {
        if self.sections.iter().any(|s| s == section) {
            return Ok(());
        }
        let known: Vec<&str> = self.sections.iter().map(String::as_str).collect();
        let hint = did_you_mean(section, &known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Err(misuse(
            lua,
            format!(
                "`{method}`: `{section}` is not a section of this band{hint}; its sections are {}{}",
                known.join(", "),
                if self.declared_sections {
                    String::new()
                } else {
                    "; declare others with `orchestra.band{ sections = {...} }`".into()
                }
            ),
        ))
    }

    fn section_name(&self, lua: &Lua, method: &str, v: &Value) -> mlua::Result<String> {
        match v {
            Value::String(s) => {
                let s = s.to_str()?.to_string();
                self.check_section(lua, &s, method)?;
                Ok(s)
            }
            other => Err(misuse(
                lua,
                format!("`{method}` needs a section name, got {}", describe(other)),
            )),
        }
    }
}

/// `orchestra.band{ memory = "12GiB", idle_unload = "10m", wait_for_room = "2m", sections = {...} }`
pub(crate) fn create(lua: &Lua, opts: Option<Table>) -> mlua::Result<AnyUserData> {
    let c = ctx(lua);
    let mut budget = DEFAULT_MEMORY;
    let mut idle_ttl = None;
    let mut wait = std::time::Duration::from_secs(120);
    let mut sections: Vec<String> = STANDARD_SECTIONS.iter().map(|s| s.to_string()).collect();
    let mut declared = false;
    if let Some(o) = &opts {
        check_keys(lua, o, "`orchestra.band`", BAND_OPTIONS)?;
        match o.get::<Value>("memory")? {
            Value::Nil => {}
            Value::Integer(n) if n > 0 => budget = n as u64,
            Value::String(s) => {
                budget = parse_bytes(&s.to_str()?).ok_or_else(|| {
                    misuse(
                        lua,
                        format!(
                            "`memory` must be a size like \"12GiB\" or \"512MB\", got {:?}",
                            s.to_string_lossy()
                        ),
                    )
                })?
            }
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "`memory` must be a size like \"12GiB\", got {}",
                        describe(&other)
                    ),
                ));
            }
        }
        let duration = |key: &str, v: Value| -> mlua::Result<Option<std::time::Duration>> {
            match v {
                Value::Nil | Value::Boolean(false) => Ok(None),
                Value::Integer(n) if n >= 0 => Ok(Some(std::time::Duration::from_secs(n as u64))),
                Value::Number(n) if n >= 0.0 => Ok(Some(std::time::Duration::from_secs_f64(n))),
                Value::String(s) => parse_duration(&s.to_str()?).map(Some).ok_or_else(|| {
                    misuse(
                        lua,
                        format!(
                            "`{key}` must be a duration like \"10m\", \"30s\" or \"500ms\", got {:?}",
                            s.to_string_lossy()
                        ),
                    )
                }),
                other => Err(misuse(
                    lua,
                    format!("`{key}` must be a duration like \"10m\", got {}", describe(&other)),
                )),
            }
        };
        idle_ttl = duration("idle_unload", o.get("idle_unload")?)?;
        if let Some(w) = duration("wait_for_room", o.get("wait_for_room")?)? {
            wait = w;
        }
        match o.get::<Value>("sections")? {
            Value::Nil => {}
            Value::Table(t) => {
                sections.clear();
                for s in t.sequence_values::<Value>() {
                    let s = s?;
                    let Value::String(name) = &s else {
                        return Err(misuse(
                            lua,
                            format!("each section must be a name, got {}", describe(&s)),
                        ));
                    };
                    let name = name.to_str()?.to_string();
                    if !is_identifier(&name) {
                        return Err(misuse(
                            lua,
                            format!("section `{name}` must be a plain name (letters, digits, `_`)"),
                        ));
                    }
                    if !sections.contains(&name) {
                        sections.push(name);
                    }
                }
                if sections.is_empty() {
                    return Err(misuse(lua, "`sections` must list at least one section"));
                }
                declared = true;
            }
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "`sections` must be a list of names, got {}",
                        describe(&other)
                    ),
                ));
            }
        }
    }
    let key = StageKey {
        budget,
        idle_ttl,
        wait_for_room: wait,
    };
    let stage = c.stages.get(key.clone());
    let band = Band {
        state: Arc::new(Mutex::new(BandState {
            members: Vec::new(),
        })),
        stage,
        key,
        sections: Arc::new(sections),
        declared_sections: declared,
    };
    let ud = lua.create_userdata(band.clone())?;
    c.bands.lock().unwrap().push((band, ud.clone()));
    Ok(ud)
}

fn add(lua: &Lua, band: &Band, name: Value, spec: Value) -> mlua::Result<AnyUserData> {
    let c = ctx(lua);
    let name = match &name {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`band:add` needs a name first: `band:add(\"coltrane\", {{ model = ..., section = ... }})`, got {}",
                    describe(other)
                ),
            ));
        }
    };
    if !is_identifier(&name) {
        return Err(misuse(
            lua,
            format!(
                "instrument name `{name}` must be a plain name (letters, digits, `_`), so `band.{name}` works"
            ),
        ));
    }
    if NAMES.contains(&name.as_str()) {
        return Err(misuse(
            lua,
            format!("`{name}` is a band method: give the instrument another name"),
        ));
    }
    if band.members().iter().any(|m| m.name == name) {
        return Err(misuse(
            lua,
            format!("the band already has an instrument named `{name}`"),
        ));
    }
    let Value::Table(spec) = spec else {
        return Err(misuse(
            lua,
            format!(
                "`band:add(\"{name}\", {{ model = ..., section = ... }})` needs a table, got {}",
                describe(&spec)
            ),
        ));
    };
    check_keys(
        lua,
        &spec,
        &format!("`band:add(\"{name}\", ...)`"),
        MEMBER_OPTIONS,
    )?;
    let url = match spec.get::<Value>("url")? {
        Value::Nil => None,
        Value::String(s) => Some(s.to_str()?.to_string()),
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `url` must be the server's API base like \"http://host:8080/v1\", got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let reference = match spec.get::<Value>("model")? {
        Value::String(s) => s.to_str()?.to_string(),
        other if url.is_some() => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}` needs `model = \"name\"`: the model id the server at `{}` serves, got {}",
                    url.as_deref().unwrap_or_default(),
                    describe(&other)
                ),
            ));
        }
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}` needs `model = \"path/to/file.gguf\"` or `\"hf:ORG/REPO/FILE.gguf\"`, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let section = match spec.get::<Value>("section")? {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}` needs `section = ...` (one of {}), got {}",
                    band.sections.join(", "),
                    describe(&other)
                ),
            ));
        }
    };
    band.check_section(lua, &section, &format!("band:add(\"{name}\")"))?;
    let (wrong, why) = if url.is_some() {
        (
            LOCAL_ONLY,
            "applies to models on this machine, and this one plays at `url`",
        )
    } else {
        (
            REMOTE_ONLY,
            "applies to remote instruments only (add `url = \"http://host:8080/v1\"`)",
        )
    };
    for key in wrong {
        if !spec.get::<Value>(*key)?.is_nil() {
            return Err(misuse(lua, format!("`{name}`: `{key}` {why}")));
        }
    }
    let overridden = c.options.overrides.get(&name);
    let resolved = match (overridden, &url) {
        (Some(file), _) => resolve_override(&name, file),
        (None, Some(_)) => Err(ScoreError::Model(String::new())),
        (None, None) => resolve_model(&reference, &c.dir, &c.score_name),
    };
    let path = match resolved {
        // A remote instrument has no file (unless `--model-file` plays one instead).
        Err(_) if overridden.is_none() && url.is_some() => None,
        Ok(p) => Some(p),
        // `orchestra check` runs before `orchestra pull`: a hub model not downloaded yet
        // is a note there, not an error.
        Err(e) if overridden.is_none() && c.options.check_only && is_hub_reference(&reference) => {
            c.warn(format!("`{name}`: {e}"));
            None
        }
        Err(e) => return Err(misuse(lua, format!("`{name}`: {e}"))),
    };
    // A readable GGUF header now, rather than a failed load in the middle of a request.
    if let Some(path) = &path {
        crate::gguf::read_header(path).map_err(|e| {
            misuse(
                lua,
                format!(
                    "`{name}`: `{}` is not a usable GGUF model: {e}",
                    path.display()
                ),
            )
        })?;
    }

    let uint = |key: &str| -> mlua::Result<Option<u32>> {
        match spec.get::<Value>(key)? {
            Value::Nil => Ok(None),
            Value::Integer(n) if n >= 0 && n <= u32::MAX as i64 => Ok(Some(n as u32)),
            other => Err(misuse(
                lua,
                format!(
                    "`{name}`: `{key}` must be a whole number, got {}",
                    describe(&other)
                ),
            )),
        }
    };
    let mut options = LoadOptions::default();
    if let Some(v) = uint("context")? {
        options.context = v;
    }
    if let Some(v) = uint("slots")? {
        options.slots = v.max(1);
    }
    if let Some(v) = uint("batch")? {
        options.batch = v;
    }
    if let Some(v) = uint("threads")? {
        options.threads = Some(v.max(1) as i32);
    }
    if let Some(v) = uint("gpu_layers")? {
        options.gpu_layers = v;
    }
    if let Some(v) = spec.get::<Option<String>>("kv_cache")? {
        options.kv_cache = crate::engine::KvCache::parse(&v).ok_or_else(|| {
            misuse(
                lua,
                format!("`{name}`: `kv_cache` is `{v}`: write \"f16\" (the default) or \"q8_0\" (about half the memory)"),
            )
        })?;
    }
    options.embeddings = spec.get::<Option<bool>>("embeddings")?.unwrap_or(false);
    options.snapshots = prompt_cache(lua, &name, spec.get("prompt_cache")?)?;
    let sampling = sampling::from_value(lua, &SamplingParams::default(), &spec.get("sampling")?)?;
    let max_tokens = uint("max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
    let system = match spec.get::<Value>("system")? {
        Value::Nil => None,
        Value::String(s) => Some(s.to_str()?.to_string()),
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `system` must be a string, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let pinned = spec.get::<Option<bool>>("pinned")?.unwrap_or(false);
    options.chat_template = match spec.get::<Value>("template")? {
        Value::Nil => None,
        Value::String(s) => {
            let text =
                chat_template(&name, s.to_str()?.as_ref(), &c.dir).map_err(|e| misuse(lua, e))?;
            Some(text)
        }
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `template` must be Jinja text or `\"file:path.jinja\"`, got {}",
                    describe(&other)
                ),
            ));
        }
    };

    if let Some(path) = &path
        && let Ok(fp) = crate::stage::estimate(path, &options)
        && fp.total() > band.key.budget
    {
        return Err(misuse(
            lua,
            format!(
                "`{name}` needs about {} (weights {} + KV cache {} + compute {}) but the band's memory is {}: raise `memory`, lower `context` or `slots`, or pick a smaller quantisation",
                human_bytes(fp.total()),
                human_bytes(fp.weights),
                human_bytes(fp.kv),
                human_bytes(fp.compute),
                human_bytes(band.key.budget)
            ),
        ));
    }

    if let Some(path) = &path {
        // A change to a model already on the stage waits until the score is accepted.
        c.register(
            &band.stage,
            ModelSpec::new(name.clone(), path.clone())
                .with_options(options.clone())
                .pinned(pinned),
        );
    }
    // `--model-file` turns a remote instrument into a local one.
    let remote = match (&url, &path) {
        (Some(url), None) => Some(remote_model(lua, &name, url, &reference, &spec)?),
        _ => None,
    };
    let path = path.unwrap_or_default();
    let member = Arc::new(Member {
        name,
        section,
        reference,
        path,
        options,
        sampling,
        max_tokens,
        system,
        pinned,
        stage: band.stage.clone(),
        events: c.options.events.clone(),
        check_only: c.options.check_only,
        remote,
    });
    let ud = lua.create_userdata(Instrument(member.clone()))?;
    band.state
        .lock()
        .unwrap()
        .members
        .push((member, ud.clone()));
    Ok(ud)
}

/// The client of a remote instrument: `url`, `model`, `api_key_env`, `timeout`,
/// `connect_timeout`, `retries`.
fn remote_model(
    lua: &Lua,
    name: &str,
    url: &str,
    model: &str,
    spec: &Table,
) -> mlua::Result<crate::remote::RemoteModel> {
    let c = ctx(lua);
    let mut remote = crate::remote::RemoteSpec::new(name, url, model);
    let duration = |key: &str| -> mlua::Result<Option<std::time::Duration>> {
        match spec.get::<Value>(key)? {
            Value::Nil => Ok(None),
            Value::Integer(n) if n > 0 => Ok(Some(std::time::Duration::from_secs(n as u64))),
            Value::Number(n) if n > 0.0 => Ok(Some(std::time::Duration::from_secs_f64(n))),
            Value::String(s) => match parse_duration(&s.to_str()?) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => Err(misuse(
                    lua,
                    format!(
                        "`{name}`: `{key}` must be a duration like \"30s\" or \"500ms\", got {:?}",
                        s.to_string_lossy()
                    ),
                )),
            },
            other => Err(misuse(
                lua,
                format!(
                    "`{name}`: `{key}` must be a duration like \"30s\", got {}",
                    describe(&other)
                ),
            )),
        }
    };
    if let Some(d) = duration("timeout")? {
        remote.timeout = d;
    }
    if let Some(d) = duration("connect_timeout")? {
        remote.connect_timeout = d;
    }
    match spec.get::<Value>("retries")? {
        Value::Nil => {}
        Value::Integer(n) if (0..=10).contains(&n) => remote.retries = n as u32,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `retries` must be a whole number from 0 to 10, got {}",
                    describe(&other)
                ),
            ));
        }
    }
    match spec.get::<Value>("api_key_env")? {
        Value::Nil => {}
        Value::String(var) => {
            let var = var.to_str()?.to_string();
            match std::env::var(&var) {
                Ok(key) if !key.is_empty() => remote.api_key = Some(key),
                // The server may not need it; if it does, its 401 says so at play time.
                _ => {
                    let note = format!(
                        "`{name}`: `api_key_env` names `{var}`, which is not set: requests go without a key (export {var}=...)"
                    );
                    if !c.options.check_only {
                        tracing::warn!("{note}");
                    }
                    c.warn(note);
                }
            }
        }
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `api_key_env` must name an environment variable (the key never goes into the score), got {}",
                    describe(&other)
                ),
            ));
        }
    }
    crate::remote::RemoteModel::new(remote, c.options.events.clone(), c.options.metrics.clone())
        .map_err(|e| misuse(lua, format!("`{name}`: {e}")))
}

/// A member's `template`: Jinja text, `file:PATH`, or the path of an existing file
/// (relative to the score's folder). Compiled here so a broken template fails the
/// score's load, not its first request.
fn chat_template(name: &str, value: &str, dir: &std::path::Path) -> Result<String, String> {
    let file = match value.strip_prefix("file:") {
        Some(p) => Some(dir.join(p.trim())),
        None if !value.contains('{') && !value.contains('\n') && dir.join(value).is_file() => {
            Some(dir.join(value))
        }
        None => None,
    };
    let text = match file {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "`{name}`: `template` file `{}` cannot be read: {e}",
                path.display()
            )
        })?,
        None => value.to_owned(),
    };
    crate::engine::ChatTemplate::new(name, &text, "", "")
        .map_err(|e| format!("`{name}`: `template` does not compile: {e}"))?;
    Ok(text)
}

fn is_hub_reference(r: &str) -> bool {
    crate::hub::ModelRef::parse(r).is_ok_and(|m| m.is_hub())
}

/// Whether an instrument plays: the one rule behind `band:lead`, `band:players`,
/// `band:reviewer`, `model.plays` and every arrangement. Embedding models and the
/// instruments of an offstage section (`orchestra.offstage`, by default `routing`)
/// route requests; they never lead, comp, solo or review.
pub(crate) fn plays(lua: &Lua, m: &Member) -> bool {
    if m.options.embeddings {
        return false;
    }
    let offstage = lua
        .named_registry_value::<Table>(OFFSTAGE)
        .and_then(|t| t.get::<Value>(m.section.as_str()));
    !matches!(offstage, Ok(v) if !matches!(v, Value::Nil | Value::Boolean(false)))
}

/// What an `except` leaves out: instruments (a model or its name) and whole sections
/// (a section's name), from one value or a list of them.
#[derive(Default)]
struct Except(Vec<String>);

impl Except {
    fn parse(lua: &Lua, v: &Value) -> mlua::Result<Except> {
        let one = |x: &Value| name_of(lua, "each entry of `except`", x);
        match v {
            Value::Nil => Ok(Except::default()),
            Value::Table(t) => t
                .sequence_values::<Value>()
                .map(|x| one(&x?))
                .collect::<mlua::Result<_>>()
                .map(Except),
            other => Ok(Except(vec![one(other)?])),
        }
    }

    fn add(&mut self, more: Except) {
        self.0.extend(more.0);
    }

    fn leaves_out(&self, m: &Member) -> bool {
        self.0.iter().any(|n| *n == m.name || *n == m.section)
    }
}

/// `{ except = ..., ["not"] = ... }` of `band:players`/`band:reviewer`: `not` is the old
/// spelling of `except` (a Lua keyword, so it needed brackets).
fn except_of(lua: &Lua, o: &Table, method: &str) -> mlua::Result<Except> {
    let mut except = Except::parse(lua, &o.get("except")?)?;
    let not: Value = o.get("not")?;
    if !not.is_nil() {
        deprecated(
            lua,
            &format!("`{method} {{ [\"not\"] = ... }}`"),
            &format!("write `{method} {{ except = ... }}`"),
        );
        except.add(Except::parse(lua, &not)?);
    }
    Ok(except)
}

fn list(lua: &Lua, items: Vec<AnyUserData>) -> mlua::Result<Table> {
    lua.create_sequence_from(items)
}

/// `band:together{ f1, f2, ... }` and `orchestra.together`: runs the functions as
/// concurrent coroutines; returns their first results (same keys as the input) and,
/// when some returned `nil, err`, a table of those errors. The first function that
/// raises cancels the others and the error is raised.
pub(crate) async fn together(lua: Lua, fns: Value) -> mlua::Result<(Table, Value)> {
    let Value::Table(fns) = fns else {
        return Err(misuse(
            &lua,
            format!(
                "`together` needs a table of functions `{{ function() ... end, ... }}`, got {}",
                describe(&fns)
            ),
        ));
    };
    let mut keys = Vec::new();
    let mut calls = Vec::new();
    for pair in fns.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::Function(f) = v else {
            return Err(misuse(
                &lua,
                format!(
                    "`together`: entry {} must be a function, got {}",
                    describe(&k),
                    describe(&v)
                ),
            ));
        };
        calls.push(call_part(f, k.clone()));
        keys.push(k);
    }
    let results = futures::future::try_join_all(calls).await?;
    let out = lua.create_table()?;
    let errors = lua.create_table()?;
    let mut any_error = false;
    for (k, values) in keys.into_iter().zip(results) {
        let mut it = values.into_iter();
        let first = it.next().unwrap_or(Value::Nil);
        if first.is_nil() {
            let second = it.next().unwrap_or(Value::Nil);
            if !second.is_nil() {
                errors.set(k.clone(), second)?;
                any_error = true;
            }
        }
        out.set(k, first)?;
    }
    Ok((
        out,
        if any_error {
            Value::Table(errors)
        } else {
            Value::Nil
        },
    ))
}

async fn call_part(f: Function, key: Value) -> mlua::Result<MultiValue> {
    f.call_async::<MultiValue>(())
        .await
        .map_err(|e| e.context(format!("`together` part {}", describe(&key))))
}

impl UserData for Band {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("stage", |_, b| Ok(StageHandle(b.stage.clone())));
        fields.add_field_method_get("budget", |_, b| Ok(b.key.budget));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("add", |lua, b, (name, spec): (Value, Value)| {
            add(lua, b, name, spec)
        });

        // The lead of a section: its first instrument that plays.
        methods.add_method("lead", |lua, b, section: Value| {
            let section = b.section_name(lua, "band:lead", &section)?;
            let members = b.member_values();
            if let Some((_, ud)) = members
                .iter()
                .find(|(m, _)| m.section == section && plays(lua, m))
            {
                return Ok(ud.clone());
            }
            let why = if members.iter().any(|(m, _)| m.section == section) {
                format!("the instruments of section `{section}` only route (embedding models, or an offstage section): they never lead; add a player with `band:add(name, {{ section = \"{section}\", ... }})`")
            } else {
                format!("no instrument plays in section `{section}`; add one with `band:add(name, {{ section = \"{section}\", ... }})` or check with `band:has(\"{section}\")`")
            };
            Err(misuse(lua, format!("`band:lead`: {why}")))
        });

        // The instruments that play, in band order: `band:players { section = "code",
        // except = { soloist, "review" } }` (models, names or whole sections left out).
        methods.add_method("players", |lua, b, opts: Value| {
            let (section, except) = match &opts {
                Value::Nil => (None, Except::default()),
                Value::Table(o) => {
                    check_keys(lua, o, "`band:players`", &["section", "except", "not"])?;
                    let section = match o.get::<Value>("section")? {
                        Value::Nil => None,
                        v => Some(b.section_name(lua, "band:players", &v)?),
                    };
                    (section, except_of(lua, o, "band:players")?)
                }
                other => {
                    return Err(misuse(
                        lua,
                        format!(
                            "`band:players` takes options `{{ section = \"code\", except = ... }}`, got {}",
                            describe(other)
                        ),
                    ));
                }
            };
            let items = b
                .member_values()
                .into_iter()
                .filter(|(m, _)| {
                    section.as_ref().is_none_or(|s| m.section == *s)
                        && !except.leaves_out(m)
                        && plays(lua, m)
                })
                .map(|(_, ud)| ud)
                .collect();
            list(lua, items)
        });

        // The instruments of a section, in the order they were added.
        methods.add_method("section", |lua, b, section: Value| {
            let section = b.section_name(lua, "band:section", &section)?;
            let items = b
                .member_values()
                .into_iter()
                .filter(|(m, _)| m.section == section)
                .map(|(_, ud)| ud)
                .collect();
            list(lua, items)
        });

        methods.add_method("sections", |lua, b, ()| {
            lua.create_sequence_from(b.sections.iter().cloned())
        });

        // Whether a section has an instrument, or an instrument of that name exists.
        methods.add_method("has", |_, b, what: String| {
            Ok(b.members()
                .iter()
                .any(|m| m.section == what || m.name == what))
        });

        methods.add_method("members", |lua, b, ()| {
            list(
                lua,
                b.member_values().into_iter().map(|(_, ud)| ud).collect(),
            )
        });

        // Every member but the given ones (models, names or whole sections).
        methods.add_method("others", |lua, b, except: Value| {
            let except = Except::parse(lua, &except)?;
            let items = b
                .member_values()
                .into_iter()
                .filter(|(m, _)| !except.leaves_out(m))
                .map(|(_, ud)| ud)
                .collect();
            list(lua, items)
        });

        // A reviewer: the first instrument of the `review` section (or `section = ...`)
        // that plays and is not left out, else any other instrument that plays; nil
        // when nobody is left. `band:reviewer(author)` leaves the author out.
        methods.add_method("reviewer", |lua, b, opts: Value| {
            let mut section = "review".to_string();
            let except = match &opts {
                Value::Table(o)
                    if ["except", "not", "section"]
                        .iter()
                        .any(|k| o.contains_key(*k).unwrap_or(false))
                        || (o.raw_len() == 0 && !o.is_empty()) =>
                {
                    check_keys(lua, o, "`band:reviewer`", &["except", "not", "section"])?;
                    let v: Value = o.get("section")?;
                    if !v.is_nil() {
                        section = b.section_name(lua, "band:reviewer", &v)?;
                    }
                    except_of(lua, o, "band:reviewer")?
                }
                other => Except::parse(lua, other)?,
            };
            let members = b.member_values();
            let eligible = |m: &Member| !except.leaves_out(m) && plays(lua, m);
            let pick = members
                .iter()
                .find(|(m, _)| m.section == section && eligible(m))
                .or_else(|| members.iter().find(|(m, _)| eligible(m)))
                .map(|(_, ud)| ud.clone());
            Ok(pick)
        });

        methods.add_async_method("together", |lua, _b, fns: Value| together(lua, fns));

        methods.add_method("info", |lua, b, ()| {
            let t = lua.create_table()?;
            t.set("memory", human_bytes(b.key.budget))?;
            t.set("budget", b.key.budget)?;
            t.set(
                "sections",
                lua.create_sequence_from(b.sections.iter().cloned())?,
            )?;
            let members = lua.create_table()?;
            for m in b.members() {
                let mt = lua.create_table()?;
                mt.set("name", m.name.as_str())?;
                mt.set("section", m.section.as_str())?;
                mt.set("model", m.reference.as_str())?;
                mt.set("loaded", !m.check_only && b.stage.is_resident(&m.name))?;
                members.raw_push(mt)?;
            }
            t.set("members", members)?;
            Ok(t)
        });

        methods.add_meta_method(MetaMethod::ToString, |_, b, ()| {
            let members: Vec<String> = b
                .members()
                .iter()
                .map(|m| format!("{} ({})", m.name, m.section))
                .collect();
            Ok(format!(
                "Band({} of memory; {})",
                human_bytes(b.key.budget),
                if members.is_empty() {
                    "no instruments yet".to_string()
                } else {
                    members.join(", ")
                }
            ))
        });

        methods.add_meta_method(MetaMethod::Len, |_, b, ()| Ok(b.members().len()));

        // `band.coltrane`, then extension methods (`function orchestra.Band:jam(...)`).
        methods.add_meta_method(MetaMethod::Index, |lua, b, key: Value| {
            if let Value::String(s) = &key {
                let s = s.to_str()?;
                if let Some((_, ud)) = b.member_values().into_iter().find(|(m, _)| m.name == *s) {
                    return Ok(Value::UserData(ud));
                }
            }
            let class: Table = lua.named_registry_value(CLASS)?;
            let v: Value = class.raw_get(key.clone())?;
            if !v.is_nil() {
                return Ok(v);
            }
            let names: Vec<String> = b.members().iter().map(|m| format!("`{}`", m.name)).collect();
            Err(misuse(
                lua,
                format!(
                    "the band has no instrument or method {} (instruments: {}; use `band:has(name)` to ask)",
                    describe(&key),
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ),
            ))
        });
    }
}

/// The file of a `--model-file NAME=PATH` override: relative to the current folder
/// (where the user typed it), not the score's.
fn resolve_override(name: &str, file: &std::path::Path) -> Result<PathBuf, ScoreError> {
    let full = if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(file))
            .unwrap_or_else(|_| file.to_path_buf())
    };
    if full.is_file() {
        Ok(full)
    } else {
        Err(ScoreError::Model(format!(
            "the override file for `{name}` does not exist: `{}` (from `--model-file {name}=...`)",
            full.display()
        )))
    }
}

/// A member's `prompt_cache`: `false` turns prefix snapshots off; a table sets
/// `min_tokens` (prompts shorter than this are never snapshotted), `ram` (host memory
/// kept for this model's snapshots) and `disk` (the size limit of the snapshot folder),
/// sizes as numbers of bytes or strings like "512MiB". Unset: the defaults.
fn prompt_cache(lua: &Lua, name: &str, value: Value) -> mlua::Result<SnapshotOptions> {
    let mut options = SnapshotOptions::default();
    let table = match value {
        Value::Nil | Value::Boolean(true) => return Ok(options),
        Value::Boolean(false) => return Ok(SnapshotOptions::off()),
        Value::Table(t) => t,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `prompt_cache` must be false or a table like {{ min_tokens = 2048, ram = \"512MiB\", disk = \"8GiB\" }}, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    check_keys(
        lua,
        &table,
        &format!("`{name}`'s `prompt_cache`"),
        &["min_tokens", "ram", "disk"],
    )?;
    let size = |key: &str| -> mlua::Result<Option<u64>> {
        match table.get::<Value>(key)? {
            Value::Nil => Ok(None),
            Value::Integer(n) if n >= 0 => Ok(Some(n as u64)),
            Value::String(s) => parse_bytes(&s.to_str()?).map(Some).ok_or_else(|| {
                misuse(
                    lua,
                    format!(
                        "`{name}`: `prompt_cache.{key}` must be a size like \"512MiB\", got {:?}",
                        s.to_string_lossy()
                    ),
                )
            }),
            other => Err(misuse(
                lua,
                format!(
                    "`{name}`: `prompt_cache.{key}` must be a size like \"512MiB\", got {}",
                    describe(&other)
                ),
            )),
        }
    };
    match table.get::<Value>("min_tokens")? {
        Value::Nil => {}
        Value::Integer(n) if n >= 0 && n <= u32::MAX as i64 => options.min_tokens = n as u32,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{name}`: `prompt_cache.min_tokens` must be a whole number, got {}",
                    describe(&other)
                ),
            ));
        }
    }
    if let Some(ram) = size("ram")? {
        options.ram_bytes = ram;
    }
    if let Some(disk) = size("disk")? {
        options.disk_bytes = disk;
    }
    Ok(options)
}
