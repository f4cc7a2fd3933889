//! Tool calls: the formats model families write them in, parsing them out of an
//! answer, holding their text back while streaming, and the GBNF grammars that
//! constrain them (plus the JSON-schema grammars `response_format` uses). Plain text
//! and JSON only; the sampler that runs a grammar lives in `model.rs`.

use std::fmt;

use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::EngineError;
use super::request::{Tool, ToolCall, ToolChoice};
use super::template::python_json;

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// Hermes/Qwen: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`.
    Hermes,
    /// Llama 3.x: a bare `{"name": …, "parameters": {…}}`, maybe after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]`.
    Mistral,
    /// A template that offers tools without a known marker: a bare JSON object.
    Json,
}

impl fmt::Display for ToolFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Json => "json",
        })
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolFormat {
    /// The format a template teaches. Templates that do not mention tools get
    /// Hermes instructions added (see [`hermes_instructions`]), so Hermes too.
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains(HERMES_OPEN) {
            ToolFormat::Hermes
        } else if template.contains(MISTRAL_OPEN) {
            ToolFormat::Mistral
        } else if template.contains("tools") && template.contains("<|start_header_id|>") {
            ToolFormat::Llama3
        } else if template.contains("tools") {
            ToolFormat::Json
        } else {
            ToolFormat::Hermes
        }
    }

    /// Texts that open a call anywhere in an answer.
    fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes | ToolFormat::Json => &[HERMES_OPEN],
            ToolFormat::Llama3 => &[PYTHON_TAG, HERMES_OPEN],
            ToolFormat::Mistral => &[MISTRAL_OPEN, HERMES_OPEN],
        }
    }

    /// Marker texts that may be single special tokens (rendered as text so the parser
    /// sees them).
    pub(crate) fn special_markers(self) -> &'static [&'static str] {
        &[HERMES_OPEN, HERMES_CLOSE, MISTRAL_OPEN, PYTHON_TAG]
    }

    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

/// Instructions for templates that do not render tools themselves.
pub fn hermes_instructions(tools: &[Tool]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        let mut f = serde_json::Map::new();
        f.insert("name".into(), json!(t.name));
        if let Some(d) = &t.description {
            f.insert("description".into(), json!(d));
        }
        f.insert("parameters".into(), parameters_schema(t));
        s.push('\n');
        python_json(&json!({"type": "function", "function": f}), None, 0, &mut s);
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

fn parameters_schema(t: &Tool) -> Value {
    if t.parameters.is_null() {
        json!({"type": "object", "properties": {}})
    } else {
        t.parameters.clone()
    }
}

/// A fresh OpenAI-style call id: `call_` and 9 alphanumerics.
pub fn new_call_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(9)
        .map(char::from)
        .collect();
    format!("call_{suffix}")
}

/// A format's parser: the content and the calls, `None` when its marker is absent.
type Parser = fn(&str, &[String]) -> Option<(String, Vec<ToolCall>)>;

/// Split an answer into its plain content and the tool calls in it. `tools` are the
/// offered names: calls found without an explicit marker (bare JSON) must name one.
pub fn parse_tool_calls(
    format: ToolFormat,
    text: &str,
    tools: &[String],
) -> (String, Vec<ToolCall>) {
    let attempts: [Parser; 3] = match format {
        ToolFormat::Mistral => [parse_mistral, parse_hermes, parse_bare_json],
        ToolFormat::Llama3 => [parse_llama3, parse_hermes, parse_bare_json],
        ToolFormat::Hermes | ToolFormat::Json => [parse_hermes, parse_bare_json, parse_mistral],
    };
    for attempt in attempts {
        if let Some((content, calls)) = attempt(text, tools)
            && !calls.is_empty()
        {
            return (content, calls);
        }
    }
    (text.to_owned(), Vec::new())
}

