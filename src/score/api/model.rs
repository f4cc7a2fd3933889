//! `Model`: one instrument of a band as a Lua value. Every call that waits on the model
//! (`load`, `generate`, `stream`, `chat`, `tokenize`, `embed`, `info`) is async: it
//! yields the calling coroutine, so other requests and `band:together` branches play
//! meanwhile. Each call holds a stage lease for its duration, so the model is never
//! evicted under it.
//!
//! Errors follow one rule: misuse raises (wrong argument, unknown option), failures at
//! run time return `nil, err` like `io.open`.
//!
//! ```lua
//! local text, details = band.coltrane:generate("reverse a string in Rust", { max_tokens = 64 })
//! band.ella:stream("a haiku", function(piece) io.write(piece) end)
//! local answer = band.monk:chat({ { role = "user", content = "why?" } }, { temperature = 0 })
//! local vectors = band.embedder:embed({ "first", "second" })
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use mlua::{
    AnyUserData, Function, Lua, LuaSerdeExt, MetaMethod, Table, UserData, UserDataFields,
    UserDataMethods, Value,
};
use serde::Serialize;

use crate::engine::{
    ChatMessage, Completion, EngineError, GenerateRequest, LoadOptions, Prompt, SamplingParams,
    StreamItem, Tool, ToolCall, ToolChoice,
};
use crate::events::{EventBus, EventKind};
use crate::stage::Stage;

use super::sampling;
use crate::score::context::{add_usage, echo};
use crate::score::request::TextSink;
use crate::score::util::{check_keys, describe, misuse};

/// An instrument: what `band:add` declared.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) section: String,
    /// The model reference as written in the score.
    pub(crate) reference: String,
    pub(crate) path: PathBuf,
    pub(crate) options: LoadOptions,
    /// Default sampling of this instrument.
    pub(crate) sampling: SamplingParams,
    pub(crate) max_tokens: u32,
    /// Default system prompt for chat-style calls.
    pub(crate) system: Option<String>,
    pub(crate) pinned: bool,
    pub(crate) stage: Stage,
    pub(crate) events: EventBus,
    /// `orchestra check`: never load or play.
    pub(crate) check_only: bool,
    /// Set when the instrument plays on another server (`url = ...`): it is never on
    /// the stage and generates through this client instead of a lease.
    pub(crate) remote: Option<crate::remote::RemoteModel>,
}

