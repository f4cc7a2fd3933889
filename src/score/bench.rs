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
    /// The model of the per-request and reload measurements (default: the rehearsal
    /// band's `coltrane`, tiny, so the model's time does not drown the overhead).
    pub model: Option<PathBuf>,
    /// The model of the per-token callback measurement (default: `model`). Use a model
    /// of realistic size: on a tiny one a token takes microseconds and any per-token
    /// work looks large.
    pub stream_model: Option<PathBuf>,
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
            stream_model: None,
            rehearsal_dir: crate::home::orchestra_home().join("rehearsal"),
            requests: 200,
            request_tokens: 1,
            stream_tokens: 256,
            repeat: 5,
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
    pub stream_model: String,
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
    /// (tokens per second seen by the caller, prompt included; the engine's decode
    /// tokens per second) — best of `repeat`.
    pub rust_stream: (f64, f64),
    pub lua_generate: (f64, f64),
    pub lua_callback: (f64, f64),
    /// Lua CPU time per token of the callback run (the callback and the coroutine
    /// switches around it), in microseconds.
    pub callback_cpu_us_per_token: f64,
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
    // Removed when dropped, on the error paths too.
    let scratch = tempfile::Builder::new()
        .prefix("orchestra-bench-score-")
        .tempdir()?;
    let dir = scratch.path();
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

    // Per-token callback, on its own model.
    let stream_path_model = opts.stream_model.clone().unwrap_or_else(|| path.clone());
    let stream_stage = Stage::new(StageConfig::default(), EventBus::new());
    stream_stage.add(ModelSpec::new("m", stream_path_model.clone()).with_options(load.clone()));
    let rust_stream = || {
        let stage = stream_stage.clone();
        async move {
            let lease = stage.acquire("m").await?;
            let c = lease
                .generate(
                    GenerateRequest::user(prompt)
                        .with_sampling(SamplingParams::greedy())
                        .with_max_tokens(opts.stream_tokens)
                        .with_ignore_eos(true),
                )?
                .finish()
                .await?;
            Ok::<_, BoxError>(c)
        }
    };
    let stream_path = dir.join("stream.lua");
    let stream_body = format!(
        "  local n = 0\n  local opts = {{ max_tokens = {t}, ignore_eos = true }}\n  if req.model == \"callback\" then\n    local _, d = band.m:stream(req.prompt, opts, function(piece) n = n + #piece end)\n    return {{ decode = d.timings.decode_tok_s, tokens = d.completion_tokens }}\n  end\n  local _, d = band.m:generate(req.prompt, opts)\n  return {{ decode = d.timings.decode_tok_s, tokens = d.completion_tokens }}",
        t = opts.stream_tokens
    );
    std::fs::write(
        &stream_path,
        score_text(&stream_path_model, &stream_body, "v0", opts.threads),
    )?;
    let stream = Conductor::start(ScoreSource::file(&stream_path), options.clone()).await?;
    rust_stream().await?;
    stream.perform(Request::prompt(prompt)).await?;
    // Best of `repeat`, interleaved: (wall tok/s, engine decode tok/s) per variant.
    let mut rust = (0.0f64, 0.0f64);
    let mut plain = (0.0f64, 0.0f64);
    let mut callback = (0.0f64, 0.0f64);
    let mut cb_cpu_us = f64::MAX;
    let best = |acc: &mut (f64, f64), wall: f64, decode: f64| {
        acc.0 = acc.0.max(wall);
        acc.1 = acc.1.max(decode);
    };
    for _ in 0..opts.repeat.max(1) {
        let t = Instant::now();
        let c = rust_stream().await?;
        let wall = c.completion_tokens as f64 / t.elapsed().as_secs_f64();
        best(&mut rust, wall, c.timings.decode_tok_s);
        for (variant, acc) in [("generate", &mut plain), ("callback", &mut callback)] {
            let req = Request {
                model: Some(variant.into()),
                ..Request::prompt(prompt)
            };
            let t = Instant::now();
            let a = stream.perform(req).await?;
            let tokens = a.data["tokens"].as_f64().unwrap_or(0.0);
            best(
                acc,
                tokens / t.elapsed().as_secs_f64(),
                a.data["decode"].as_f64().unwrap_or(0.0),
            );
            if variant == "callback" && tokens > 0.0 {
                cb_cpu_us = cb_cpu_us.min(a.lua_cpu_ms * 1e3 / tokens);
            }
        }
    }
    drop(stream);

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

    Ok(BenchReport {
        model: path.display().to_string(),
        stream_model: stream_path_model.display().to_string(),
        requests: opts.requests,
        request_tokens: opts.request_tokens,
        stream_tokens: opts.stream_tokens,
        rust_request: Stat::of(rust_ms),
        lua_request: Stat::of(lua_ms),
        lua_empty: Stat::of(empty_ms),
        lua_cpu_per_request_ms: cpu_ms / opts.requests.max(1) as f64,
        rust_stream: rust,
        lua_generate: plain,
        lua_callback: callback,
        callback_cpu_us_per_token: cb_cpu_us,
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
        writeln!(f, "model: {}", self.stream_model)?;
        writeln!(
            f,
            "| {:4} tokens                         | tok/s (wall) | decode tok/s | decode vs Rust |",
            self.stream_tokens
        )?;
        writeln!(
            f,
            "|-------------------------------------|--------------|--------------|----------------|"
        )?;
        let (_, rd) = self.rust_stream;
        for (label, (w, d)) in [
            ("Rust: generate + finish            ", self.rust_stream),
            ("score: generate                    ", self.lua_generate),
            ("score: stream, Lua callback / token", self.lua_callback),
        ] {
            writeln!(f, "| {label} | {w:12.1} | {d:12.1} | {:13.3}x |", d / rd)?;
        }
        let (_, cd) = self.lua_callback;
        writeln!(
            f,
            "callback cost: {:.2} µs of Lua CPU per token = {:.2}% of the {:.0} µs a token takes to decode",
            self.callback_cpu_us_per_token,
            100.0 * self.callback_cpu_us_per_token * cd / 1e6,
            1e6 / cd.max(1e-9)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "reload (file write -> new version answers), {} saves: median {:.1} ms, mean {:.1} ms, max {:.1} ms",
            self.reloads, self.reload.median_ms, self.reload.mean_ms, self.reload.max_ms
        )
    }
}