/// `text` without a tool call it ends in the middle of (an answer cut by `max_tokens`):
/// everything before the last call marker when what follows it is no whole call. Whole
/// calls before it are kept, so a client gets those and never a fragment.
pub fn drop_unfinished_call<'a>(format: ToolFormat, text: &'a str, tools: &[String]) -> &'a str {
    // A bare JSON call (`tool_choice: required`, no marker) cut inside its object: the
    // answer ends before it (a marker before it, if any, is cut below).
    let mut text = text;
    let bare = text
        .rmatch_indices('{')
        .map(|(at, _)| at)
        .find(|&at| text[at + 1..].trim_start().starts_with("\"name\""));
    if let Some(at) = bare
        && json_prefix(&text[at..]).is_none()
    {
        text = text[..at].trim_end();
    }
    let Some(at) = format.markers().iter().filter_map(|m| text.rfind(m)).max() else {
        return text;
    };
    let (_, calls) = parse_tool_calls(format, &text[at..], tools);
    let closed = !text[at..].starts_with(HERMES_OPEN) || text[at..].contains(HERMES_CLOSE);
    if calls.is_empty() || !closed {
        &text[..at]
    } else {
        text
    }
}

/// A call from a JSON object with `name` and `arguments` (or `parameters`).
fn call_from(v: &Value) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_owned();
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None | Some(Value::Null) => "{}".to_owned(),
        // Some models quote the arguments object.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(inner) => inner.to_string(),
            Err(_) => Value::String(s.clone()).to_string(),
        },
        Some(other) => other.to_string(),
    };
    Some(ToolCall {
        id: new_call_id(),
        name,
        arguments,
    })
}

/// The first JSON value at the start of `s` and the bytes it took.
fn json_prefix(s: &str) -> Option<(Value, usize)> {
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    let v = it.next()?.ok()?;
    Some((v, it.byte_offset()))
}

fn join_content(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_hermes(text: &str, _tools: &[String]) -> Option<(String, Vec<ToolCall>)> {
    let mut calls = Vec::new();
    let mut content = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(HERMES_OPEN) {
        content.push(&rest[..open]);
        let body_start = open + HERMES_OPEN.len();
        let (body, next) = match rest[body_start..].find(HERMES_CLOSE) {
            Some(close) => (
                &rest[body_start..body_start + close],
                body_start + close + HERMES_CLOSE.len(),
            ),
            None => (&rest[body_start..], rest.len()),
        };
        match serde_json::from_str::<Value>(body.trim())
            .ok()
            .as_ref()
            .and_then(call_from)
        {
            Some(call) => calls.push(call),
            None => content.push(&rest[open..next]),
        }
        rest = &rest[next..];
    }
    content.push(rest);
    Some((join_content(&content), calls))
}

fn parse_mistral(text: &str, _tools: &[String]) -> Option<(String, Vec<ToolCall>)> {
    let open = text.find(MISTRAL_OPEN)?;
    let after = &text[open + MISTRAL_OPEN.len()..];
    let lead = after.len() - after.trim_start().len();
    let (v, used) = json_prefix(after.trim_start())?;
    let calls: Vec<ToolCall> = match &v {
        Value::Array(items) => items.iter().filter_map(call_from).collect(),
        obj @ Value::Object(_) => call_from(obj).into_iter().collect(),
        _ => Vec::new(),
    };
    let tail = &after[lead + used..];
    Some((join_content(&[&text[..open], tail]), calls))
}

fn parse_llama3(text: &str, tools: &[String]) -> Option<(String, Vec<ToolCall>)> {
    match text.find(PYTHON_TAG) {
        Some(at) => {
            let (content, calls) = bare_calls(&text[at + PYTHON_TAG.len()..], &[])?;
            Some((join_content(&[&text[..at], &content]), calls))
        }
        None => bare_calls(text, tools),
    }
}

fn parse_bare_json(text: &str, tools: &[String]) -> Option<(String, Vec<ToolCall>)> {
    bare_calls(text, tools)
}

/// JSON objects (or arrays of them) anywhere in the text that name an offered tool
/// (any name when `tools` is empty), separated by text, `;` or code fences.
fn bare_calls(text: &str, tools: &[String]) -> Option<(String, Vec<ToolCall>)> {
    let named = |c: &ToolCall| tools.is_empty() || tools.contains(&c.name);
    let mut calls = Vec::new();
    let mut content = Vec::new();
    let mut from = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'{' && bytes[i] != b'[' {
            i += 1;
            continue;
        }
        let Some((v, used)) = json_prefix(&text[i..]) else {
            i += 1;
            continue;
        };
        let found: Vec<ToolCall> = match &v {
            Value::Array(items) => items.iter().filter_map(call_from).collect(),
            obj @ Value::Object(_) => call_from(obj).into_iter().collect(),
            _ => Vec::new(),
        };
        if !found.is_empty() && found.iter().all(named) {
            content.push(&text[from..i]);
            calls.extend(found);
            i += used;
            from = i;
        } else {
            i += 1;
        }
    }
    content.push(&text[from..]);
    let content: Vec<&str> = content
        .into_iter()
        .map(|p| {
            p.trim()
                .trim_start_matches("```json")
                .trim_matches(|c: char| c == '`' || c == ';' || c.is_whitespace())
        })
        .collect();
    Some((join_content(&content), calls))
}

