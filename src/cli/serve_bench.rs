//! `orchestra bench-serve`: concurrent streaming HTTP clients against an
//! OpenAI-compatible server — our own (started in-process on the synthetic benchmark
//! model) or any other (`--url`, e.g. llama-server on the same model) — printing
//! aggregate decode tokens/s and time to first token p50/p99 per client count, and the
//! cost of the HTTP layer against the same request made in-process.
//!
//! The client side ([`run_clients`]) is plain HTTP and knows nothing of orchestra, so
//! the same numbers can be taken from llama.cpp's server in the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::engine::{GenerateRequest, SamplingParams};
use crate::score::{Conductor, ScoreOptions, ScoreSource};
use crate::server::{AppState, ServeConfig};

#[derive(Debug, Clone, Args)]
pub struct ServeBenchArgs {
    /// Measure this server (its `/v1` base URL) instead of starting our own.
    #[arg(long)]
    pub url: Option<String>,
    /// The `model` id clients send (default: the in-process server's instrument).
    #[arg(long, default_value = "bench")]
    pub model: String,
    /// Bearer key for `--url`.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub clients: Vec<usize>,
    /// Tokens each request generates (`ignore_eos`, so every request makes exactly this many).
    #[arg(long, default_value_t = 128)]
    pub tokens: u32,
    /// Requests per client at each count.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The in-process server plays this GGUF instead of the synthetic ~150M q8_0 model.
    #[arg(long = "model-file")]
    pub model_file: Option<PathBuf>,
    /// Sequential 1-token requests used to measure the HTTP layer's overhead.
    #[arg(long, default_value_t = 40)]
    pub overhead_requests: usize,
}

/// What one client count measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub clients: usize,
    pub requests: usize,
    pub tokens: usize,
    pub wall: Duration,
    /// Time to first token of every request, sorted.
    pub ttft: Vec<Duration>,
}

