//! The OpenAI wire format as a remote instrument speaks it: the request body built from
//! a [`GenerateRequest`], an incremental server-sent-events decoder, and the reading of
//! one streamed chunk (text, tool-call pieces, finish reason, usage). No I/O here.

use serde_json::{Value, json};

use crate::engine::{ChatMessage, FinishReason, GenerateRequest, Prompt, SamplingParams, ToolCall};

/// `chat/completions` for chat prompts, `completions` for raw ones.
pub(crate) fn endpoint(request: &GenerateRequest) -> &'static str {
    match request.prompt {
        Prompt::Chat(_) => "chat/completions",
        Prompt::Raw(_) => "completions",
    }
}

fn message(m: &ChatMessage) -> Value {
    let mut v = json!({ "role": m.role, "content": m.content });
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments },
                })
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    if let Some(name) = &m.name {
        v["name"] = json!(name);
    }
    v
}

/// The streaming request body for `model`. Only OpenAI's own sampling fields are always
/// sent; llama.cpp's extras (`top_k`, `min_p`, `repeat_penalty`, `grammar`) go only
/// when they differ from the defaults, so strict servers see nothing unknown.
pub(crate) fn body(model: &str, request: &GenerateRequest) -> Value {
    let s = &request.sampling;
    let mut b = json!({
        "model": model,
        "stream": true,
        "stream_options": { "include_usage": true },
        "max_tokens": request.max_tokens,
        "temperature": s.temperature.max(0.0),
        "top_p": s.top_p,
    });
    match &request.prompt {
        Prompt::Chat(msgs) => b["messages"] = msgs.iter().map(message).collect(),
        Prompt::Raw(text) => b["prompt"] = json!(text),
    }
    let defaults = SamplingParams::default();
    if s.top_k != defaults.top_k {
        b["top_k"] = json!(s.top_k);
    }
    if s.min_p != defaults.min_p {
        b["min_p"] = json!(s.min_p);
    }
    if s.repeat_penalty != defaults.repeat_penalty {
        b["repeat_penalty"] = json!(s.repeat_penalty);
    }
    if s.frequency_penalty != 0.0 {
        b["frequency_penalty"] = json!(s.frequency_penalty);
    }
    if s.presence_penalty != 0.0 {
        b["presence_penalty"] = json!(s.presence_penalty);
    }
    if let Some(seed) = s.seed {
        b["seed"] = json!(seed);
    }
    if let Some(g) = &s.grammar {
        b["grammar"] = json!(g);
    }
    if !request.stop.is_empty() {
        b["stop"] = json!(request.stop);
    }
    if request.ignore_eos {
        b["ignore_eos"] = json!(true);
    }
    if !request.tools.is_empty() && matches!(request.prompt, Prompt::Chat(_)) {
        b["tools"] = request
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": t }))
            .collect();
        b["tool_choice"] = match &request.tool_choice {
            crate::engine::ToolChoice::Auto => json!("auto"),
            crate::engine::ToolChoice::None => json!("none"),
            crate::engine::ToolChoice::Required => json!("required"),
            crate::engine::ToolChoice::Function(name) => {
                json!({ "type": "function", "function": { "name": name } })
            }
        };
        b["parallel_tool_calls"] = json!(request.parallel_tool_calls);
    }
    b
}

/// Splits a byte stream into the `data:` payloads of server-sent events. Bytes arrive
/// in arbitrary pieces; a payload is complete at the blank line that ends its event.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the payloads of the events they completed.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                self.data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing we need.
        }
        out
    }

    /// The payload of an event the stream ended in without its blank line.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
        if let Some(d) = rest.trim_end().strip_prefix("data:") {
            self.data.push(d.trim_start().to_string());
        }
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data).join("\n"))
    }
}