/// Holds back streamed text from the start of a tool call on: the marker anywhere,
/// a `{` that opens the answer, and a partial marker at the end of what came so far.
#[derive(Debug)]
pub struct CallFilter {
    markers: &'static [&'static str],
    text: String,
    emitted: usize,
    /// Where the held-back call starts.
    held: Option<usize>,
}

impl CallFilter {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            markers: format.markers(),
            text: String::new(),
            emitted: 0,
            held: None,
        }
    }

    /// Feed streamed text; returns what may be shown now.
    pub fn push(&mut self, s: &str) -> String {
        self.text.push_str(s);
        if self.held.is_some() {
            return String::new();
        }
        let body = self.text.trim_start();
        let lead = self.text.len() - body.len();
        if self.emitted <= lead {
            // Nothing but whitespace shown so far: the answer may open with a call.
            if body.is_empty() {
                return String::new();
            }
            if body.starts_with('{') {
                self.held = Some(lead);
                return String::new();
            }
        }
        let tail = &self.text[self.emitted..];
        if let Some(at) = self.markers.iter().filter_map(|m| tail.find(m)).min() {
            let upto = self.emitted + at;
            self.held = Some(upto);
            return self.take(upto);
        }
        let partial = self
            .markers
            .iter()
            .flat_map(|m| (1..m.len()).rev().filter(move |&k| tail.ends_with(&m[..k])))
            .max()
            .unwrap_or(0);
        let upto = self.text.len() - partial;
        self.take(upto)
    }

    /// Whether a call (or what looks like one) is being held back.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Everything not shown yet (when the held text turned out to be no call).
    pub fn rest(&mut self) -> String {
        self.held = None;
        self.take(self.text.len())
    }

    fn take(&mut self, upto: usize) -> String {
        if upto <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..upto].to_owned();
        self.emitted = upto;
        out
    }
}

/// GBNF for JSON matching `schema` (llama.cpp's converter).
pub fn json_schema_grammar(schema: &Value) -> Result<String, EngineError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|e| EngineError::Schema(format!("{e}")))
}

/// GBNF for any JSON object (`response_format: {"type": "json_object"}`).
pub fn json_object_grammar() -> Result<String, EngineError> {
    json_schema_grammar(&json!({"type": "object"}))
}

/// A tool-call grammar and, when lazy, the patterns that switch it on.
#[derive(Debug, Clone)]
pub(crate) struct ToolGrammar {
    pub gbnf: String,
    /// Regexes over the answer so far; the first capture group starts the call. Empty:
    /// constrained from the first token.
    pub triggers: Vec<String>,
}

