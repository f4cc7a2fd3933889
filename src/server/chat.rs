//! `POST /v1/chat/completions` and `POST /v1/completions`: parse the body, decide what
//! plays, wait for a turn, then answer in one JSON body or as a stream of chunks.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::error::ApiError;
use super::openai::{self, ChatRequest, CompletionRequest, Knobs, ResponseFormat};
use super::play::{self, Finished, Job, Piece};
use super::streaming::{Chunker, sse};
use crate::engine::{Prompt, ToolChoice};

/// A JSON body, or the error OpenAI's clients understand (413 past the body limit,
/// 400 with the parser's line and column for malformed JSON).
pub fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        ApiError::new(
            status,
            "invalid_request_error",
            format!("cannot read the body: {e}"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid request: {e}"))
            .with_code("invalid_json")
    })
}

fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// `response_format` as a GBNF grammar.
fn grammar_of(format: Option<ResponseFormat>) -> Result<Option<String>, ApiError> {
    let Some(f) = format else { return Ok(None) };
    let schema = match f.kind.as_str() {
        "text" => return Ok(None),
        "json_object" => json!({ "type": "object" }),
        "json_schema" => f
            .json_schema
            .and_then(|s| s.schema)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "`response_format.json_schema.schema` is missing: send the JSON schema the answer must match",
                )
            })?,
        other => {
            return Err(ApiError::bad_request(format!(
                "`response_format.type` is `{other}`: use text, json_object or json_schema"
            )));
        }
    };
    crate::engine::json_schema_grammar(&schema)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("`response_format`: {e}")))
}

fn check_n(knobs: &Knobs) -> Result<(), ApiError> {
    match knobs.n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::bad_request(format!(
            "`n` is {n}: this server answers one choice per request (send several requests)"
        ))),
    }
}

/// Headers that say who played (clients that don't know them ignore them).
fn orchestra_headers(f: &Finished) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    if let Some(s) = &f.section {
        put("x-orchestra-section", s);
    }
    if let Some(s) = &f.soloist {
        put("x-orchestra-soloist", s);
    }
    put("x-orchestra-score-version", &f.score_version.to_string());
    h
}

/// Collects a played answer (non-streaming).
async fn collect(mut rx: mpsc::Receiver<Piece>) -> Result<Finished, ApiError> {
    let mut streamed = String::new();
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Text(t) => streamed.push_str(&t),
            Piece::Done(f) => {
                let mut f = *f;
                if f.text.is_empty() {
                    f.text = streamed;
                }
                return Ok(f);
            }
            Piece::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the answer ended early"))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_body(body)?;
    check_n(&req.knobs)?;
    if req.messages.len() > state.max_messages {
        return Err(ApiError::bad_request(format!(
            "`messages` holds {} messages, more than this server takes ({}): send fewer, or raise `--max-messages`",
            req.messages.len(),
            state.max_messages
        ))
        .with_code("too_many_messages"));
    }
    let messages = openai::messages(req.messages)?;
    let (tools, mut tool_choice) = openai::tools(req.tools, req.tool_choice)?;
    if tools.is_empty() {
        tool_choice = ToolChoice::None;
    }
    let grammar = grammar_of(req.response_format)?;
    let target = play::resolve(&state, &req.model).await?;
    let permit = state.admission.admit().await?;
    tracing::info!(
        model = %req.model,
        waited_ms = permit.waited.as_secs_f64() * 1e3,
        in_flight = state.admission.in_flight(),
        queued = state.admission.queued(),
        "chat request admitted"
    );
    let stream = req.knobs.stream;
    let include_usage = req.knobs.include_usage();
    let job = Job {
        target,
        model: req.model.clone(),
        prompt: Prompt::Chat(messages),
        knobs: req.knobs,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        grammar,
    };
    let rx = play::start(&state, job, permit);
    let id = completion_id("chatcmpl");
    let created = openai::now();
    if stream {
        return Ok(sse(
            rx,
            ChatChunker {
                id,
                created,
                model: req.model,
                include_usage,
                started: false,
            },
        ));
    }
    let f = collect(rx).await?;
    let mut message = json!({
        "role": "assistant",
        "content": if f.text.is_empty() && !f.tool_calls.is_empty() { Value::Null } else { Value::String(f.text.clone()) },
    });
    if !f.tool_calls.is_empty() {
        message["tool_calls"] = openai::tool_calls_json(&f.tool_calls);
    }
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": f.finish_reason,
        }],
        "usage": openai::usage_json(f.prompt_tokens, f.cached_tokens, f.completion_tokens),
        "orchestra": f.orchestra,
    });
    Ok((orchestra_headers(&f), axum::Json(body)).into_response())
}