impl Member {
    /// Refuses calls a remote instrument cannot answer (`tokenize`, `embed`, ...).
    fn local_only(&self, method: &str) -> Result<(), String> {
        match &self.remote {
            Some(r) => Err(format!(
                "`{}` plays at `{}`: `{method}` works on models on this machine only",
                self.name,
                r.spec().url
            )),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("section", &self.section)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The `Model` userdata.
#[derive(Debug, Clone)]
pub(crate) struct Instrument(pub(crate) Arc<Member>);

/// Registry name of the Lua table holding extension methods (`orchestra.Model`).
pub(crate) const CLASS: &str = "orchestra.Model";

/// Method and field names, for REPL completion.
pub(crate) const NAMES: &[&str] = &[
    "name",
    "section",
    "model",
    "path",
    "embeddings",
    "plays",
    "load",
    "unload",
    "info",
    "generate",
    "stream",
    "chat",
    "tokenize",
    "detokenize",
    "embed",
    "sampling",
    "remote",
];

/// Options of `generate`, `stream` and `chat` (plus every sampling field).
const OPTIONS: &[&str] = &[
    "max_tokens",
    "stop",
    "system",
    "sampling",
    "on_token",
    "raw",
    "ignore_eos",
    "tools",
    "tool_choice",
];

/// Serialize without turning `None` into `lua.null()`.
pub(crate) fn to_lua<T: Serialize>(lua: &Lua, v: &T) -> mlua::Result<Value> {
    lua.to_value_with(
        v,
        mlua::serde::SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false),
    )
}

fn failure(lua: &Lua, err: impl std::fmt::Display) -> mlua::Result<(Value, Value)> {
    Ok((
        Value::Nil,
        Value::String(lua.create_string(err.to_string())?),
    ))
}

/// `(nil, err)` for an engine error of instrument `name`; a refusal the client can fix
/// (a prompt over the context) is also recorded for the request, so the request fails
/// with that type if the score passes the error on.
fn refused(lua: &Lua, name: &str, e: &EngineError) -> mlua::Result<(Value, Value)> {
    let message = format!("`{name}`: {e}");
    if let Some(kind) = super::super::error::Refusal::of(e) {
        super::super::context::add_refusal(kind, &message);
    }
    failure(lua, message)
}

fn not_while_checking(lua: &Lua, m: &Member, method: &str) -> mlua::Error {
    misuse(
        lua,
        format!(
            "`{}:{method}` cannot play while the score is being checked (`orchestra check` never runs models): move model calls into `perform`",
            m.name
        ),
    )
}

/// A generation ready to start.
struct Prepared {
    request: GenerateRequest,
    on_token: Option<Function>,
    echo: Option<TextSink>,
}

fn string_of(lua: &Lua, what: &str, v: &Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(misuse(
            lua,
            format!("{what} must be a string, got {}", describe(other)),
        )),
    }
}

fn messages_from(lua: &Lua, method: &str, t: &Table) -> mlua::Result<Vec<ChatMessage>> {
    let mut out = Vec::new();
    for (i, v) in t.sequence_values::<Value>().enumerate() {
        let Value::Table(m) = v? else {
            return Err(misuse(
                lua,
                format!(
                    "`{method}`: message {} must be a table `{{ role = ..., content = ... }}`",
                    i + 1
                ),
            ));
        };
        let role = string_of(
            lua,
            &format!("`{method}`: message {} `role`", i + 1),
            &m.get("role")?,
        )?;
        let tool_calls = tool_calls_from(lua, method, i + 1, &m.get("tool_calls")?)?;
        let content = match m.get::<Value>("content")? {
            // An assistant message that only calls tools may have no text.
            Value::Nil if !tool_calls.is_empty() => String::new(),
            v => string_of(lua, &format!("`{method}`: message {} `content`", i + 1), &v)?,
        };
        let optional = |key: &str| -> mlua::Result<Option<String>> {
            match m.get::<Value>(key)? {
                Value::Nil => Ok(None),
                v => {
                    string_of(lua, &format!("`{method}`: message {} `{key}`", i + 1), &v).map(Some)
                }
            }
        };
        out.push(ChatMessage {
            tool_calls,
            tool_call_id: optional("tool_call_id")?,
            name: optional("name")?,
            ..ChatMessage::new(role, content)
        });
    }
    if out.is_empty() {
        return Err(misuse(
            lua,
            format!("`{method}` needs at least one message"),
        ));
    }
    Ok(out)
}

/// A Lua value as JSON (empty tables become objects).
fn json_of(lua: &Lua, v: &Value) -> mlua::Result<serde_json::Value> {
    lua.from_value(v.clone())
}

/// A message's `tool_calls`: `{ { id = ..., name = ..., arguments = "{...}" or {...} } }`,
/// or OpenAI's `{ id, type = "function", ["function"] = { name, arguments } }`.
fn tool_calls_from(
    lua: &Lua,
    method: &str,
    index: usize,
    v: &Value,
) -> mlua::Result<Vec<ToolCall>> {
    let json = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(_) => json_of(lua, v)?,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{method}`: message {index} `tool_calls` must be a list of `{{ id = ..., name = ..., arguments = ... }}`, got {}",
                    describe(other)
                ),
            ));
        }
    };
    let items = match json {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(o) if o.is_empty() => Vec::new(),
        _ => {
            return Err(misuse(
                lua,
                format!("`{method}`: message {index} `tool_calls` must be a list"),
            ));
        }
    };
    let mut calls = Vec::new();
    for item in items {
        let f = item.get("function").unwrap_or(&item);
        let Some(name) = f.get("name").and_then(|n| n.as_str()) else {
            return Err(misuse(
                lua,
                format!("`{method}`: message {index}: each tool call needs a `name`"),
            ));
        };
        let arguments = match f.get("arguments") {
            None | Some(serde_json::Value::Null) => "{}".to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        calls.push(ToolCall {
            id: item
                .get("id")
                .and_then(|i| i.as_str())
                .map(str::to_owned)
                .unwrap_or_else(crate::engine::new_call_id),
            name: name.to_owned(),
            arguments,
        });
    }
    Ok(calls)
}

/// `tools = { { name = ..., description = ..., parameters = { ...json schema... } } }`
/// (or OpenAI's `{ type = "function", ["function"] = { ... } }`).
fn tools_from(lua: &Lua, method: &str, v: &Value) -> mlua::Result<Vec<Tool>> {
    let json = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(_) => json_of(lua, v)?,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "`{method}`: `tools` must be a list of `{{ name = ..., description = ..., parameters = {{...}} }}`, got {}",
                    describe(other)
                ),
            ));
        }
    };
    let items = match json {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(o) if o.is_empty() => Vec::new(),
        _ => return Err(misuse(lua, format!("`{method}`: `tools` must be a list"))),
    };
    let mut tools = Vec::new();
    for item in items {
        let f = item.get("function").cloned().unwrap_or(item);
        let mut tool: Tool = serde_json::from_value(f).map_err(|e| {
            misuse(
                lua,
                format!(
                    "`{method}`: each tool needs `name` (and `description`, `parameters`): {e}"
                ),
            )
        })?;
        // Lua cannot tell `{}` from `[]`: an empty `properties` is an object.
        if let Some(p) = tool.parameters.get_mut("properties")
            && p.as_array().is_some_and(Vec::is_empty)
        {
            *p = serde_json::json!({});
        }
        tools.push(tool);
    }
    Ok(tools)
}

/// `tool_choice = "auto" | "none" | "required" | { name = "get_weather" }`.
fn tool_choice_from(lua: &Lua, method: &str, v: &Value) -> mlua::Result<Option<ToolChoice>> {
    let bad = |got: &Value| {
        misuse(
            lua,
            format!(
                "`{method}`: `tool_choice` must be \"auto\", \"none\", \"required\" or `{{ name = \"tool\" }}`, got {}",
                describe(got)
            ),
        )
    };
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::String(s) => match s.to_str()?.as_ref() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(bad(v)),
        },
        Value::Table(t) => {
            let name = match t.get::<Value>("function")? {
                Value::Table(f) => f.get::<Value>("name")?,
                _ => t.get::<Value>("name")?,
            };
            match name {
                Value::String(n) => ToolChoice::Function(n.to_str()?.to_string()),
                _ => return Err(bad(v)),
            }
        }
        other => return Err(bad(other)),
    }))
}