/// The grammar for a request's tools: lazy (switched on at the call marker) for
/// `auto`, from the first token for `required` or a named function. `None` for
/// `tool_choice: none` or no tools.
pub(crate) fn tool_grammar(
    format: ToolFormat,
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<ToolGrammar>, EngineError> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return Ok(None);
    }
    let offered: Vec<&Tool> =
        match choice {
            ToolChoice::Function(name) => {
                let t = tools.iter().find(|t| t.name == *name).ok_or_else(|| {
                    EngineError::UnknownTool {
                        name: name.clone(),
                        offered: tools
                            .iter()
                            .map(|t| t.name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })?;
                vec![t]
            }
            _ => tools.iter().collect(),
        };
    let key = format.arguments_key();
    let variants: Vec<Value> = offered
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, key: parameters_schema(t)},
                "required": ["name", key],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = if variants.len() == 1 {
        variants.into_iter().next().unwrap_or_default()
    } else {
        json!({"anyOf": variants})
    };
    let call_json = json_schema_grammar(&schema)?;
    // The converter's `root` becomes our `tc-json`; our root wraps it in markers.
    let mut rules = String::new();
    for line in call_json.lines() {
        match line.strip_prefix("root ::=") {
            Some(rest) => rules.push_str(&format!("tc-json ::={rest}\n")),
            None => {
                rules.push_str(line);
                rules.push('\n');
            }
        }
    }
    let more = |call: &str, sep: &str| {
        if parallel {
            format!("{call} ({sep} {call})*")
        } else {
            call.to_owned()
        }
    };
    let (root, triggers) = match format {
        // Small Qwen models sometimes drop the `<tool_call>` tags and answer with the bare
        // call object: a `{` opening the answer switches the grammar on too, so that
        // form is constrained as well.
        ToolFormat::Hermes => (
            format!(
                "{} | {}",
                more("tc-call", "tc-ws"),
                more("tc-json", "tc-ws")
            ),
            vec![
                r"[\s\S]*?(<tool_call>)[\s\S]*".to_owned(),
                r"\s*(\{)[\s\S]*".to_owned(),
            ],
        ),
        ToolFormat::Mistral => (
            format!(
                "\"[TOOL_CALLS]\" tc-ws \"[\" tc-ws {} tc-ws \"]\"",
                more("tc-json", "tc-ws \",\" tc-ws")
            ),
            vec![r"[\s\S]*?(\[TOOL_CALLS\])[\s\S]*".to_owned()],
        ),
        ToolFormat::Llama3 => (
            "(\"<|python_tag|>\" tc-ws)? tc-json".to_owned(),
            vec![
                r"\s*(\{)[\s\S]*".to_owned(),
                r"[\s\S]*?(<\|python_tag\|>)[\s\S]*".to_owned(),
            ],
        ),
        ToolFormat::Json => (more("tc-json", "tc-ws"), vec![r"\s*(\{)[\s\S]*".to_owned()]),
    };
    let gbnf = format!(
        "root ::= {root}\n\
         tc-call ::= \"<tool_call>\" tc-ws tc-json tc-ws \"</tool_call>\"\n\
         tc-ws ::= [ \\t\\n]{{0,3}}\n\
         {rules}"
    );
    let lazy = matches!(choice, ToolChoice::Auto);
    Ok(Some(ToolGrammar {
        gbnf,
        triggers: if lazy { triggers } else { Vec::new() },
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_cut_inside_a_call_loses_the_call_and_keeps_the_whole_ones() {
        let tools = ["read".to_string()];
        let whole = r#"<tool_call>{"name": "read", "arguments": {"path": "a"}}</tool_call>"#;
        let cut = format!(r#"Let me look.{whole}<tool_call>{{"name": "read", "argu"#);
        assert_eq!(
            drop_unfinished_call(ToolFormat::Hermes, &cut, &tools),
            format!("Let me look.{whole}")
        );
        // A call whose JSON is whole but whose closing tag never came is cut too.
        let unclosed = r#"ok <tool_call>{"name": "read", "arguments": {}}"#;
        assert_eq!(
            drop_unfinished_call(ToolFormat::Hermes, unclosed, &tools),
            "ok "
        );
        // Nothing to cut.
        assert_eq!(
            drop_unfinished_call(ToolFormat::Hermes, whole, &tools),
            whole
        );
        assert_eq!(
            drop_unfinished_call(ToolFormat::Hermes, "plain text", &tools),
            "plain text"
        );
        // Bare JSON calls (`tool_choice: required`): the whole ones stay, the cut one goes.
        let bare = "{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}\n{\"name\": \"read\", \"arguments\": {\"pa";
        assert_eq!(
            drop_unfinished_call(ToolFormat::Json, bare, &tools),
            "{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}"
        );
    }

    use super::*;

    fn names() -> Vec<String> {
        vec!["get_weather".into()]
    }

    #[test]
    fn parsers_find_calls_and_content() {
        // (format, answer, content, [(name, arguments)])
        type Case<'a> = (ToolFormat, &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                ToolFormat::Hermes,
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                "",
                &[("get_weather", r#"{"city":"Paris"}"#)],
            ),
            (
                ToolFormat::Hermes,
                "Let me look.\n<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {\"x\": 1}}</tool_call>",
                "Let me look.",
                &[("a", "{}"), ("b", r#"{"x":1}"#)],
            ),
            (
                ToolFormat::Hermes,
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}",
                "",
                &[("get_weather", r#"{"city":"Rome"}"#)],
            ),
            (
                ToolFormat::Hermes,
                "<tool_call>not json</tool_call>",
                "<tool_call>not json</tool_call>",
                &[],
            ),
            (
                ToolFormat::Hermes,
                "The weather is fine.",
                "The weather is fine.",
                &[],
            ),
            (
                ToolFormat::Llama3,
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
                "",
                &[("get_weather", r#"{"city":"Oslo"}"#)],
            ),
            (
                ToolFormat::Llama3,
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
                "",
                &[("get_weather", r#"{"city":"Oslo"}"#)],
            ),
            (
                ToolFormat::Llama3,
                "{\"answer\": 42}",
                "{\"answer\": 42}",
                &[],
            ),
            (
                ToolFormat::Mistral,
                "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Nice\"}, \"id\": \"abcdefghi\"}]",
                "",
                &[("get_weather", r#"{"city":"Nice"}"#)],
            ),
            (
                ToolFormat::Json,
                "```json\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Lima\\\"}\"}\n```",
                "",
                &[("get_weather", r#"{"city":"Lima"}"#)],
            ),
            (
                ToolFormat::Json,
                "{\"name\": \"unknown_tool\", \"arguments\": {}}",
                "{\"name\": \"unknown_tool\", \"arguments\": {}}",
                &[],
            ),
        ];
        for (format, text, content, want) in cases {
            let (c, calls) = parse_tool_calls(*format, text, &names());
            assert_eq!(c, *content, "{format} {text:?}");
            let got: Vec<(&str, &str)> = calls
                .iter()
                .map(|c| (c.name.as_str(), c.arguments.as_str()))
                .collect();
            assert_eq!(got, *want, "{format} {text:?}");
            for call in &calls {
                assert!(
                    call.id.starts_with("call_") && call.id.len() == 14,
                    "{}",
                    call.id
                );
            }
        }
    }

    fn stream(format: ToolFormat, pieces: &[&str]) -> (String, bool) {
        let mut f = CallFilter::new(format);
        let mut shown = String::new();
        for p in pieces {
            shown.push_str(&f.push(p));
        }
        (shown, f.holding())
    }

    #[test]
    fn filter_streams_content_and_holds_calls() {
        let cases: &[(ToolFormat, &[&str], &str, bool)] = &[
            (
                ToolFormat::Hermes,
                &["Hello", " world"],
                "Hello world",
                false,
            ),
            (
                ToolFormat::Hermes,
                &["Sure. <tool", "_call>{\"name\"", "}</tool_call>"],
                "Sure. ",
                true,
            ),
            (ToolFormat::Hermes, &["a <to", "y"], "a <toy", false),
            (ToolFormat::Hermes, &["a <to"], "a ", false),
            (ToolFormat::Hermes, &["  ", "{\"name\": 1}"], "", true),
            (ToolFormat::Hermes, &["  ", "Hi {x}"], "  Hi {x}", false),
            (ToolFormat::Mistral, &["[TOOL_CALLS]", " [{}]"], "", true),
            (ToolFormat::Llama3, &["<|python", "_tag|>{}"], "", true),
            (ToolFormat::Hermes, &["<tool_call>"], "", true),
        ];
        for (format, pieces, shown, holding) in cases {
            let (s, h) = stream(*format, pieces);
            assert_eq!(s, *shown, "{format} {pieces:?}");
            assert_eq!(h, *holding, "{format} {pieces:?}");
        }
    }

    #[test]
    fn filter_releases_what_was_no_call() {
        let mut f = CallFilter::new(ToolFormat::Hermes);
        assert_eq!(f.push("{not a call"), "");
        assert_eq!(f.rest(), "{not a call");
    }

    #[test]
    fn format_follows_template_text() {
        let cases = [
            ("{{ '<tool_call>' }} tools", ToolFormat::Hermes),
            ("[TOOL_CALLS] tools", ToolFormat::Mistral),
            ("<|start_header_id|> {% if tools %}", ToolFormat::Llama3),
            ("{% if tools %}{{ tools }}{% endif %}", ToolFormat::Json),
            ("<start_of_turn>", ToolFormat::Hermes),
        ];
        for (t, want) in cases {
            assert_eq!(ToolFormat::detect(t), want, "{t}");
        }
    }
}
