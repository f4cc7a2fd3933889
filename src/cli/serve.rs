//! `orchestra serve SCORE`: loads the score, then serves it as an OpenAI-compatible API
//! until Ctrl-C or SIGTERM, which stop accepting connections and let requests in flight
//! finish.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::play::LimitArgs;
use crate::score::{Conductor, ScoreSource, describe_reload};
use crate::server::{AppState, ServeConfig, check_bind};
use crate::stage::{human_bytes, parse_bytes};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The score: a Lua file that returns `{ perform = function(req) ... end }`.
    pub score: PathBuf,
    /// Address to listen on. Anything but loopback needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Clients must send `Authorization: Bearer KEY`. Required to listen beyond loopback.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests playing at once; more wait in the queue.
    #[arg(long, default_value_t = 16)]
    pub max_in_flight: usize,
    /// Requests waiting for a turn; more are refused with 429 and Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body (413 past it).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub body_limit: u64,
    /// Most messages one chat request may carry (400 past it).
    #[arg(long, default_value_t = 1024)]
    pub max_messages: usize,
    /// Do not reload the score when it (or a file it requires) is saved.
    #[arg(long)]
    pub no_watch: bool,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Ctrl-C, or SIGTERM (what `kill`, systemd and container runtimes send to stop a
/// service).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_bytes(s).ok_or_else(|| format!("`{s}` is not a size: write it like 8MiB"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    super::limit_malloc_arenas();
    check_bind(args.host, args.api_key.as_deref()).map_err(anyhow::Error::msg)?;
    let refs = super::play::hub_models_to_fetch(&args.score, &args.limits.models)?;
    if !refs.is_empty() {
        super::hub::ensure_models(&refs, args.pull.into()).await?;
    }
    let config = ServeConfig {
        max_in_flight: args.max_in_flight,
        max_queue: args.max_queue,
        body_limit: args.body_limit as usize,
        api_key: args.api_key.clone(),
        max_messages: args.max_messages,
    };
    // Listen first: `/health` answers 503 while the score loads.
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another server using the port? pick one with --port")
    })?;
    let local = listener.local_addr()?;
    let state = AppState::new(&config);
    let shutdown = async {
        stop_signal().await;
        eprintln!("stopping: finishing the requests in flight (Ctrl-C again to quit now)");
        tokio::spawn(async {
            stop_signal().await;
            std::process::exit(130);
        });
    };
    let server = tokio::spawn({
        let state = state.clone();
        let config = config.clone();
        async move { crate::server::serve(listener, state, &config, shutdown).await }
    });

    let conductor = Conductor::start(ScoreSource::file(&args.score), args.limits.options())
        .await
        .with_context(|| format!("loading score `{}`", args.score.display()))?;
    super::play::check_overrides(&conductor, &args.limits.models).await?;
    if !args.no_watch {
        conductor.watch().await?;
        let mut reloads = conductor.reloads();
        tokio::spawn(async move {
            while let Ok(r) = reloads.recv().await {
                eprintln!("{}", describe_reload(&r));
            }
        });
    }
    state.set_conductor(conductor.clone());
    let info = conductor.info().await?;
    let url = format!("http://{local}/v1");
    println!("orchestra is serving `{}` at {url}", info.name);
    println!("stage page: http://{local}/ (status: orchestra status --url http://{local})");
    let mut ids = vec![crate::server::ORCHESTRA.to_string()];
    for s in &info.sections {
        if info
            .instruments
            .iter()
            .any(|i| &i.section == s && !i.embeddings)
        {
            ids.push(format!("orchestra/{s}"));
        }
    }
    ids.extend(info.instruments.iter().map(|i| i.name.clone()));
    println!("models: {}", ids.join(", "));
    if info.budget > 0 {
        println!("memory budget: {}", human_bytes(info.budget));
    }
    println!(
        "limits: {} in flight, {} queued; {}",
        config.max_in_flight,
        config.max_queue,
        if config.api_key.is_some() {
            "API key required"
        } else {
            "no API key (loopback only)"
        }
    );
    println!(
        "try: curl {url}/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"orchestra\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
    );
    server.await.context("the server task failed")??;
    Ok(())
}