/// What the first argument of `generate`/`stream`/`chat` says to send, plus limits a
/// request table carries (`req.max_tokens`, `req.temperature`).
fn prompt_from(
    lua: &Lua,
    method: &str,
    v: &Value,
    raw: bool,
) -> mlua::Result<(Prompt, Option<u32>, Option<f64>)> {
    match v {
        Value::String(s) => {
            let s = s.to_str()?.to_string();
            Ok((
                if raw {
                    Prompt::Raw(s)
                } else {
                    Prompt::Chat(vec![ChatMessage::user(s)])
                },
                None,
                None,
            ))
        }
        Value::Table(t) => {
            let max_tokens: Option<u32> = t.get("max_tokens").ok().flatten();
            let temperature: Option<f64> = t.get("temperature").ok().flatten();
            if let Value::Table(msgs) = t.get::<Value>("messages")? {
                return Ok((
                    Prompt::Chat(messages_from(lua, method, &msgs)?),
                    max_tokens,
                    temperature,
                ));
            }
            if let Value::String(r) = t.get::<Value>("raw")? {
                return Ok((
                    Prompt::Raw(r.to_str()?.to_string()),
                    max_tokens,
                    temperature,
                ));
            }
            if t.raw_len() > 0 {
                return Ok((Prompt::Chat(messages_from(lua, method, t)?), None, None));
            }
            if let Value::String(p) = t.get::<Value>("prompt")? {
                let p = p.to_str()?.to_string();
                return Ok((
                    Prompt::Chat(vec![ChatMessage::user(p)]),
                    max_tokens,
                    temperature,
                ));
            }
            Err(misuse(
                lua,
                format!(
                    "`{method}` needs a prompt: a string, a list of messages, or a table with `messages`, `prompt` or `raw`"
                ),
            ))
        }
        other => Err(misuse(
            lua,
            format!(
                "`{method}` needs a prompt (a string or a list of messages), got {}",
                describe(other)
            ),
        )),
    }
}

