//! Chat templates: which Jinja template a model is prompted with (its GGUF's
//! `tokenizer.chat_template`, a score's override, or an architecture default) and
//! rendering it with minijinja the way Hugging Face's `transformers` renders it with
//! Python's jinja2. Knows nothing about llama.cpp: callers pass the token texts.

use std::fmt;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind, State};
use serde::Serialize;
use serde_json::json;

use super::error::EngineError;
use super::request::{ChatMessage, Tool};
use super::tools::{ToolFormat, hermes_instructions};

/// Where a model's template comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "family")]
pub enum TemplateSource {
    /// The GGUF's own `tokenizer.chat_template`.
    Gguf,
    /// The GGUF has none (or it does not compile): a default for its architecture.
    ArchitectureDefault(Family),
    /// The score's `template = …` for this instrument.
    Override,
}

impl fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateSource::Gguf => f.write_str("gguf"),
            TemplateSource::ArchitectureDefault(family) => {
                write!(f, "architecture default: {family}")
            }
            TemplateSource::Override => f.write_str("score override"),
        }
    }
}

/// Chat formats with a built-in default template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Gemma,
    Llama3,
    Mistral,
    ChatMl,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Gemma => "gemma",
            Family::Llama3 => "llama3",
            Family::Mistral => "mistral",
            Family::ChatMl => "chatml",
        })
    }
}

impl Family {
    /// The default for a GGUF without a template: by `general.architecture`, and by
    /// the vocabulary for `llama` files (Llama 3 and Mistral ship as `llama`).
    pub fn for_architecture(architecture: &str, has_token: &dyn Fn(&str) -> bool) -> Family {
        let arch = architecture.to_ascii_lowercase();
        if arch.starts_with("gemma") {
            Family::Gemma
        } else if has_token("<|start_header_id|>") {
            Family::Llama3
        } else if arch.starts_with("mistral") || has_token("[INST]") {
            Family::Mistral
        } else {
            Family::ChatMl
        }
    }

    /// The default template's Jinja text.
    pub fn template(self) -> &'static str {
        match self {
            Family::Gemma => GEMMA_DEFAULT,
            Family::Llama3 => LLAMA3_DEFAULT,
            Family::Mistral => MISTRAL_DEFAULT,
            Family::ChatMl => CHATML_DEFAULT,
        }
    }
}

