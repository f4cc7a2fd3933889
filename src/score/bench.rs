//! The Lua runtime's costs, measured against calling the engine from Rust in the same
//! run: per-request overhead of a score whose `perform` calls one model, the cost of a
//! per-token Lua callback on decode throughput, and hot-reload latency from a file write
//! to the new score answering. `orchestra bench-score` prints the table.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conductor::Conductor;
use super::options::ScoreOptions;
use super::request::Request;
use super::util::quote;
use super::vm::ScoreSource;
use crate::engine::{GenerateRequest, LoadOptions, SamplingParams};
use crate::events::EventBus;
use crate::stage::{ModelSpec, Stage, StageConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The model (default: the rehearsal band's `coltrane`).
    pub model: Option<PathBuf>,
    /// Where the rehearsal band lives (written when missing).
    pub rehearsal_dir: PathBuf,
    /// Requests per measurement of the per-request overhead.
    pub requests: usize,
    /// Tokens generated per request in the overhead measurement (small, so the model's
    /// time does not drown the overhead).
    pub request_tokens: u32,
    /// Tokens generated in the per-token callback measurement.
    pub stream_tokens: u32,
    /// Repetitions of the throughput runs (the best of each is kept).
    pub repeat: usize,
    /// Reloads measured.
    pub reloads: usize,
    /// CPU threads for llama.cpp (`None`: all cores).
    pub threads: Option<i32>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: None,
            rehearsal_dir: crate::cli::orchestra_home().join("rehearsal"),
            requests: 200,
            request_tokens: 1,
            stream_tokens: 256,
            repeat: 3,
            reloads: 10,
            threads: None,
        }
    }
}

/// Mean and median of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl Stat {
    fn of(mut xs: Vec<f64>) -> Stat {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = xs.len().max(1) as f64;
        Stat {
            mean_ms: xs.iter().sum::<f64>() / n,
            median_ms: xs.get(xs.len() / 2).copied().unwrap_or(0.0),
            max_ms: xs.last().copied().unwrap_or(0.0),
        }
    }
}

/// The measurements.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub requests: usize,
    pub request_tokens: u32,
    pub stream_tokens: u32,
    /// Rust: stage lease + generate + wait, per request.
    pub rust_request: Stat,
    /// A score whose `perform` calls the model once, through the conductor.
    pub lua_request: Stat,
    /// A score whose `perform` returns a constant: the dispatch alone.
    pub lua_empty: Stat,
    /// Lua CPU time per request of the one-model score.
    pub lua_cpu_per_request_ms: f64,
    /// Tokens per second seen by the caller (wall clock, prompt included).
    pub rust_stream_tok_s: f64,
    pub lua_generate_tok_s: f64,
    pub lua_callback_tok_s: f64,
    /// Lua CPU time per token of the callback run, in microseconds.
    pub callback_cpu_us_per_token: f64,
    /// Per-token decode time of the Rust run, in microseconds.
    pub decode_us_per_token: f64,
    /// From writing the score file to the new version answering.
    pub reload: Stat,
    pub reloads: usize,
}

fn model_path(opts: &BenchOptions) -> Result<PathBuf, BoxError> {
    match &opts.model {
        Some(p) => Ok(p.clone()),
        None => {
            let paths = crate::synth::write_rehearsal_band(&opts.rehearsal_dir)?;
            Ok(paths
                .into_iter()
                .next()
                .ok_or("the rehearsal band is empty")?)
        }
    }
}

fn score_text(path: &std::path::Path, body: &str, marker: &str, threads: Option<i32>) -> String {
    let threads = threads
        .map(|t| format!(", threads = {t}"))
        .unwrap_or_default();
    format!(
        "local band = orchestra.band {{ memory = \"4GiB\" }}\n\
         band:add(\"m\", {{ model = {}, section = \"code\", context = 1024, slots = 2{threads}, sampling = {{ temperature = 0 }} }})\n\
         local MARKER = {}\n\
         return {{ perform = function(req)\n{body}\nend }}\n",
        quote(&path.display().to_string()),
        quote(marker),
    )
}

const ONE_MODEL: &str = "  return band.m:generate(req.prompt, { max_tokens = req.max_tokens })";
const EMPTY: &str = "  return MARKER";