/// Builds the engine request from a call's arguments; raises on misuse.
fn prepare(
    lua: &Lua,
    m: &Member,
    method: &str,
    prompt: &Value,
    opts: Option<&Table>,
    callback: Option<Function>,
) -> mlua::Result<Prepared> {
    if m.check_only {
        return Err(not_while_checking(lua, m, method));
    }
    let mut sampling = m.sampling.clone();
    let mut max_tokens = m.max_tokens;
    let mut system = m.system.clone();
    let mut stop = Vec::new();
    let mut on_token = callback;
    let mut raw = false;
    let mut ignore_eos = false;
    let mut explicit_max = false;
    let mut explicit_temperature = false;
    if let Some(o) = opts {
        let known: Vec<&str> = OPTIONS.iter().chain(sampling::FIELDS).copied().collect();
        check_keys(lua, o, &format!("`{method}` options"), &known)?;
        sampling = sampling::from_value(lua, &sampling, &o.get::<Value>("sampling")?)?;
        for key in sampling::FIELDS {
            let v: Value = o.get(*key)?;
            if !v.is_nil() {
                sampling::set_field(lua, &mut sampling, key, &v)?;
                explicit_temperature |= *key == "temperature" || *key == "greedy";
            }
        }
        match o.get::<Value>("max_tokens")? {
            Value::Nil => {}
            Value::Integer(n) if n > 0 => {
                max_tokens = n as u32;
                explicit_max = true;
            }
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "`max_tokens` must be a positive integer, got {}",
                        describe(&other)
                    ),
                ));
            }
        }
        match o.get::<Value>("stop")? {
            Value::Nil => {}
            Value::String(s) => stop.push(s.to_str()?.to_string()),
            Value::Table(t) => {
                for s in t.sequence_values::<Value>() {
                    stop.push(string_of(lua, "each `stop` entry", &s?)?);
                }
            }
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "`stop` must be a string or a list of strings, got {}",
                        describe(&other)
                    ),
                ));
            }
        }
        match o.get::<Value>("system")? {
            Value::Nil => {}
            Value::Boolean(false) => system = None,
            Value::String(s) => system = Some(s.to_str()?.to_string()),
            other => {
                return Err(misuse(
                    lua,
                    format!(
                        "`system` must be a string or false, got {}",
                        describe(&other)
                    ),
                ));
            }
        }
        match o.get::<Value>("on_token")? {
            Value::Nil => {}
            Value::Function(f) => on_token = Some(f),
            other => {
                return Err(misuse(
                    lua,
                    format!("`on_token` must be a function, got {}", describe(&other)),
                ));
            }
        }
        raw = o.get::<Option<bool>>("raw")?.unwrap_or(false);
        ignore_eos = o.get::<Option<bool>>("ignore_eos")?.unwrap_or(false);
    }
    // Tools ride on a prompt table (`chat{ messages = ..., tools = ... }`, or
    // `arrange.solo`'s) and may be overridden in the options.
    let (mut tools, mut tool_choice) = (Vec::new(), ToolChoice::Auto);
    for t in [prompt.as_table(), opts].into_iter().flatten() {
        if t.raw_len() > 0 {
            continue;
        }
        let given = tools_from(lua, method, &t.get("tools")?)?;
        if !given.is_empty() {
            tools = given;
        }
        if let Some(c) = tool_choice_from(lua, method, &t.get("tool_choice")?)? {
            tool_choice = c;
        }
    }
    let (mut prompt, req_max, req_temperature) = prompt_from(lua, method, prompt, raw)?;
    if !explicit_max && let Some(n) = req_max {
        max_tokens = n.max(1);
    }
    if !explicit_temperature && let Some(t) = req_temperature {
        sampling.temperature = t as f32;
    }
    if let (Prompt::Chat(msgs), Some(sys)) = (&mut prompt, system)
        && msgs.first().is_none_or(|first| first.role != "system")
    {
        msgs.insert(0, ChatMessage::system(sys));
    }
    let request = match prompt {
        Prompt::Chat(msgs) => GenerateRequest::chat(msgs),
        Prompt::Raw(s) => GenerateRequest::raw(s),
    }
    .with_sampling(sampling)
    .with_max_tokens(max_tokens)
    .with_stop(stop)
    .with_ignore_eos(ignore_eos)
    .with_tools(tools, tool_choice);
    Ok(Prepared {
        request,
        on_token,
        echo: echo(),
    })
}

