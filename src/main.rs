//! The `orchestra` command: parses arguments, sets up logging, calls the library.

use clap::{Parser, Subcommand};

use orchestra::cli;

/// Several local LLMs playing together as an ensemble.
///
/// Models are GGUF files run by llama.cpp. Each is an instrument in a section (code,
/// creative, analysis, review); a score (a Lua file) says who plays what.
///
/// Start with `orchestra rehearse`: it writes a small synthetic band and plays it,
/// offline. Then `orchestra generate --model FILE.gguf "hello"` runs one model.
#[derive(Debug, Parser)]
#[command(
    name = "orchestra",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log more (RUST_LOG overrides; e.g. RUST_LOG=llama-cpp-2=info shows llama.cpp's log).
    #[arg(long, short = 'v', global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one model on one prompt, streaming the answer.
    ///
    /// Example: orchestra generate --model qwen.gguf --temperature 0 --stats "hello"
    Generate(cli::generate::GenerateArgs),
    /// Describe a GGUF file: architecture, size, quantisation, template, footprint.
    Inspect(cli::inspect::InspectArgs),
    /// Play one request through a score, streaming the answer (`--watch` replays it on every save).
    ///
    /// Example: orchestra play scores/default.lua --trace --narrate "why is the sky blue?"
    Play(cli::play::PlayArgs),
    /// Check scores without running a model: syntax, required fields, models, sections, footprints.
    Check(cli::check::CheckArgs),
    /// A Lua REPL with the score's band and the stdlib loaded (hot reload included).
    Repl(cli::repl::ReplArgs),
    /// Play the offline rehearsal band (synthetic models written on first use).
    Rehearse(cli::rehearse::RehearseArgs),
    /// Measure decode throughput against a bare llama.cpp loop, 1 to 8 streams.
    Bench(cli::bench::BenchArgs),
    /// Measure the Lua runtime against the engine called from Rust (overhead, callbacks, reload).
    BenchScore(cli::score_bench::ScoreBenchArgs),
    /// Serve the score as an OpenAI-compatible API (chat, completions, embeddings, models).
    ///
    /// Model ids: `orchestra` (the score's arrangement), `orchestra/<section>` (the
    /// arrangement with that section soloing) and each instrument by name (that model
    /// alone). Loopback only unless an API key is set.
    ///
    /// Example: orchestra serve scores/default.lua --port 8080
    Serve(cli::serve::ServeArgs),
    /// The status of a running server: instruments, memory, queue, recent requests
    /// (`--json`, or `--brief` for a spoken-style briefing).
    ///
    /// Example: orchestra status --url http://127.0.0.1:8080 --brief
    Status(cli::status::StatusArgs),
    /// Print (and with `--say CMD` speak) the live narration of a running server.
    ///
    /// Example: orchestra listen --say 'espeak-ng --stdin'
    Listen(cli::status::ListenArgs),
    /// Measure an OpenAI-compatible server with concurrent streaming clients (ours, or
    /// `--url` for another such as llama-server): tok/s, time to first token, HTTP cost.
    BenchServe(cli::serve_bench::ServeBenchArgs),
    /// A bounded reliability run: concurrent clients against an in-process server on
    /// loopback (streams, arrangements, disconnects, bad JSON, score edits, evictions),
    /// checking answers, RSS and that nothing is left behind.
    ///
    /// Example: orchestra soak --minutes 1 --clients 16
    Soak(cli::soak::SoakArgs),
    /// Measure answer quality: a benchmark (HumanEval, the routing set) through the
    /// score's model ids or any OpenAI-compatible server; pass@1 with its 95% interval,
    /// latency, tokens and where the time went, per model id.
    ///
    /// Example: orchestra eval scores/pocket.lua --suite humaneval --model orchestra --model coltrane
    #[command(after_help = cli::eval::AFTER_HELP)]
    Eval(cli::eval::EvalArgs),
    /// Download models from Hugging Face: every model a score names, or references.
    ///
    /// References: `hf:org/repo/path/file.gguf`, `hf:org/repo:Q4_K_M` (the file of that
    /// quantisation), with an optional `@revision`. Files go to the standard Hugging Face
    /// cache (HF_HOME, HF_HUB_CACHE), shared with Python's huggingface_hub; interrupted
    /// downloads resume. HF_TOKEN for gated repos, HF_ENDPOINT for mirrors,
    /// HF_HUB_OFFLINE=1 to use the cache only.
    Pull(cli::hub::PullArgs),
    /// List the GGUF models in the cache (and folders) or remove one (`models rm REF`).
    Models(cli::hub::ModelsArgs),
    /// Search the Hugging Face Hub for GGUF repositories.
    Search(cli::hub::SearchArgs),
    /// List (default) or clear the prefix snapshots: the saved KV state of long prompt
    /// prefixes that new sessions, reloaded models and restarts reuse.
    ///
    /// Example: orchestra cache list
    Cache(cli::cache::CacheArgs),
    /// Connect OpenClaw: `openclaw setup` adds the orchestra as its model provider and
    /// installs the orchestra skill.
    Openclaw(cli::openclaw::OpenclawArgs),
    /// Send one spoken command to a running server and print (`--say CMD`: speak) the reply.
    ///
    /// Example: orchestra voice "who's soloing?" --say 'espeak-ng --stdin'
    Voice(cli::voice::VoiceArgs),
    /// Internal: test-load a GGUF file in this short-lived process (the engine runs it
    /// before loading a file it has not seen, so a crash in llama.cpp ends only this).
    #[command(name = "__probe-model", hide = true)]
    ProbeModel(cli::probe::ProbeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose);
    let result = match cli.command {
        Command::Generate(a) => cli::generate::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::BenchScore(a) => cli::score_bench::run(a),
        Command::Play(a) => runtime().block_on(cli::play::run(a)),
        Command::Check(a) => cli::check::run(a),
        // Synchronous on purpose: readline must not run inside a runtime.
        Command::Repl(a) => cli::repl::run(a),
        Command::Rehearse(a) => runtime().block_on(cli::rehearse::run(a)),
        Command::BenchServe(a) => runtime().block_on(cli::serve_bench::run(a)),
        Command::Serve(a) => runtime().block_on(cli::serve::run(a)),
        Command::Soak(a) => runtime().block_on(cli::soak::run(a)),
        Command::Status(a) => runtime().block_on(cli::status::run(a)),
        Command::Listen(a) => runtime().block_on(cli::status::listen(a)),
        Command::Eval(a) => runtime().block_on(cli::eval::run(a)),
        Command::Pull(a) => runtime().block_on(cli::hub::run_pull(a)),
        Command::Models(a) => runtime().block_on(cli::hub::run_models(a)),
        Command::Search(a) => runtime().block_on(cli::hub::run_search(a)),
        Command::Cache(a) => cli::cache::run(a),
        Command::Openclaw(a) => runtime().block_on(cli::openclaw::run(a)),
        Command::Voice(a) => runtime().block_on(cli::voice::run(a)),
        Command::ProbeModel(a) => cli::probe::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
}