/// Gemma turns: `user` and `model`, the system prompt folded into the first user turn.
const GEMMA_DEFAULT: &str = "{{- bos_token }}
{%- set ns = namespace(prefix='') %}
{%- if messages and messages[0].role == 'system' %}
{%- set ns.prefix = messages[0].content | trim ~ '\n\n' %}
{%- set messages = messages[1:] %}
{%- endif %}
{%- for message in messages %}
{%- set role = 'model' if message.role == 'assistant' else 'user' %}
{{- '<start_of_turn>' ~ role ~ '\n' }}
{%- if loop.first and role == 'user' %}{{ ns.prefix }}{% endif %}
{{- message.content | trim ~ '<end_of_turn>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Llama 3 headers.
const LLAMA3_DEFAULT: &str = "{{- bos_token }}
{%- for message in messages %}
{{- '<|start_header_id|>' ~ message.role ~ '<|end_header_id|>\n\n' ~ message.content | trim ~ '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Mistral `[INST]` turns, the system prompt before the first user message.
const MISTRAL_DEFAULT: &str = "{{- bos_token }}
{%- set ns = namespace(prefix='') %}
{%- if messages and messages[0].role == 'system' %}
{%- set ns.prefix = messages[0].content ~ '\n\n' %}
{%- set messages = messages[1:] %}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' %}
{{- ' ' ~ message.content | trim ~ eos_token }}
{%- else %}
{{- '[INST] ' ~ (ns.prefix if loop.first else '') ~ message.content ~ '[/INST]' }}
{%- endif %}
{%- endfor %}";

/// ChatML, for everything else.
const CHATML_DEFAULT: &str = "{%- for message in messages %}
{{- '<|im_start|>' ~ message.role ~ '\n' ~ message.content ~ '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Which template a model uses and why (`orchestra inspect`, [`Model::template_info`]).
///
/// [`Model::template_info`]: super::Model::template_info
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateInfo {
    pub source: TemplateSource,
    /// Why this one: `the GGUF has no tokenizer.chat_template; architecture gemma3`.
    pub reason: String,
    /// How the model writes tool calls with this template.
    pub tool_format: ToolFormat,
}

impl fmt::Display for TemplateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}; tool calls: {})",
            self.source, self.reason, self.tool_format
        )
    }
}

/// The template a model will use: the score's override, else the GGUF's, else the
/// architecture's default. Returns the Jinja text and why it was chosen. A GGUF
/// template that does not compile falls back to the default (with the reason).
pub fn choose_template(
    override_text: Option<&str>,
    gguf: Option<&str>,
    architecture: &str,
    has_token: &dyn Fn(&str) -> bool,
) -> (String, TemplateSource, String) {
    if let Some(t) = override_text {
        return (
            t.to_owned(),
            TemplateSource::Override,
            "set by the score's `template`".into(),
        );
    }
    let family = Family::for_architecture(architecture, has_token);
    match gguf {
        Some(t) if !t.trim().is_empty() => match compile_check(t) {
            Ok(()) => (
                t.to_owned(),
                TemplateSource::Gguf,
                "the GGUF's tokenizer.chat_template".into(),
            ),
            Err(e) => (
                family.template().to_owned(),
                TemplateSource::ArchitectureDefault(family),
                format!(
                    "the GGUF's template does not compile ({e}); architecture `{architecture}`"
                ),
            ),
        },
        _ => (
            family.template().to_owned(),
            TemplateSource::ArchitectureDefault(family),
            format!("the GGUF has no tokenizer.chat_template; architecture `{architecture}`"),
        ),
    }
}

fn compile_check(source: &str) -> Result<(), String> {
    let mut env = environment();
    env.add_template_owned("chat", source.to_owned())
        .map_err(|e| describe(&e))
}

/// A compiled chat template with the model's BOS/EOS token texts.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    model: String,
    bos: String,
    eos: String,
    format: ToolFormat,
    /// The template renders `tools` itself; otherwise tool instructions are added to
    /// the conversation's first system (or user) message.
    knows_tools: bool,
    /// The template renders `tool_calls` and `tool` messages; otherwise they become
    /// `<tool_call>` / `<tool_response>` text in assistant and user turns.
    knows_tool_messages: bool,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("model", &self.model)
            .field("format", &self.format)
            .finish()
    }
}