#[derive(Serialize)]
struct Details<'a> {
    model: &'a str,
    finish_reason: &'a str,
    prompt_tokens: Option<usize>,
    /// Where the prompt tokens came from (slot, ram, disk, computed).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_sources: Option<crate::engine::PromptSources>,
    completion_tokens: usize,
    timings: Option<&'a crate::engine::Timings>,
    /// Calls the model made (`finish_reason = "tool_calls"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<LuaToolCall<'a>>,
    /// The server's URL, for a remote instrument.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<&'a str>,
}

/// A tool call as Lua sees it: `arguments` as JSON text, `args` as a table.
#[derive(Serialize)]
struct LuaToolCall<'a> {
    id: &'a str,
    name: &'a str,
    arguments: &'a str,
    args: serde_json::Value,
}

/// Runs a prepared generation; `(text, details)` or `(nil, err)`.
async fn play(lua: Lua, m: Arc<Member>, p: Prepared) -> mlua::Result<(Value, Value)> {
    // A remote instrument needs no lease: nothing of it lives on the stage.
    let (lease, started) = match &m.remote {
        Some(r) => (None, r.generate(p.request)),
        None => match m.stage.acquire(&m.name).await {
            Ok(l) => {
                let g = l.generate(p.request);
                (Some(l), g)
            }
            Err(e) => return failure(&lua, e),
        },
    };
    let mut generation = match started {
        Ok(g) => g,
        Err(EngineError::Remote { reason, .. }) => {
            return failure(&lua, format!("`{}`: {reason}", m.name));
        }
        Err(e) => return refused(&lua, &m.name, &e),
    };
    let id = generation.id();
    m.events.emit(EventKind::GenerationStarted {
        model: m.name.clone(),
        request: id,
    });
    let mut text = String::new();
    let mut pieces = 0usize;
    let finished = |tokens: usize, tok_s: f64| {
        m.events.emit(EventKind::GenerationFinished {
            model: m.name.clone(),
            request: id,
            tokens,
            tok_s,
        })
    };
    let completion: Option<Completion> = loop {
        match generation.next().await {
            Some(StreamItem::Text(t)) => {
                pieces += 1;
                if let Some(echo) = &p.echo {
                    let _ = echo.send(t.clone());
                }
                text.push_str(&t);
                if let Some(cb) = &p.on_token {
                    let keep: Value = match cb.call_async(t).await {
                        Ok(v) => v,
                        Err(e) => {
                            finished(pieces, 0.0);
                            return Err(e);
                        }
                    };
                    if keep == Value::Boolean(false) {
                        break None;
                    }
                }
            }
            Some(StreamItem::Done(c)) => break Some(c),
            Some(StreamItem::Failed(e)) => {
                finished(pieces, 0.0);
                return match e {
                    EngineError::Remote { reason, .. } => {
                        failure(&lua, format!("`{}` (remote): {reason}", m.name))
                    }
                    e => refused(&lua, &m.name, &e),
                };
            }
            None => {
                finished(pieces, 0.0);
                return failure(&lua, format!("`{}`: the model stopped", m.name));
            }
        }
    };
    // Dropping the generation cancels it when the callback stopped early.
    drop(generation);
    drop(lease);
    let details = match &completion {
        Some(c) => {
            finished(c.completion_tokens, c.timings.decode_tok_s);
            add_usage(c);
            Details {
                model: &m.name,
                finish_reason: match c.finish_reason {
                    crate::engine::FinishReason::Stop => "stop",
                    crate::engine::FinishReason::StopString => "stop_string",
                    crate::engine::FinishReason::Length => "length",
                    crate::engine::FinishReason::ToolCalls => "tool_calls",
                },
                prompt_tokens: Some(c.prompt_tokens),
                prompt_sources: Some(c.prompt_sources),
                completion_tokens: c.completion_tokens,
                timings: Some(&c.timings),
                tool_calls: c
                    .tool_calls
                    .iter()
                    .map(|t| LuaToolCall {
                        id: &t.id,
                        name: &t.name,
                        arguments: &t.arguments,
                        args: serde_json::from_str(&t.arguments).unwrap_or_default(),
                    })
                    .collect(),
                remote: m.remote.as_ref().map(|r| r.spec().url.as_str()),
            }
        }
        None => {
            finished(pieces, 0.0);
            Details {
                model: &m.name,
                finish_reason: "cancelled",
                prompt_tokens: None,
                prompt_sources: None,
                completion_tokens: pieces,
                timings: None,
                tool_calls: Vec::new(),
                remote: m.remote.as_ref().map(|r| r.spec().url.as_str()),
            }
        }
    };
    let text = completion.as_ref().map(|c| c.text.clone()).unwrap_or(text);
    Ok((
        Value::String(lua.create_string(&text)?),
        to_lua(&lua, &details)?,
    ))
}