/// `chat.completion.chunk`s.
struct ChatChunker {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
}

impl ChatChunker {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        })
    }

    /// The first chunk carries the role, as OpenAI's does.
    fn role(&mut self) -> Option<Value> {
        if self.started {
            return None;
        }
        self.started = true;
        Some(self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null))
    }
}

impl Chunker for ChatChunker {
    fn text(&mut self, text: &str) -> Vec<Value> {
        let mut out: Vec<Value> = self.role().into_iter().collect();
        out.push(self.chunk(json!({ "content": text }), Value::Null));
        out
    }

    fn done(&mut self, f: &Finished) -> Vec<Value> {
        let mut out: Vec<Value> = self.role().into_iter().collect();
        for (i, c) in f.tool_calls.iter().enumerate() {
            // The call's name first, then its arguments, as OpenAI streams them.
            out.push(self.chunk(
                json!({ "tool_calls": [{ "index": i, "id": c.id, "type": "function",
                        "function": { "name": c.name, "arguments": "" } }] }),
                Value::Null,
            ));
            out.push(self.chunk(
                json!({ "tool_calls": [{ "index": i, "function": { "arguments": c.arguments } }] }),
                Value::Null,
            ));
        }
        let mut last = self.chunk(json!({}), Value::String(f.finish_reason.clone()));
        last["orchestra"] = f.orchestra.clone();
        out.push(last);
        if self.include_usage {
            let mut usage = self.chunk(json!({}), Value::Null);
            usage["choices"] = json!([]);
            usage["usage"] =
                openai::usage_json(f.prompt_tokens, f.cached_tokens, f.completion_tokens);
            out.push(usage);
        }
        out
    }
}

/// The prompt of a legacy completion: a string, or a list holding one string.
fn prompt_text(v: Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Array(mut a) if a.len() == 1 && a[0].is_string() => {
            Ok(a.remove(0).as_str().unwrap_or_default().to_string())
        }
        _ => Err(ApiError::bad_request(
            "`prompt` must be a string (or a list of one string)",
        )),
    }
}

pub async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_body(body)?;
    check_n(&req.knobs)?;
    let prompt = prompt_text(req.prompt)?;
    let target = play::resolve(&state, &req.model).await?;
    let permit = state.admission.admit().await?;
    let stream = req.knobs.stream;
    let include_usage = req.knobs.include_usage();
    let job = Job {
        target,
        model: req.model.clone(),
        prompt: Prompt::Raw(prompt),
        knobs: req.knobs,
        tools: Vec::new(),
        tool_choice: ToolChoice::None,
        parallel_tool_calls: false,
        grammar: None,
    };
    let rx = play::start(&state, job, permit);
    let id = completion_id("cmpl");
    let created = openai::now();
    if stream {
        return Ok(sse(
            rx,
            TextChunker {
                id,
                created,
                model: req.model,
                include_usage,
            },
        ));
    }
    let f = collect(rx).await?;
    let body = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": req.model,
        "choices": [{ "index": 0, "text": f.text, "logprobs": null, "finish_reason": f.finish_reason }],
        "usage": openai::usage_json(f.prompt_tokens, f.cached_tokens, f.completion_tokens),
        "orchestra": f.orchestra,
    });
    Ok((orchestra_headers(&f), axum::Json(body)).into_response())
}

/// `text_completion` chunks.
struct TextChunker {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl TextChunker {
    fn chunk(&self, text: &str, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason }],
        })
    }
}

impl Chunker for TextChunker {
    fn text(&mut self, text: &str) -> Vec<Value> {
        vec![self.chunk(text, Value::Null)]
    }

    fn done(&mut self, f: &Finished) -> Vec<Value> {
        let mut last = self.chunk("", Value::String(f.finish_reason.clone()));
        last["orchestra"] = f.orchestra.clone();
        let mut out = vec![last];
        if self.include_usage {
            let mut usage = self.chunk("", Value::Null);
            usage["choices"] = json!([]);
            usage["usage"] =
                openai::usage_json(f.prompt_tokens, f.cached_tokens, f.completion_tokens);
            out.push(usage);
        }
        out
    }
}
