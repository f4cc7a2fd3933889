//! `orchestra bench-score`: what the Lua runtime costs, against calling the engine from
//! Rust in the same run — per-request overhead, a per-token Lua callback's share of
//! decode throughput, and reload latency from a file write to the new score answering.

use clap::Args;

use crate::score::bench::{self, BenchOptions};

#[derive(Debug, Clone, Args)]
pub struct ScoreBenchArgs {
    /// Requests per overhead measurement.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Tokens generated in the per-token callback measurement.
    #[arg(long, default_value_t = 256)]
    pub tokens: u32,
    /// Reloads measured.
    #[arg(long, default_value_t = 10)]
    pub reloads: usize,
    /// Repetitions of the throughput runs (the best is kept).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// The model of the per-request and reload measurements (default: the rehearsal
    /// band's tiny `coltrane`, so the model's own time does not drown the overhead): a
    /// GGUF file or a reference as in a score (`hf:ORG/REPO/FILE.gguf`).
    #[arg(long, value_name = "FILE|REF")]
    pub model: Option<String>,
    /// The model of the per-token callback measurement (default: the ~150M-parameter
    /// q8_0 benchmark model of `orchestra bench`, a realistic decode speed).
    #[arg(long, value_name = "FILE|REF")]
    pub stream_model: Option<String>,
    /// Measure the per-token callback on the tiny rehearsal model too (a token takes
    /// microseconds there, the worst case for per-token work).
    #[arg(long)]
    pub tiny: bool,
    /// CPU threads for llama.cpp (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
    /// Print the measurements as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScoreBenchArgs) -> anyhow::Result<()> {
    let opts = BenchOptions {
        model: args
            .model
            .as_deref()
            .map(|m| super::model_file(m, args.pull))
            .transpose()?,
        stream_model: match (&args.stream_model, args.tiny) {
            (Some(m), _) => Some(super::model_file(m, args.pull)?),
            (None, true) => None,
            (None, false) => Some(super::bench::bench_model()?),
        },
        requests: args.requests,
        stream_tokens: args.tokens,
        reloads: args.reloads,
        repeat: args.repeat,
        threads: args.threads,
        rehearsal_dir: crate::home::orchestra_home().join("rehearsal"),
        ..BenchOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(bench::run(&opts))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
        println!();
        println!(
            "reproduce: cargo run --release -- bench-score --requests {} --tokens {} --reloads {}",
            args.requests, args.tokens, args.reloads
        );
    }
    Ok(())
}