impl LoadResult {
    pub fn tok_s(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn ttft_pct(&self, p: f64) -> Duration {
        percentile(&self.ttft, p)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One streaming chat request; returns (time to first token, completion tokens).
pub async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    key: Option<&str>,
    tokens: u32,
) -> anyhow::Result<(Duration, usize)> {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Tell me a long story about a band." }],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let started = Instant::now();
    let mut req = http.post(format!("{url}/chat/completions")).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await?.error_for_status()?;
    let mut bytes = res.bytes_stream();
    let mut buf = String::new();
    let mut first = None;
    let mut pieces = 0usize;
    let mut usage = None;
    while let Some(chunk) = bytes.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(n) = v
                .pointer("/usage/completion_tokens")
                .and_then(Value::as_u64)
            {
                usage = Some(n as usize);
            }
            let content = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !content.is_empty() {
                pieces += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    Ok((
        first.unwrap_or_else(|| started.elapsed()),
        usage.unwrap_or(pieces),
    ))
}

/// `clients` concurrent clients, each making `rounds` streaming requests.
pub async fn run_clients(
    url: &str,
    model: &str,
    key: Option<&str>,
    clients: usize,
    rounds: usize,
    tokens: u32,
) -> anyhow::Result<LoadResult> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let runs = (0..clients).map(|_| {
        let http = http.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..rounds {
                out.push(stream_once(&http, url, model, key, tokens).await?);
            }
            anyhow::Ok(out)
        }
    });
    let results = futures::future::try_join_all(runs).await?;
    let wall = started.elapsed();
    let mut ttft: Vec<Duration> = results.iter().flatten().map(|(t, _)| *t).collect();
    ttft.sort();
    Ok(LoadResult {
        clients,
        requests: ttft.len(),
        tokens: results.iter().flatten().map(|(_, n)| n).sum(),
        wall,
        ttft,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_score(model: &std::path::Path, slots: usize) -> anyhow::Result<PathBuf> {
    let dir = crate::home::orchestra_home().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench-serve.lua");
    std::fs::write(
        &path,
        format!(
            "-- Written by `orchestra bench-serve`: one instrument, one slot per client.\n\
             local band = orchestra.band {{ memory = \"8GiB\" }}\n\
             band:add(\"bench\", {{ model = {:?}, section = \"analysis\", context = 512, slots = {slots} }})\n\
             return {{ perform = function(req) return band.bench:chat(req) end }}\n",
            model.display().to_string()
        ),
    )?;
    Ok(path)
}

pub async fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let mut own = None;
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let model = match &args.model_file {
                Some(p) => p.clone(),
                None => super::bench::bench_model()?,
            };
            let score = bench_score(&model, max_clients)?;
            let options = ScoreOptions::default().with_printer(std::sync::Arc::new(|_: &str| {}));
            let conductor = Conductor::start(ScoreSource::file(&score), options)
                .await
                .context("loading the benchmark score")?;
            let config = ServeConfig {
                max_in_flight: max_clients,
                max_queue: max_clients * 4,
                ..ServeConfig::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let state = AppState::with_conductor(&config, conductor.clone());
            tokio::spawn(async move {
                let _ =
                    crate::server::serve(listener, state, &config, std::future::pending()).await;
            });
            own = Some(conductor);
            format!("http://{addr}/v1")
        }
    };
    let key = args.api_key.as_deref().filter(|_| args.url.is_some());
    eprintln!("warming up {url} ({}) …", args.model);
    stream_once(&reqwest::Client::new(), &url, &args.model, key, 8).await?;

    println!("| clients | requests | aggregate tok/s | TTFT p50 ms | TTFT p99 ms | wall s |");
    println!("|---|---|---|---|---|---|");
    for &n in &args.clients {
        let r = run_clients(&url, &args.model, key, n, args.rounds, args.tokens).await?;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.clients,
            r.requests,
            r.tok_s(),
            ms(r.ttft_pct(0.5)),
            ms(r.ttft_pct(0.99)),
            r.wall.as_secs_f64()
        );
    }

    if let Some(conductor) = own {
        // The HTTP layer's cost: the same 1-token request over HTTP and in-process.
        let handle = conductor
            .instrument(&args.model)
            .await?
            .context("the benchmark instrument")?;
        let http = reqwest::Client::new();
        let mut over_http = Vec::new();
        let mut in_process = Vec::new();
        for _ in 0..args.overhead_requests {
            let t = Instant::now();
            let res: Value = http
                .post(format!("{url}/chat/completions"))
                .json(
                    &json!({ "model": args.model, "max_tokens": 1, "temperature": 0,
                    "messages": [{ "role": "user", "content": "hi" }] }),
                )
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(
                res["usage"]["completion_tokens"] == 1,
                "unexpected answer {res}"
            );
            over_http.push(t.elapsed());
            let t = Instant::now();
            let lease = handle.stage.acquire(&handle.name).await?;
            let request = GenerateRequest::chat(vec![crate::engine::ChatMessage::user("hi")])
                .with_sampling(SamplingParams::greedy())
                .with_max_tokens(1);
            lease.generate(request)?.finish().await?;
            in_process.push(t.elapsed());
        }
        over_http.sort();
        in_process.sort();
        let (h, p) = (percentile(&over_http, 0.5), percentile(&in_process, 0.5));
        println!();
        println!(
            "HTTP layer: {:.3} ms per request (median 1-token request {:.3} ms over HTTP vs {:.3} ms in-process, {} each)",
            ms(h) - ms(p),
            ms(h),
            ms(p),
            args.overhead_requests
        );
    }
    println!();
    println!(
        "reproduce: orchestra bench-serve --clients {} --tokens {}{}",
        args.clients
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.tokens,
        args.url
            .as_ref()
            .map(|u| format!(" --url {u} --model {}", args.model))
            .unwrap_or_default()
    );
    Ok(())
}