impl ChatTemplate {
    /// Compile `source` once. `model` names the model in errors.
    pub fn new(model: &str, source: &str, bos: &str, eos: &str) -> Result<Self, EngineError> {
        let mut env = environment();
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| EngineError::Template {
                model: model.into(),
                reason: describe(&e),
            })?;
        Ok(Self {
            env,
            source: source.to_owned(),
            model: model.to_owned(),
            bos: bos.to_owned(),
            eos: eos.to_owned(),
            format: ToolFormat::detect(source),
            knows_tools: source.contains("tools"),
            knows_tool_messages: source.contains("tool_calls"),
        })
    }

    /// The Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How the model writes tool calls with this template.
    pub fn tool_format(&self) -> ToolFormat {
        self.format
    }

    /// Render a conversation (with `add_generation_prompt`, the opening of the
    /// assistant's turn). `tools` empty: the template sees `tools` as `none`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let mut msgs: Vec<serde_json::Value> = if self.knows_tool_messages {
            messages.iter().map(|m| self.message_json(m)).collect()
        } else {
            flatten_tool_messages(messages)
        };
        let mut ctx = serde_json::Map::new();
        ctx.insert("bos_token".into(), json!(self.bos));
        ctx.insert("eos_token".into(), json!(self.eos));
        ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
        // Like `transformers`: `tools` is always defined, `none` when there are none.
        let mut tools_value = serde_json::Value::Null;
        if !tools.is_empty() {
            if self.knows_tools {
                tools_value = serde_json::Value::Array(tools.iter().map(tool_json).collect());
            } else {
                add_instructions(&mut msgs, &hermes_instructions(tools));
            }
        }
        ctx.insert("tools".into(), tools_value);
        ctx.insert("messages".into(), serde_json::Value::Array(msgs));
        let template = self.env.get_template("chat").map_err(|e| self.error(&e))?;
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| self.error(&e))
    }

    fn error(&self, e: &minijinja::Error) -> EngineError {
        EngineError::Template {
            model: self.model.clone(),
            reason: describe(e),
        }
    }

    /// A message in the shape templates expect (OpenAI's, with tool-call arguments
    /// as an object so `arguments | tojson` prints JSON, as `transformers` users pass).
    fn message_json(&self, m: &ChatMessage) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("role".into(), json!(m.role));
        o.insert("content".into(), json!(m.content));
        if !m.tool_calls.is_empty() {
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({
                        "id": self.call_id(&c.id),
                        "type": "function",
                        "function": {"name": c.name, "arguments": arguments_value(&c.arguments)},
                    })
                })
                .collect();
            o.insert("tool_calls".into(), serde_json::Value::Array(calls));
        }
        if let Some(id) = &m.tool_call_id {
            o.insert("tool_call_id".into(), json!(self.call_id(id)));
        }
        if let Some(name) = &m.name {
            o.insert("name".into(), json!(name));
        }
        serde_json::Value::Object(o)
    }

    /// Mistral's templates insist on 9 alphanumeric characters; other formats keep
    /// the id as is.
    fn call_id(&self, id: &str) -> String {
        if self.format != ToolFormat::Mistral {
            return id.to_owned();
        }
        mistral_call_id(id)
    }
}

/// `call_ab12cd34e` → `ab12cd34e`; any other id → 9 alphanumerics derived from it.
pub fn mistral_call_id(id: &str) -> String {
    let ok = |s: &str| s.len() == 9 && s.chars().all(|c| c.is_ascii_alphanumeric());
    if ok(id) {
        return id.to_owned();
    }
    if let Some(rest) = id.strip_prefix("call_").filter(|r| ok(r)) {
        return rest.to_owned();
    }
    // FNV-1a: stable across runs, so a call and its result map to the same id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..9)
        .map(|i| ALNUM[((h >> (i * 6)) % ALNUM.len() as u64) as usize] as char)
        .collect()
}

/// OpenAI's tool shape: `{"type": "function", "function": {...}}`.
fn tool_json(t: &Tool) -> serde_json::Value {
    let mut f = serde_json::Map::new();
    f.insert("name".into(), json!(t.name));
    if let Some(d) = &t.description {
        f.insert("description".into(), json!(d));
    }
    let params = if t.parameters.is_null() {
        json!({"type": "object", "properties": {}})
    } else {
        t.parameters.clone()
    };
    f.insert("parameters".into(), params);
    json!({"type": "function", "function": f})
}

/// Arguments as an object when they are JSON text, else the text itself.
fn arguments_value(args: &str) -> serde_json::Value {
    serde_json::from_str(args).unwrap_or_else(|_| json!(args))
}

/// For templates that know no tool messages: calls become `<tool_call>` text in the
/// assistant turn, results `<tool_response>` text in a user turn (consecutive results
/// share one turn), so role-alternating templates still render.
fn flatten_tool_messages(messages: &[ChatMessage]) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut last_was_tool = false;
    for m in messages {
        if m.role == "tool" {
            let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
            if last_was_tool && let Some(prev) = out.last_mut() {
                let text = prev["content"].as_str().unwrap_or_default().to_owned();
                prev["content"] = json!(format!("{text}\n{block}"));
            } else {
                out.push(json!({"role": "user", "content": block}));
            }
            last_was_tool = true;
            continue;
        }
        last_was_tool = false;
        let mut content = m.content.clone();
        for c in &m.tool_calls {
            if !content.is_empty() {
                content.push('\n');
            }
            let args = arguments_value(&c.arguments);
            content.push_str(&format!(
                "<tool_call>\n{}\n</tool_call>",
                json!({"name": c.name, "arguments": args})
            ));
        }
        out.push(json!({"role": m.role, "content": content}));
    }
    out
}