/// A tool call being assembled from streamed pieces.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartialCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One streamed piece of a tool call: which call, and what of it arrived.
#[derive(Debug, Default)]
pub(crate) struct CallDelta {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// What one streamed chunk says.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub text: Option<String>,
    pub calls: Vec<CallDelta>,
    pub finish: Option<FinishReason>,
    /// `(prompt, cached, completion)` tokens.
    pub usage: Option<(usize, usize, usize)>,
    /// An error the server reported inside the stream.
    pub error: Option<String>,
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Reads one chunk of `chat/completions` (`choices[0].delta`) or `completions`
/// (`choices[0].text`).
pub(crate) fn chunk(v: &Value) -> Chunk {
    let mut c = Chunk::default();
    if let Some(e) = v.get("error") {
        c.error = Some(
            e.get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string()),
        );
        return c;
    }
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        let delta = choice.get("delta");
        let text = delta
            .and_then(|d| d.get("content"))
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str);
        c.text = text.filter(|t| !t.is_empty()).map(str::to_owned);
        if let Some(calls) = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for (i, call) in calls.iter().enumerate() {
                let f = call.get("function");
                let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
                c.calls.push(CallDelta {
                    index: call
                        .get("index")
                        .and_then(Value::as_u64)
                        .map(|n| n as usize)
                        .unwrap_or(i),
                    id: s(call.get("id")),
                    name: s(f.and_then(|f| f.get("name"))),
                    arguments: s(f.and_then(|f| f.get("arguments"))),
                });
            }
        }
        c.finish = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(finish_reason);
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0) as usize;
        c.usage = Some((
            n(u.get("prompt_tokens")),
            n(u.pointer("/prompt_tokens_details/cached_tokens")),
            n(u.get("completion_tokens")),
        ));
    }
    c
}

/// Adds tool-call deltas to the calls assembled so far.
pub(crate) fn merge_calls(calls: &mut Vec<PartialCall>, chunk: &Chunk) {
    for d in &chunk.calls {
        if calls.len() <= d.index {
            calls.resize(d.index + 1, PartialCall::default());
        }
        let call = &mut calls[d.index];
        if let Some(id) = &d.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &d.name {
            call.name.push_str(name);
        }
        if let Some(args) = &d.arguments {
            call.arguments.push_str(args);
        }
    }
}

/// The finished tool calls (unnamed slots dropped, missing ids made up).
pub(crate) fn tool_calls(calls: Vec<PartialCall>) -> Vec<ToolCall> {
    calls
        .into_iter()
        .filter(|c| !c.name.is_empty())
        .map(|c| ToolCall {
            id: if c.id.is_empty() {
                crate::engine::new_call_id()
            } else {
                c.id
            },
            name: c.name,
            arguments: if c.arguments.is_empty() {
                "{}".into()
            } else {
                c.arguments
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_survive_arbitrary_splits() {
        let stream = b"data: {\"a\":1}\n\n: comment\nevent: x\ndata: two\r\n\r\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut d = SseDecoder::default();
            let mut got = d.push(&stream[..split]);
            got.extend(d.push(&stream[split..]));
            assert_eq!(got, ["{\"a\":1}", "two", "[DONE]"], "split at {split}");
        }
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: tail").is_empty());
        assert_eq!(d.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn chunks_of_both_endpoints_are_read() {
        let chat =
            chunk(&json!({"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}));
        assert_eq!(chat.text.as_deref(), Some("Hi"));
        let raw = chunk(&json!({"choices": [{"text": "yo", "finish_reason": "length"}]}));
        assert_eq!(raw.text.as_deref(), Some("yo"));
        assert_eq!(raw.finish, Some(FinishReason::Length));
        let usage = chunk(
            &json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 2}}}),
        );
        assert_eq!(usage.usage, Some((5, 2, 7)));
        let err = chunk(&json!({"error": {"message": "boom"}}));
        assert_eq!(err.error.as_deref(), Some("boom"));
        let mut calls = Vec::new();
        for piece in [
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get", "arguments": "{\"a\""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}),
        ] {
            merge_calls(&mut calls, &chunk(&piece));
        }
        let calls = tool_calls(calls);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("c1", "get")
        );
        assert_eq!(calls[0].arguments, "{\"a\":1}");
    }

    #[test]
    fn the_body_sends_llama_extras_only_when_set() {
        let plain = body("m", &GenerateRequest::user("hi"));
        assert!(plain.get("top_k").is_none() && plain.get("min_p").is_none());
        assert_eq!(plain["messages"][0]["content"], "hi");
        let mut s = SamplingParams::greedy();
        s.top_k = 1;
        s.seed = Some(3);
        let tuned = body("m", &GenerateRequest::raw("x").with_sampling(s));
        assert_eq!(tuned["top_k"], 1);
        assert_eq!(tuned["seed"], 3);
        assert_eq!(tuned["prompt"], "x");
        assert_eq!(
            endpoint(&GenerateRequest::raw("x")),
            "completions",
            "raw prompts go to /completions"
        );
    }
}
