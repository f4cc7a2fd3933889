//! Scores: the Lua side of orchestra, and the only module that imports `mlua`.
//!
//! A score is a Lua file that declares a band (`orchestra.band{...}`, `band:add(...)`)
//! and returns a table with `perform(request)`. This module builds a sandboxed Lua VM
//! per score version, exposes the band, its models, sampling and the stage as Lua
//! values, runs requests as coroutines on one conductor thread, reloads the score when
//! its files change, and drives the REPL.
//!
//! ```no_run
//! use orchestra::score::{Conductor, Request, ScoreOptions, ScoreSource};
//! # async fn demo() -> Result<(), orchestra::score::ScoreError> {
//! let conductor = Conductor::start(ScoreSource::file("scores/rehearsal.lua"), ScoreOptions::default()).await?;
//! conductor.watch().await?; // hot reload
//! let answer = conductor.perform(Request::prompt("write a function that reverses a string")).await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `conductor`: the thread that owns the VMs; [`Conductor`] is its handle; reloads.
//! - `vm`: one score in one VM — building it, loading the file, running requests and
//!   REPL lines as metered coroutines.
//! - `meter`: the Lua CPU budget (runaway loops), not counting time waiting for models.
//! - `sandbox`: what shared scores may not do, and the module finder behind `require`;
//!   `prelude.lua` is its Lua half.
//! - `api/`: the Lua objects, one file per topic — `orchestra` (the global), `band`,
//!   `model`, `sampling`, `stage`.
//! - `context`: per-VM state reachable from callbacks; stages shared across reloads.
//! - `request`: [`Request`] and [`Answer`], the plain-Rust faces of a request.
//! - `watch`: the debounced file watcher behind hot reload.
//! - `repl`, `complete`: the REPL engine and tab completion (the terminal around them is
//!   `cli::console`: no terminal code here).
//! - `check`: `orchestra check`. `bench`: `orchestra bench-score`.
//! - `resolve`: model references in scores → files. `error`, `options`, `util`.

mod api;
pub mod bench;
mod check;
mod complete;
mod conductor;
mod context;
mod error;
mod meter;
mod options;
mod repl;
mod request;
mod resolve;
mod sandbox;
mod util;
mod vm;
mod watch;

pub use api::band::STANDARD_SECTIONS;
pub use check::{BandReport, CheckReport, InstrumentReport, check, check_blocking};
pub use conductor::{
    AGENT_CONTEXT, AGENT_PROMPT_TOKENS, ArrangementRecord, Conductor, InstrumentError,
    InstrumentHandle, InstrumentInfo, LeadError, RECENT_ARRANGEMENTS, ReloadEvent, ScoreInfo,
    Window, error_location,
};
pub use error::{Refusal, ScoreError, human_duration};
pub use options::{
    DEFAULT_CPU_LIMIT, DEFAULT_MEMORY_LIMIT, Printer, Sandbox, ScoreOptions, parse_duration,
};
pub use repl::{ReplOutput, ReplSession, describe_reload};
pub use request::{Answer, Request, TextSink, Usage};
pub use resolve::resolve_model;
pub use vm::{EvalOutcome, REHEARSAL_SCORE, ScoreSource};

/// The stdlib modules scores can `require`.
pub fn stdlib_modules() -> Vec<&'static str> {
    sandbox::STDLIB.iter().map(|(name, ..)| *name).collect()
}