/// Put tool instructions into the first system message, else before the first user
/// message's text (templates that refuse a system role still render).
fn add_instructions(msgs: &mut [serde_json::Value], text: &str) {
    if let Some(first) = msgs.first_mut()
        && first["role"] == "system"
    {
        let old = first["content"].as_str().unwrap_or_default().to_owned();
        first["content"] = json!(format!("{old}\n\n{text}").trim_start().to_owned());
        return;
    }
    if let Some(user) = msgs.iter_mut().find(|m| m["role"] == "user") {
        let old = user["content"].as_str().unwrap_or_default().to_owned();
        user["content"] = json!(format!("{text}\n\n{old}"));
    }
}

/// `line 12: raise_exception: System role not supported`.
fn describe(e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| e.kind().to_string());
    match e.line() {
        Some(line) => format!("template line {line}: {detail}"),
        None => detail,
    }
}

/// The environment `transformers` renders chat templates in: blocks trimmed,
/// Python string/dict methods, `raise_exception`, `strftime_now`, a Python-style
/// `tojson`.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters"),
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, _> {
        Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("raise_exception: {msg}"),
        ))
    });
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env.add_filter("tojson", tojson);
    env
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, as `transformers`
/// defines `tojson` (minijinja's own is compact and HTML-escapes).
fn tojson(
    _state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    // Accepted for compatibility; output is always ensure_ascii=False, unsorted.
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("separators")?;
    let indent = match indent {
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(usize::try_from(v)?),
        None => None,
    };
    let json = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(Value::from(out))
}

/// Serialise like Python's `json.dumps` (separators `, ` and `: `, or `,` plus
/// newlines when indenting; floats keep a `.0`; non-ASCII kept).
pub fn python_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or_default();
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else {
                    out.push_str(&format!("{f}"));
                }
            } else {
                out.push_str(&n.to_string());
            }
        }
        J::String(s) => python_string(s, out),
        J::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                python_string(k, out);
                out.push_str(": ");
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime_now("%d %b %Y")`: the current UTC date (templates print today's date).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(fmt, secs)
}

/// The subset of C's `strftime` templates use, for a Unix time in UTC.
pub fn strftime(fmt: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(other) => out.push_str(&format!("%-{other}")),
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 12:34:56 UTC, a Friday.
        let t = 1_721_997_296;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d, %H:%M:%S", t),
            "Friday July 26, 12:34:56"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = json!({"a": [1, 2.0, "é\n"], "b": {}, "c": null});
        let mut s = String::new();
        python_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, 2.0, "é\n"], "b": {}, "c": null}"#);
        let mut s = String::new();
        python_json(&json!({"a": [1]}), Some(2), 0, &mut s);
        assert_eq!(s, "{\n  \"a\": [\n    1\n  ]\n}");
    }

    #[test]
    fn families_follow_architecture_and_vocabulary() {
        let none = |_: &str| false;
        let llama3 = |t: &str| t == "<|start_header_id|>";
        let inst = |t: &str| t == "[INST]";
        type HasToken<'a> = &'a dyn Fn(&str) -> bool;
        let cases: [(&str, HasToken, Family); 6] = [
            ("gemma3", &none, Family::Gemma),
            ("gemma", &none, Family::Gemma),
            ("llama", &llama3, Family::Llama3),
            ("llama", &inst, Family::Mistral),
            ("mistral3", &none, Family::Mistral),
            ("qwen2", &none, Family::ChatMl),
        ];
        for (arch, has, want) in cases {
            assert_eq!(Family::for_architecture(arch, has), want, "{arch}");
        }
    }

    #[test]
    fn mistral_ids_are_nine_alphanumerics() {
        assert_eq!(mistral_call_id("call_ab12cd34e"), "ab12cd34e");
        assert_eq!(mistral_call_id("ab12cd34e"), "ab12cd34e");
        let id = mistral_call_id("call_1");
        assert_eq!(id.len(), 9);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(id, mistral_call_id("call_1"));
    }
}
