//! Engine errors: one precise variant per way a load or a generation fails, each
//! message saying what to change.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("model file `{0}` does not exist: check the path, or pull it with `orchestra pull`")]
    MissingFile(PathBuf),
    #[error("`{path}` is not a usable GGUF model: {reason}")]
    BadModel { path: PathBuf, reason: String },
    /// The file would crash llama.cpp (found by validation, or by a probe process that
    /// crashed loading it): refused before it could take the process down.
    #[error("`{path}` is damaged: {reason}; download it again or re-convert it")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "llama.cpp could not load `{0}`: the file may be corrupt or of an unsupported architecture (run with RUST_LOG=llama-cpp-2=info for llama.cpp's reason)"
    )]
    LoadFailed(PathBuf),
    #[error(
        "llama.cpp could not create a context for `{path}` with {n_ctx} tokens: lower `context` or `slots`"
    )]
    ContextFailed { path: PathBuf, n_ctx: u32 },
    #[error(
        "the prompt has {prompt} tokens but model `{model}` allows {limit} per request: shorten the prompt or raise `context`"
    )]
    PromptTooLong {
        model: String,
        prompt: usize,
        limit: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("chat template of `{model}` failed: {reason}")]
    Template { model: String, reason: String },
    #[error("grammar rejected by llama.cpp: check its GBNF syntax (the start rule must be `root`)")]
    Grammar,
    #[error("json schema could not be turned into a grammar: {0}")]
    Schema(String),
    #[error("`tool_choice` names `{name}` but the offered tools are: {offered}")]
    UnknownTool { name: String, offered: String },
    #[error("decoding failed in `{model}`: {reason}")]
    Decode { model: String, reason: String },
    #[error(
        "model `{0}` was loaded for generation, not embeddings: load it with `embeddings = true`"
    )]
    NotAnEmbeddingModel(String),
    #[error("model `{0}` was loaded for embeddings only: it cannot generate text")]
    EmbeddingOnly(String),
    #[error("model `{0}` is unloaded: its worker has stopped")]
    Stopped(String),
    /// A remote instrument (an OpenAI-compatible server) failed; `reason` says how.
    #[error("remote instrument `{model}` failed: {reason}")]
    Remote { model: String, reason: String },
}
