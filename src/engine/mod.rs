//! llama.cpp, through `llama-cpp-2`: loading GGUF models, one worker thread per loaded
//! model with continuous batching, sampling chains, streaming and cancellation. This is
//! the only module that imports `llama_cpp_2`.

mod alloc;
mod backend;
pub mod baseline;
mod cores;
mod error;
mod model;
mod probe;
mod request;
mod snapshot;
mod stream;
mod template;
mod text;
mod tools;
mod weights;
mod worker;

pub use cores::{Cores, Grant, Member};
pub use error::EngineError;
pub use model::{
    KvCache, KvShape, LoadOptions, Model, ModelInfo, chatml, compute_buffer_bytes, default_threads,
    kv_cache_bytes, kv_cache_bytes_as, threads_for,
};
pub use probe::{PROBE_CLEAN_FAILURE, PROBE_COMMAND, probe_child};
pub use request::{
    ChatMessage, DEFAULT_MAX_TOKENS, GenerateRequest, Prompt, SamplingParams, Tool, ToolCall,
    ToolChoice,
};
pub use snapshot::{
    SnapshotFile, SnapshotOptions, clear_snapshots, default_dir as default_snapshot_dir,
    list_snapshots,
};
pub use stream::{
    Completion, FinishReason, Generation, GenerationObserver, PromptSources, StreamItem, Timings,
};
pub use template::{
    ChatTemplate, Family, TemplateInfo, TemplateSource, choose_template, mistral_call_id,
};
pub use text::{Pushed, TextStream};
pub use tools::{
    CallFilter, ToolFormat, json_object_grammar, json_schema_grammar, new_call_id, parse_tool_calls,
};
pub use worker::DecodeStats;
