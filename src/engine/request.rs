//! What a caller asks of a model: the prompt, the sampling chain and the limits.
//! One constructor ([`GenerateRequest::chat`] / [`GenerateRequest::raw`]) used by every
//! path — CLI, Lua and HTTP — so defaults live in exactly one place.

use serde::{Deserialize, Serialize};

/// One chat message, as OpenAI clients send them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// The text (empty for an assistant message that only calls tools).
    #[serde(default)]
    pub content: String,
    /// Tools an assistant message called (rendered back through the template).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a `tool` message: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A tool call a model made: `arguments` is JSON text, as OpenAI sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A function the model may call (OpenAI's `tools[].function`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// Tools are not offered for this turn.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this function.
    Function(String),
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The text a model continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Rendered with the model's own chat template (a fallback when it has none).
    Chat(Vec<ChatMessage>),
    /// Sent to the tokenizer as is (special tokens such as `<|im_start|>` are parsed).
    Raw(String),
}

/// The sampling chain. `temperature <= 0` means greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the repeat penalty.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: i32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// `None` picks a random seed per request.
    pub seed: Option<u32>,
    /// A GBNF grammar (root rule `root`) that constrains the output.
    pub grammar: Option<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            grammar: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Functions the model may call (rendered by the chat template; calls are parsed
    /// from the answer into [`Completion::tool_calls`](super::Completion)).
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Whether the model may call several tools in one answer.
    #[serde(default = "yes")]
    pub parallel_tool_calls: bool,
}

fn yes() -> bool {
    true
}

/// Default generation length when a caller says nothing.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

impl GenerateRequest {
    /// A chat request with default sampling.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Self::new(Prompt::Chat(messages))
    }

    /// One user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::chat(vec![ChatMessage::user(text)])
    }

    /// A raw prompt with default sampling.
    pub fn raw(text: impl Into<String>) -> Self {
        Self::new(Prompt::Raw(text.into()))
    }

    fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: DEFAULT_MAX_TOKENS,
            stop: Vec::new(),
            ignore_eos: false,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
        }
    }

    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    pub fn with_ignore_eos(mut self, ignore_eos: bool) -> Self {
        self.ignore_eos = ignore_eos;
        self
    }

    pub fn with_tools(mut self, tools: Vec<Tool>, choice: ToolChoice) -> Self {
        self.tools = tools;
        self.tool_choice = choice;
        self
    }
}
