//! llama.cpp, through `llama-cpp-2`: loading GGUF models, one worker thread per loaded
//! model with continuous batching, sampling chains, streaming and cancellation. This is
//! the only module that imports `llama_cpp_2`.

mod backend;
pub mod baseline;
mod error;
mod model;
mod request;
mod stream;
mod template;
mod text;
mod tools;
mod worker;

pub use error::EngineError;
pub use model::{
    LoadOptions, Model, ModelInfo, chatml, compute_buffer_bytes, default_threads, kv_cache_bytes,
    threads_for,
};
pub use request::{
    ChatMessage, DEFAULT_MAX_TOKENS, GenerateRequest, Prompt, SamplingParams, Tool, ToolCall,
    ToolChoice,
};
pub use stream::{Completion, FinishReason, Generation, GenerationObserver, StreamItem, Timings};
pub use template::{
    ChatTemplate, Family, TemplateInfo, TemplateSource, choose_template, mistral_call_id,
};
pub use text::{Pushed, TextStream};
pub use tools::{
    CallFilter, ToolFormat, json_object_grammar, json_schema_grammar, new_call_id, parse_tool_calls,
};