/// A model name from a `Model` value or a string.
pub(crate) fn name_of(lua: &Lua, what: &str, v: &Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::UserData(ud) => match ud.borrow::<Instrument>() {
            Ok(i) => Ok(i.0.name.clone()),
            Err(_) => Err(misuse(
                lua,
                format!("{what} must be a model or a model name"),
            )),
        },
        other => Err(misuse(
            lua,
            format!(
                "{what} must be a model or a model name, got {}",
                describe(other)
            ),
        )),
    }
}

impl UserData for Instrument {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("name", |_, i| Ok(i.0.name.clone()));
        fields.add_field_method_get("section", |_, i| Ok(i.0.section.clone()));
        fields.add_field_method_get("model", |_, i| Ok(i.0.reference.clone()));
        fields.add_field_method_get("path", |_, i| Ok(i.0.path.display().to_string()));
        fields.add_field_method_get("embeddings", |_, i| Ok(i.0.options.embeddings));
        // Whether it may lead, comp, solo or review (not a router or embedding model).
        fields.add_field_method_get("plays", |lua, i| Ok(super::band::plays(lua, &i.0)));
        fields.add_field_method_get("sampling", |_, i| {
            Ok(sampling::Sampling(i.0.sampling.clone()))
        });
        // The server's URL of a remote instrument, nil for a local one.
        fields.add_field_method_get("remote", |_, i| {
            Ok(i.0.remote.as_ref().map(|r| r.spec().url.clone()))
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // Load the model now (it loads on first use otherwise): `true` or `nil, err`.
        methods.add_async_method("load", |lua, this, ()| {
            let m = this.0.clone();
            async move {
                if m.check_only {
                    return Ok((Value::Boolean(true), Value::Nil));
                }
                // A remote instrument is "loaded" when its server answers.
                if let Some(r) = &m.remote {
                    return match r.health().await {
                        Ok(_) => Ok((Value::Boolean(true), Value::Nil)),
                        Err(e) => failure(&lua, format!("`{}`: {e}", m.name)),
                    };
                }
                match m.stage.acquire(&m.name).await {
                    Ok(_lease) => Ok((Value::Boolean(true), Value::Nil)),
                    Err(e) => failure(&lua, e),
                }
            }
        });

        // Unload now: `true` if it was loaded, `false` if not, `nil, err` while it plays.
        methods.add_method("unload", |lua, this, ()| {
            if this.0.check_only || this.0.remote.is_some() {
                return Ok((Value::Boolean(false), Value::Nil));
            }
            match this.0.stage.evict(&this.0.name) {
                Ok(was) => Ok((Value::Boolean(was), Value::Nil)),
                Err(e) => failure(lua, e),
            }
        });

        // What the model is: the loaded model's facts, or the header's estimate.
        methods.add_async_method("info", |lua, this, ()| {
            let m = this.0.clone();
            async move {
                let t = lua.create_table()?;
                t.set("name", m.name.as_str())?;
                t.set("section", m.section.as_str())?;
                t.set("model", m.reference.as_str())?;
                t.set("path", m.path.display().to_string())?;
                t.set("pinned", m.pinned)?;
                if let Some(r) = &m.remote {
                    t.set("remote", r.spec().url.as_str())?;
                    t.set("loaded", false)?;
                    t.set("footprint", 0)?;
                    if !m.check_only {
                        match r.health().await {
                            Ok(models) => {
                                t.set("reachable", true)?;
                                t.set("served", lua.create_sequence_from(models)?)?;
                            }
                            Err(e) => {
                                t.set("reachable", false)?;
                                t.set("error", e.to_string())?;
                            }
                        }
                    }
                    return Ok(t);
                }
                let resident = !m.check_only && m.stage.is_resident(&m.name);
                t.set("loaded", resident)?;
                if resident && let Ok(lease) = m.stage.acquire(&m.name).await {
                    let info = lease.info();
                    if let Value::Table(facts) = to_lua(&lua, info)? {
                        for pair in facts.pairs::<Value, Value>() {
                            let (k, v) = pair?;
                            if !t.contains_key(k.clone())? {
                                t.set(k, v)?;
                            }
                        }
                    }
                    t.set("footprint", info.footprint())?;
                    return Ok(t);
                }
                match crate::stage::estimate(&m.path, &m.options) {
                    Ok(fp) => {
                        t.set("footprint", fp.total())?;
                        t.set("weight_bytes", fp.weights)?;
                        t.set("kv_bytes", fp.kv)?;
                        t.set("compute_bytes", fp.compute)?;
                        t.set("estimated", true)?;
                    }
                    Err(e) => t.set("error", e.to_string())?,
                }
                Ok(t)
            }
        });

        // `text, details` or `nil, err`.
        methods.add_async_method(
            "generate",
            |lua, this, (prompt, opts): (Value, Option<Table>)| {
                let m = this.0.clone();
                let prepared = prepare(&lua, &m, "generate", &prompt, opts.as_ref(), None);
                async move { play(lua, m, prepared?).await }
            },
        );

        // Like `generate`, messages first.
        methods.add_async_method("chat", |lua, this, (messages, opts): (Value, Option<Table>)| {
            let m = this.0.clone();
            let prepared = match &messages {
                Value::Table(_) => prepare(&lua, &m, "chat", &messages, opts.as_ref(), None),
                other => Err(misuse(
                    &lua,
                    format!(
                        "`chat` needs a list of messages `{{ {{ role = \"user\", content = \"...\" }} }}`, got {}",
                        describe(other)
                    ),
                )),
            };
            async move { play(lua, m, prepared?).await }
        });

        // `stream(prompt, fn)`, `stream(prompt, opts, fn)` or `stream(prompt, { on_token = fn })`:
        // `fn(piece)` runs for every piece of text; returning `false` stops the generation.
        methods.add_async_method(
            "stream",
            |lua, this, (prompt, a, b): (Value, Value, Value)| {
                let m = this.0.clone();
                let prepared = (|| {
                    let (opts, cb) = match (a, b) {
                        (Value::Function(f), Value::Nil) => (None, Some(f)),
                        (Value::Table(t), Value::Function(f)) => (Some(t), Some(f)),
                        (Value::Table(t), Value::Nil) => (Some(t), None),
                        (Value::Nil, Value::Function(f)) => (None, Some(f)),
                        (a, _) => {
                            return Err(misuse(
                                &lua,
                                format!(
                                    "`stream` is called as `m:stream(prompt, fn)` or `m:stream(prompt, opts, fn)`, got {} as the second argument",
                                    describe(&a)
                                ),
                            ));
                        }
                    };
                    let p = prepare(&lua, &m, "stream", &prompt, opts.as_ref(), cb)?;
                    if p.on_token.is_none() {
                        return Err(misuse(&lua, "`stream` needs a function to call with each piece"));
                    }
                    Ok(p)
                })();
                async move { play(lua, m, prepared?).await }
            },
        );

        // Token ids of a text (`{ bos = true }` adds the begin-of-sequence token).
        methods.add_async_method(
            "tokenize",
            |lua, this, (text, opts): (Value, Option<Table>)| {
                let m = this.0.clone();
                let args = (|| {
                    if m.check_only {
                        return Err(not_while_checking(&lua, &m, "tokenize"));
                    }
                    m.local_only("tokenize").map_err(|e| misuse(&lua, e))?;
                    let text = string_of(&lua, "`tokenize` text", &text)?;
                    let bos = match &opts {
                        Some(o) => {
                            check_keys(&lua, o, "`tokenize` options", &["bos"])?;
                            o.get::<Option<bool>>("bos")?.unwrap_or(false)
                        }
                        None => false,
                    };
                    Ok((text, bos))
                })();
                async move {
                    let (text, bos) = args?;
                    match m.stage.acquire(&m.name).await {
                        Ok(lease) => {
                            let tokens = lease.tokenize(&text, bos);
                            Ok((Value::Table(lua.create_sequence_from(tokens)?), Value::Nil))
                        }
                        Err(e) => failure(&lua, e),
                    }
                }
            },
        );

        // The text of token ids.
        methods.add_async_method("detokenize", |lua, this, tokens: Value| {
            let m = this.0.clone();
            let args = (|| {
                if m.check_only {
                    return Err(not_while_checking(&lua, &m, "detokenize"));
                }
                m.local_only("detokenize").map_err(|e| misuse(&lua, e))?;
                let Value::Table(t) = &tokens else {
                    return Err(misuse(
                        &lua,
                        format!(
                            "`detokenize` needs a list of token ids, got {}",
                            describe(&tokens)
                        ),
                    ));
                };
                t.sequence_values::<i32>()
                    .collect::<mlua::Result<Vec<i32>>>()
            })();
            async move {
                let ids = args?;
                match m.stage.acquire(&m.name).await {
                    Ok(lease) => Ok((
                        Value::String(lua.create_string(lease.detokenize(&ids))?),
                        Value::Nil,
                    )),
                    Err(e) => failure(&lua, e),
                }
            }
        });

        // Pooled, normalised embeddings: one vector for a string, a list for a list.
        methods.add_async_method("embed", |lua, this, input: Value| {
            let m = this.0.clone();
            let args = (|| {
                if m.check_only {
                    return Err(not_while_checking(&lua, &m, "embed"));
                }
                m.local_only("embed").map_err(|e| misuse(&lua, e))?;
                match &input {
                    Value::String(s) => Ok((vec![s.to_str()?.to_string()], true)),
                    Value::Table(t) => {
                        let mut v = Vec::new();
                        for s in t.sequence_values::<Value>() {
                            v.push(string_of(&lua, "each text to `embed`", &s?)?);
                        }
                        Ok((v, false))
                    }
                    other => Err(misuse(
                        &lua,
                        format!(
                            "`embed` needs a string or a list of strings, got {}",
                            describe(other)
                        ),
                    )),
                }
            })();
            async move {
                let (texts, single) = args?;
                let lease = match m.stage.acquire(&m.name).await {
                    Ok(l) => l,
                    Err(e) => return failure(&lua, e),
                };
                match lease.embed(texts).await {
                    Ok(mut vectors) => {
                        if single {
                            let v = vectors.pop().unwrap_or_default();
                            Ok((Value::Table(lua.create_sequence_from(v)?), Value::Nil))
                        } else {
                            let out = lua.create_table()?;
                            for v in vectors {
                                out.raw_push(lua.create_sequence_from(v)?)?;
                            }
                            Ok((Value::Table(out), Value::Nil))
                        }
                    }
                    Err(e) => failure(&lua, format!("`{}`: {e}", m.name)),
                }
            }
        });

        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("Model({}: {})", this.0.name, this.0.section))
        });
        methods.add_meta_function(
            MetaMethod::Eq,
            |_, (a, b): (AnyUserData, AnyUserData)| match (
                a.borrow::<Instrument>(),
                b.borrow::<Instrument>(),
            ) {
                (Ok(a), Ok(b)) => {
                    Ok(Arc::ptr_eq(&a.0, &b.0) || (a.0.name == b.0.name && a.0.path == b.0.path))
                }
                _ => Ok(false),
            },
        );
        // Extension methods (`function orchestra.Model:solo(...)`), then a clear error.
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| {
            let class: Table = lua.named_registry_value(CLASS)?;
            let v: Value = class.raw_get(key.clone())?;
            if !v.is_nil() {
                return Ok(v);
            }
            Err(misuse(
                lua,
                format!(
                    "model `{}` has no field or method {} (methods: {})",
                    this.0.name,
                    describe(&key),
                    NAMES.join(", ")
                ),
            ))
        });
    }
}
