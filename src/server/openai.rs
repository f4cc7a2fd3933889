//! The OpenAI wire format: request bodies as clients send them (unknown fields are
//! ignored, as OpenAI's clients send many) and the shapes of the answers. Conversions
//! to and from the library's types live here and nowhere else.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::engine::{ChatMessage, Tool, ToolCall, ToolChoice};

/// `content` is a string, or a list of parts of which we read the text ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn into_text(self) -> Result<String, ApiError> {
        match self {
            Content::Text(s) => Ok(s),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => out.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "content parts of type `{kind}` are not supported: send text"
                            )));
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireFunctionCall {
    pub name: String,
    /// JSON text (some clients send an object; both are accepted).
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireToolCall {
    #[serde(default)]
    pub id: String,
    pub function: WireFunctionCall,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: WireFunction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub schema: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling and limits shared by chat and text completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Knobs {
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// llama.cpp's own knobs, as llama-server accepts them.
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub n: Option<u32>,
    /// Keep generating past end-of-generation tokens (llama-server's knob; benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl Knobs {
    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    #[serde(flatten)]
    pub knobs: Knobs,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<WireTool>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
}

/// `POST /v1/completions`: a prompt string (or a list holding one).
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Value,
    #[serde(flatten)]
    pub knobs: Knobs,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// The JSON text of a call's arguments, whichever way the client sent them.
fn arguments_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// Messages as the engine takes them.
pub fn messages(wire: Vec<WireMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` is empty: send at least one message",
        ));
    }
    let mut out = Vec::with_capacity(wire.len());
    for (i, m) in wire.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system".to_string(),
            "system" | "user" | "assistant" | "tool" => m.role,
            other => {
                return Err(ApiError::bad_request(format!(
                    "`messages[{i}].role` is `{other}`: use system, user, assistant or tool"
                )));
            }
        };
        let content = match m.content {
            Some(c) => c.into_text()?,
            // OpenAI refuses these too: only an assistant turn that calls tools (or a
            // system/tool turn with nothing to say) may leave `content` out.
            None if role == "user" => {
                return Err(ApiError::bad_request(format!(
                    "`messages[{i}].content` is missing or null: a user message needs content (a string, or a list of text parts)"
                )));
            }
            None => String::new(),
        };
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: arguments_text(c.function.arguments),
            })
            .collect();
        out.push(ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
        });
    }
    Ok(out)
}

/// Tools and the choice among them.
pub fn tools(
    wire: Option<Vec<WireTool>>,
    choice: Option<Value>,
) -> Result<(Vec<Tool>, ToolChoice), ApiError> {
    let tools: Vec<Tool> = wire
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            if let Some(kind) = t.kind.as_deref()
                && kind != "function"
            {
                return Err(ApiError::bad_request(format!(
                    "tools of type `{kind}` are not supported: use `function`"
                )));
            }
            let parameters = t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            // A schema the grammar cannot be built from fails here as the client's
            // error, not later inside an arrangement as the server's.
            if !parameters.is_object() || crate::engine::json_schema_grammar(&parameters).is_err() {
                return Err(ApiError::bad_request(format!(
                    "`parameters` of tool `{}` is not a JSON schema this server can follow: send an object such as {{\"type\": \"object\", \"properties\": {{...}}}}",
                    t.function.name
                )));
            }
            Ok(Tool {
                name: t.function.name,
                description: t.function.description,
                parameters,
            })
        })
        .collect::<Result<_, _>>()?;
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::bad_request(format!(
                    "`tool_choice` is `{other}`: use auto, none, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )));
            }
        },
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "`tool_choice` object needs `function.name`: {\"type\": \"function\", \"function\": {\"name\": \"...\"}}",
                    )
                })?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::bad_request(format!(
                    "`tool_choice` names `{name}`, which is not among `tools`"
                )));
            }
            ToolChoice::Function(name.to_string())
        }
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::bad_request(
            "`tool_choice` asks for a tool call but no `tools` were sent",
        ));
    }
    Ok((tools, choice))
}

/// Tool calls as OpenAI sends them in a message.
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments },
                })
            })
            .collect(),
    )
}

/// OpenAI's `usage` object; `cached_tokens` as OpenAI reports prompt caching.
pub fn usage_json(prompt_tokens: usize, cached_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": { "cached_tokens": cached_tokens },
    })
}

/// Seconds since the Unix epoch, for `created`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