/// Runs every measurement. Needs a tokio runtime (multi-threaded is fine).
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BoxError> {
    let path = model_path(opts)?;
    let dir = std::env::temp_dir().join(format!("orchestra-bench-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let prompt = "write a function that reverses a string";
    let load = LoadOptions {
        context: 1024,
        slots: 2,
        threads: opts.threads,
        ..LoadOptions::default()
    };

    // Rust, directly on a stage.
    let stage = Stage::new(StageConfig::default(), EventBus::new());
    stage.add(ModelSpec::new("m", path.clone()).with_options(load.clone()));
    let rust_once = |tokens: u32, ignore_eos: bool| {
        let stage = stage.clone();
        async move {
            let lease = stage.acquire("m").await?;
            let c = lease
                .generate(
                    GenerateRequest::user(prompt)
                        .with_sampling(SamplingParams::greedy())
                        .with_max_tokens(tokens)
                        .with_ignore_eos(ignore_eos),
                )?
                .finish()
                .await?;
            Ok::<_, BoxError>(c)
        }
    };

    // Lua: the same model through a score.
    let options = ScoreOptions::default().with_rehearsal_dir(opts.rehearsal_dir.clone());
    let one_path = dir.join("one_model.lua");
    std::fs::write(&one_path, score_text(&path, ONE_MODEL, "v0", opts.threads))?;
    let one = Conductor::start(ScoreSource::file(&one_path), options.clone()).await?;
    let empty_path = dir.join("empty.lua");
    std::fs::write(&empty_path, score_text(&path, EMPTY, "v0", opts.threads))?;
    let empty = Conductor::start(ScoreSource::file(&empty_path), options.clone()).await?;
    let request = Request {
        max_tokens: Some(opts.request_tokens),
        ..Request::prompt(prompt)
    };

    // Warm up both paths (loads, caches).
    for _ in 0..5 {
        rust_once(opts.request_tokens, false).await?;
        one.perform(request.clone()).await?;
        empty.perform(request.clone()).await?;
    }
    // Interleaved, so drift (thermal, other processes) hits both alike.
    let (mut rust_ms, mut lua_ms, mut empty_ms, mut cpu_ms) = (vec![], vec![], vec![], 0.0);
    for _ in 0..opts.requests {
        let t = Instant::now();
        rust_once(opts.request_tokens, false).await?;
        rust_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let a = one.perform(request.clone()).await?;
        lua_ms.push(t.elapsed().as_secs_f64() * 1e3);
        cpu_ms += a.lua_cpu_ms;
        let t = Instant::now();
        empty.perform(request.clone()).await?;
        empty_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Per-token callback.
    let stream_path = dir.join("stream.lua");
    let stream_body = format!(
        "  local n = 0\n  local opts = {{ max_tokens = {t}, ignore_eos = true }}\n  if req.model == \"callback\" then\n    return band.m:stream(req.prompt, opts, function(piece) n = n + #piece end)\n  end\n  return band.m:generate(req.prompt, opts)",
        t = opts.stream_tokens
    );
    std::fs::write(
        &stream_path,
        score_text(&path, &stream_body, "v0", opts.threads),
    )?;
    let stream = Conductor::start(ScoreSource::file(&stream_path), options.clone()).await?;
    let (mut rust_tok_s, mut gen_tok_s, mut cb_tok_s) = (0.0f64, 0.0f64, 0.0f64);
    let (mut cb_cpu_us, mut decode_us) = (f64::MAX, f64::MAX);
    for _ in 0..opts.repeat.max(1) {
        let t = Instant::now();
        let c = rust_once(opts.stream_tokens, true).await?;
        let wall = t.elapsed().as_secs_f64();
        rust_tok_s = rust_tok_s.max(c.completion_tokens as f64 / wall);
        if c.timings.decode_tok_s > 0.0 {
            decode_us = decode_us.min(1e6 / c.timings.decode_tok_s);
        }
        let plain = Request {
            model: Some("generate".into()),
            ..Request::prompt(prompt)
        };
        let t = Instant::now();
        stream.perform(plain).await?;
        gen_tok_s = gen_tok_s.max(opts.stream_tokens as f64 / t.elapsed().as_secs_f64());
        let with_cb = Request {
            model: Some("callback".into()),
            ..Request::prompt(prompt)
        };
        let t = Instant::now();
        let a = stream.perform(with_cb).await?;
        cb_tok_s = cb_tok_s.max(opts.stream_tokens as f64 / t.elapsed().as_secs_f64());
        cb_cpu_us = cb_cpu_us.min(a.lua_cpu_ms * 1e3 / opts.stream_tokens as f64);
    }

    // Reload: write the file, wait for the new version to answer.
    let reload_path = dir.join("reload.lua");
    std::fs::write(&reload_path, score_text(&path, EMPTY, "v0", opts.threads))?;
    let live = Conductor::start(ScoreSource::file(&reload_path), options.clone()).await?;
    live.watch().await?;
    let mut reload_ms = Vec::new();
    for i in 1..=opts.reloads {
        let marker = format!("v{i}");
        // Let the watcher settle between saves so each save is one reload.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t = Instant::now();
        std::fs::write(
            &reload_path,
            score_text(&path, EMPTY, &marker, opts.threads),
        )?;
        let deadline = t + Duration::from_secs(10);
        loop {
            let a = live.perform(Request::prompt("which version?")).await?;
            if a.text == marker {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("reload {i} did not answer within 10 s").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reload_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);

    Ok(BenchReport {
        model: path.display().to_string(),
        requests: opts.requests,
        request_tokens: opts.request_tokens,
        stream_tokens: opts.stream_tokens,
        rust_request: Stat::of(rust_ms),
        lua_request: Stat::of(lua_ms),
        lua_empty: Stat::of(empty_ms),
        lua_cpu_per_request_ms: cpu_ms / opts.requests.max(1) as f64,
        rust_stream_tok_s: rust_tok_s,
        lua_generate_tok_s: gen_tok_s,
        lua_callback_tok_s: cb_tok_s,
        callback_cpu_us_per_token: cb_cpu_us,
        decode_us_per_token: decode_us,
        reload: Stat::of(reload_ms),
        reloads: opts.reloads,
    })
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rust_request;
        let l = &self.lua_request;
        writeln!(f, "model: {}", self.model)?;
        writeln!(
            f,
            "per request: {} requests of {} token(s), interleaved",
            self.requests, self.request_tokens
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| measurement                         |     median |       mean |   vs Rust |"
        )?;
        writeln!(
            f,
            "|-------------------------------------|------------|------------|-----------|"
        )?;
        writeln!(
            f,
            "| Rust: lease + generate + finish     | {:7.3} ms | {:7.3} ms |     1.00x |",
            r.median_ms, r.mean_ms
        )?;
        writeln!(
            f,
            "| score: perform calls one model      | {:7.3} ms | {:7.3} ms | {:8.2}x |",
            l.median_ms,
            l.mean_ms,
            l.median_ms / r.median_ms
        )?;
        writeln!(
            f,
            "| score: perform returns a constant   | {:7.3} ms | {:7.3} ms |         - |",
            self.lua_empty.median_ms, self.lua_empty.mean_ms
        )?;
        writeln!(
            f,
            "| Lua overhead per request (median)   | {:7.3} ms |            |           |",
            l.median_ms - r.median_ms
        )?;
        writeln!(
            f,
            "| Lua CPU per request (inside the VM) | {:7.3} ms |            |           |",
            self.lua_cpu_per_request_ms
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| decode, {:4} tokens                 |   tok/s (wall) |   vs Rust |",
            self.stream_tokens
        )?;
        writeln!(
            f,
            "|-------------------------------------|----------------|-----------|"
        )?;
        writeln!(
            f,
            "| Rust: generate + finish             | {:14.1} |     1.00x |",
            self.rust_stream_tok_s
        )?;
        writeln!(
            f,
            "| score: generate                     | {:14.1} | {:8.3}x |",
            self.lua_generate_tok_s,
            self.lua_generate_tok_s / self.rust_stream_tok_s
        )?;
        writeln!(
            f,
            "| score: stream, Lua callback / token | {:14.1} | {:8.3}x |",
            self.lua_callback_tok_s,
            self.lua_callback_tok_s / self.rust_stream_tok_s
        )?;
        writeln!(
            f,
            "callback cost: {:.2} µs of Lua CPU per token = {:.2}% of the {:.0} µs a token takes to decode",
            self.callback_cpu_us_per_token,
            100.0 * self.callback_cpu_us_per_token / self.decode_us_per_token,
            self.decode_us_per_token
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "reload (file write -> new version answers), {} saves: median {:.1} ms, mean {:.1} ms, max {:.1} ms",
            self.reloads, self.reload.median_ms, self.reload.mean_ms, self.reload.max_ms
        )
    }
}
