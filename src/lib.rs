//! # orchestra
//!
//! Several local LLMs playing together as an ensemble.
//!
//! # Layout
//! - [`gguf`]: reads GGUF headers (`inspect`, the stage, the hub) and validates a file
//!   before llama.cpp sees it.
//! - [`synth`]: writes GGUF files — synthetic llama models for tests, rehearsals and
//!   benchmarks.
//! - [`engine`]: llama.cpp. Model loading, one worker thread per loaded model running
//!   continuous batching, sampling, streaming, cancellation. The only module that
//!   imports `llama_cpp_2`.
//! - [`stage`]: which models are resident under a memory budget (footprints, LRU
//!   eviction, pinning, idle unload, shared loads).
//! - [`remote`]: remote instruments — any OpenAI-compatible server played like a local
//!   model (streaming, timings, retries before the first token, health checks).
//! - [`hub`]: model references (`hf:` and local paths) and Hugging Face downloads.
//! - [`score`]: the Lua side — the only module that imports `mlua`.
//! - [`events`]: the event bus every part reports to (numbered, tagged with the request
//!   and score version, resumable).
//! - [`metrics`]: Prometheus counters, updated where things happen.
//! - [`narrate`]: events as short spoken-style lines, and text-to-speech.
//! - [`trace`]: the arrangement trace rendered for people, and the [`trace::Narrator`]
//!   (shared by `play` and `serve`).
//! - [`status`]: the picture of a running orchestra (`/api/status`, `orchestra status`)
//!   and its spoken briefing.
//! - [`voice`]: spoken commands ("who's soloing?") matched to intents, and their
//!   one-sentence replies; `server` carries them out.
//! - [`server`]: `orchestra serve` — the OpenAI-compatible HTTP API (axum); speaks HTTP
//!   only, on the same library calls the CLI makes.
//! - [`eval`]: `orchestra eval` — benchmarks (HumanEval, the routing set) through a
//!   score's model ids or any OpenAI-compatible server; generated code runs only in a
//!   limited child process ([`eval::Sandbox`]).
//! - [`home`]: `$ORCHESTRA_HOME`, where orchestra keeps the files it writes itself.
//! - [`cli`]: the command implementations behind the thin `main.rs` (no other module
//!   imports it).

pub mod cli;
pub mod engine;
pub mod eval;
pub mod events;
pub mod gguf;
pub mod home;
pub mod hub;
pub mod metrics;
pub mod narrate;
pub mod remote;
pub mod score;
pub mod server;
pub mod stage;
pub mod status;
pub mod synth;
pub mod trace;
pub mod voice;
