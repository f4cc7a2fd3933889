//! What `perform(request)` receives and what it gives back, as plain Rust structs
//! (Lua values never leave the conductor thread): [`Request`] in, [`Answer`] out, and
//! the streamed text through a [`TextSink`].

use std::sync::{Arc, Mutex};

use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{ChatMessage, PromptSources, Tool, ToolChoice};

/// Where streamed text goes (`req:write(text)`, echoed tokens in the REPL).
pub type TextSink = UnboundedSender<String>;

/// One request to a score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// The conversation, last message last.
    pub messages: Vec<ChatMessage>,
    /// What the client asked for: `orchestra`, a section or an instrument name.
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Whether the client reads the answer as a stream.
    pub stream: bool,
    /// The section the client asked for (`orchestra/<section>`): the router takes it
    /// instead of deciding.
    pub section: Option<String>,
    /// Functions the soloist may call (OpenAI `tools`).
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
}

/// Tokens a request cost, summed over every generation it made (comping, solo,
/// review), as OpenAI's `usage` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens reused from the models' prompt caches.
    pub cached_tokens: usize,
    /// Where the prompt tokens came from: slot caches, snapshots in RAM or on disk,
    /// computed.
    pub prompt_sources: PromptSources,
    pub completion_tokens: usize,
    /// How many generations the request made.
    pub generations: usize,
}

impl Request {
    /// One user message.
    pub fn prompt(text: impl Into<String>) -> Request {
        Request {
            messages: vec![ChatMessage::user(text)],
            ..Request::default()
        }
    }

    /// The last user message (what most routing looks at).
    pub fn last_user(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .unwrap_or("")
    }
}

/// What a score answered.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The request's id (also on its events as `request`).
    pub request_id: u64,
    /// The answer: what `perform` returned (a string, or a table's `text`), else
    /// everything it streamed with `req:write`.
    pub text: String,
    /// Whether `perform` streamed text with `req:write`.
    pub streamed: bool,
    /// A table `perform` returned, as JSON (`null` otherwise).
    pub data: serde_json::Value,
    /// The score version that answered (1 for the first load, +1 per reload).
    pub score_version: u64,
    /// Lua CPU time of the request (not counting time waiting for models).
    pub lua_cpu_ms: f64,
    /// Wall-clock time of the request.
    pub elapsed_ms: f64,
    /// Tokens of every generation the request made.
    pub usage: Usage,
}

/// The text a request streamed so far, and its sink. The sink is closed when the
/// request ends (this value is dropped), even though the Lua `write` function that
/// holds it may live on in the VM until the garbage collector runs: whoever reads the
/// stream sees its end at once.
#[derive(Debug, Default)]
pub(crate) struct Written {
    text: Arc<Mutex<Option<String>>>,
    sink: Arc<Mutex<Option<TextSink>>>,
}

impl Written {
    pub(crate) fn take(&self) -> Option<String> {
        self.text.lock().unwrap().take()
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.sink.lock().unwrap().take();
    }
}

/// Builds the Lua request table: `{ prompt, messages, model, max_tokens, temperature,
/// stream, id, tools, tool_choice }` with `req:write(text)` in its metatable.
pub(crate) fn to_lua(
    lua: &Lua,
    request: &Request,
    id: u64,
    sink: Option<TextSink>,
) -> mlua::Result<(Table, Written)> {
    let t = lua.create_table()?;
    t.set("id", id)?;
    t.set("prompt", request.last_user())?;
    let messages = lua.create_table()?;
    for (i, m) in request.messages.iter().enumerate() {
        let mt = lua.create_table()?;
        mt.set("role", m.role.as_str())?;
        mt.set("content", m.content.as_str())?;
        if !m.tool_calls.is_empty() {
            mt.set(
                "tool_calls",
                crate::score::api::model::to_lua(lua, &m.tool_calls)?,
            )?;
        }
        if let Some(id) = &m.tool_call_id {
            mt.set("tool_call_id", id.as_str())?;
        }
        if let Some(name) = &m.name {
            mt.set("name", name.as_str())?;
        }
        messages.raw_set(i + 1, mt)?;
    }
    t.set("messages", messages)?;
    // Tools are for the soloist only: `arrange.solo` passes them on, comping and
    // review never see them.
    if !request.tools.is_empty() {
        t.set(
            "tools",
            crate::score::api::model::to_lua(lua, &request.tools)?,
        )?;
        let choice = match &request.tool_choice {
            ToolChoice::Auto => Value::String(lua.create_string("auto")?),
            ToolChoice::None => Value::String(lua.create_string("none")?),
            ToolChoice::Required => Value::String(lua.create_string("required")?),
            ToolChoice::Function(name) => {
                let c = lua.create_table()?;
                c.set("name", name.as_str())?;
                Value::Table(c)
            }
        };
        t.set("tool_choice", choice)?;
    }
    if let Some(m) = &request.model {
        t.set("model", m.as_str())?;
    }
    if let Some(n) = request.max_tokens {
        t.set("max_tokens", n)?;
    }
    if let Some(x) = request.temperature {
        t.set("temperature", x)?;
    }
    t.set("stream", request.stream)?;
    if let Some(s) = &request.section {
        t.set("section", s.as_str())?;
    }

    let written = Written {
        text: Arc::default(),
        sink: Arc::new(Mutex::new(sink)),
    };
    let (text_slot, sink_slot) = (written.text.clone(), written.sink.clone());
    let write = lua.create_function(move |_, (_this, parts): (Value, MultiValue)| {
        let mut text = String::new();
        for p in parts {
            match p {
                Value::String(s) => text.push_str(&s.to_str()?),
                Value::Integer(i) => text.push_str(&i.to_string()),
                Value::Number(n) => text.push_str(&n.to_string()),
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "`req:write` takes strings, got {}",
                        other.type_name()
                    )));
                }
            }
        }
        if let Some(sink) = sink_slot.lock().unwrap().as_ref() {
            let _ = sink.send(text.clone());
        }
        text_slot
            .lock()
            .unwrap()
            .get_or_insert_with(String::new)
            .push_str(&text);
        Ok(())
    })?;
    let methods = lua.create_table()?;
    methods.set("write", write)?;
    let meta = lua.create_table()?;
    meta.set("__index", methods)?;
    t.set_metatable(Some(meta))?;
    Ok((t, written))
}

/// Turns what `perform` returned into an [`Answer`] (timings filled in by the caller).
pub(crate) fn answer_from(
    lua: &Lua,
    values: MultiValue,
    written: Option<String>,
) -> mlua::Result<Answer> {
    let first = values.into_iter().next().unwrap_or(Value::Nil);
    let streamed = written.is_some();
    let written = written.unwrap_or_default();
    let (text, data) = match first {
        Value::Nil => (written, serde_json::Value::Null),
        Value::String(s) => (s.to_str()?.to_string(), serde_json::Value::Null),
        Value::Table(t) => {
            let text = match t.get::<Value>("text")? {
                Value::String(s) => s.to_str()?.to_string(),
                _ => written,
            };
            let data = lua
                .from_value::<serde_json::Value>(Value::Table(t))
                .unwrap_or(serde_json::Value::Null);
            (text, data)
        }
        other => (other.to_string()?, serde_json::Value::Null),
    };
    Ok(Answer {
        request_id: 0,
        usage: Usage::default(),
        text,
        streamed,
        data,
        score_version: 0,
        lua_cpu_ms: 0.0,
        elapsed_ms: 0.0,
    })
}
