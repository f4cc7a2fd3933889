//! `orchestra play SCORE "prompt"`: one request through a score, the answer streamed
//! to stdout; `--watch` keeps the score live and replays the request on every save.
//! Also the score-running half of `orchestra rehearse` ([`rehearse`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::score::{
    Conductor, Request, Sandbox, ScoreOptions, ScoreSource, describe_reload, parse_duration,
};
use crate::stage::parse_bytes;

/// The limits, sandbox and model-override flags every command that runs a score takes.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Trust this score: the full Lua standard library (programs, any file, native
    /// modules). Shared scores run without it.
    #[arg(long)]
    pub allow_unsafe: bool,
    /// Memory the score's Lua VM may use (models are not counted).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub memory_limit: u64,
    /// Lua CPU time one request may use before it is stopped as a runaway; time
    /// waiting for models does not count.
    #[arg(long, default_value = "5s", value_parser = parse_time)]
    pub cpu_limit: Duration,
    /// Wall-clock limit of one request, waiting for models included (default: none).
    #[arg(long, value_parser = parse_time)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub models: super::ModelFileArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_bytes(s).ok_or_else(|| format!("`{s}` is not a size: write it like 256MiB or 1GiB"))
}

fn parse_time(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration: write it like 5s, 500ms or 2m"))
}

impl LimitArgs {
    /// Score options from the flags.
    pub fn options(&self) -> ScoreOptions {
        let options = ScoreOptions::default()
            .with_sandbox(if self.allow_unsafe {
                Sandbox::Trusted
            } else {
                Sandbox::Shared
            })
            .with_memory_limit(self.memory_limit as usize)
            .with_cpu_limit(self.cpu_limit)
            .with_request_timeout(self.timeout);
        self.models.apply(options)
    }
}

#[derive(Debug, Clone, Args)]
pub struct PlayArgs {
    /// The score: a Lua file that returns `{ perform = function(req) ... end }`.
    pub score: PathBuf,
    /// The request (the user's message).
    pub prompt: String,
    /// Keep running: reload the score whenever it (or a file it requires) is saved, and
    /// play the request again. Ctrl-C stops.
    #[arg(long)]
    pub watch: bool,
    /// Print the answer as one JSON document on stdout (text, returned data with the
    /// trace, version, timings) instead of streaming it.
    #[arg(long)]
    pub json: bool,
    /// Show the events of the request (routing, generations, what the score emits) on
    /// stderr, one JSON object per line (the shape of `/api/events`).
    #[arg(long)]
    pub events: bool,
    /// After the answer, print the arrangement trace: who routed it and why, who comped,
    /// who soloed, each review verdict, tempo and swing per instrument (`--trace=json`
    /// prints it as one JSON document on stdout and streams the answer on stderr, so
    /// `play --trace=json SCORE "..." | jq` works; the `=` is needed, so `--trace "a
    /// prompt"` keeps its prompt).
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "text",
        value_parser = ["text", "json"]
    )]
    pub trace: Option<String>,
    /// Print short spoken-style lines of what the band does under the answer
    /// ("Mingus is reviewing Coltrane's solo").
    #[arg(long)]
    pub narrate: bool,
    /// Speak each narration line with a text-to-speech command (implies --narrate): the
    /// line goes to its stdin, or replaces `{}` — e.g. `--say "espeak-ng --stdin"`,
    /// `--say "say {}"`, `--say "piper --model voice.onnx --output-raw | aplay -r 22050 -f S16_LE"`.
    #[arg(long, value_name = "CMD")]
    pub say: Option<String>,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How a request's extras are shown.
#[derive(Debug, Clone, Default)]
pub struct Show {
    pub json: bool,
    pub events: bool,
    pub trace: Option<String>,
    pub narrate: bool,
    pub say: Option<String>,
}

impl PlayArgs {
    fn show(&self) -> Show {
        Show {
            json: self.json,
            events: self.events,
            trace: self.trace.clone(),
            narrate: self.narrate || self.say.is_some(),
            say: self.say.clone(),
        }
    }
}

/// Plays one request: streamed text to stdout, events to stderr when asked.
async fn play_once(conductor: &Conductor, prompt: &str, show: &Show) -> anyhow::Result<()> {
    let (json, events) = (show.json, show.events);
    let narrator = show.narrate.then(|| {
        crate::trace::Narrator::start(
            conductor.events(),
            show.say.clone().map(crate::narrate::Speaker::new),
            None,
        )
    });
    let mut bus = conductor.events().subscribe();
    let (stop_events, mut events_stopped) = tokio::sync::oneshot::channel::<()>();
    let show_events = events.then(|| {
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::{RecvError, TryRecvError};
            let mut stopping = false;
            loop {
                let e = if stopping {
                    // Stopped: print what was emitted before, then end.
                    match bus.try_recv() {
                        Ok(e) => e,
                        Err(TryRecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        biased;
                        r = bus.recv() => match r {
                            Ok(e) => e,
                            Err(RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        },
                        _ = &mut events_stopped => {
                            stopping = true;
                            continue;
                        }
                    }
                };
                // One JSON object per line (the same shape as `/api/events`), so
                // `--events 2> events.jsonl` can be read by any tool.
                let line = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
                eprintln!("{line}");
            }
        })
    });
    // stdout carries one thing: the answer, or one JSON document when JSON is asked
    // for (`--json`: the answer with its data; `--trace=json`: the trace), so it pipes
    // into `jq`. With `--trace=json` alone the answer still streams, on stderr.
    let trace_json = show.trace.as_deref() == Some("json");
    let answer_to_stderr = trace_json && !json;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        let mut streamed = false;
        while let Some(piece) = rx.recv().await {
            if answer_to_stderr {
                let mut out = std::io::stderr().lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            } else if !json {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
            streamed = true;
        }
        streamed
    });
    let result = conductor
        .perform_streaming(Request::prompt(prompt), tx)
        .await;
    let streamed = printer.await.unwrap_or(false);
    let _ = stop_events.send(());
    if let Some(h) = show_events {
        let _ = h.await;
    }
    let lines = match narrator {
        Some(n) => n.finish().await,
        None => Vec::new(),
    };
    let answer = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer_to_stderr {
        if streamed {
            eprintln!();
        } else {
            eprintln!("{}", answer.text);
        }
    } else if streamed {
        println!();
    } else {
        println!("{}", answer.text);
    }
    for line in lines {
        eprintln!("  ♪ {line}");
    }
    if let Some(format) = &show.trace {
        let trace = Some(&answer.data["trace"]).filter(|t| !t.is_null());
        match trace {
            // `--json` already printed the trace inside the answer's data.
            Some(_) if format == "json" && json => {}
            Some(t) if format == "json" => println!("{}", serde_json::to_string_pretty(t)?),
            Some(t) => eprintln!("\n{}", crate::trace::render_trace(t)),
            None => eprintln!(
                "this score returns no trace: end `perform` with `arrange.answer(req, draft)`"
            ),
        }
    }
    Ok(())
}

pub async fn run(args: PlayArgs) -> anyhow::Result<()> {
    // Models the score names that are not in the cache are pulled (or asked for) first,
    // except those a `--model-file` replaces.
    let refs = hub_models_to_fetch(&args.score, &args.limits.models)?;
    if !refs.is_empty() {
        super::hub::ensure_models(&refs, args.pull.into()).await?;
    }
    let show = args.show();
    let conductor = Conductor::start(ScoreSource::file(&args.score), args.limits.options())
        .await
        .with_context(|| format!("loading score `{}`", args.score.display()))?;
    check_overrides(&conductor, &args.limits.models).await?;
    let first = play_once(&conductor, &args.prompt, &show).await;
    if !args.watch {
        return first;
    }
    if let Err(e) = first {
        eprintln!("error: {e:#}");
    }
    conductor.watch().await?;
    eprintln!(
        "[watching `{}` and the files it requires; Ctrl-C stops]",
        args.score.display()
    );
    let mut reloads = conductor.reloads();
    loop {
        tokio::select! {
            ev = reloads.recv() => {
                let Ok(ev) = ev else { return Ok(()) };
                eprintln!("{}", describe_reload(&ev));
                if ev.ok {
                    // A rule between replays, so answers do not run together.
                    eprintln!("── replay on version {} ──", ev.version);
                    if let Err(e) = play_once(&conductor, &args.prompt, &show).await {
                        eprintln!("error: {e:#}");
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The `hf:` models of `score` (a static scan) that its instruments play, leaving out
/// instruments that `models` points at a local file.
pub fn hub_models_to_fetch(
    score: &std::path::Path,
    models: &super::ModelFileArgs,
) -> anyhow::Result<Vec<crate::hub::ModelRef>> {
    let found = crate::hub::scan::score_models(score)?;
    let src = if models.model_files.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(score).unwrap_or_default()
    };
    Ok(found
        .into_iter()
        .filter(|m| m.reference.is_hub())
        .filter(|m| {
            instrument_at(&src, m.line).is_none_or(|name| !models.names().any(|n| n == name))
        })
        .map(|m| m.reference)
        .collect())
}

/// The instrument whose `band:add("name", { ... })` a model literal on `line` (1-based)
/// belongs to: the nearest `band:add` at or above it. A static guess, like the scan.
fn instrument_at(src: &str, line: usize) -> Option<&str> {
    let lines: Vec<&str> = src.lines().take(line).collect();
    lines.iter().rev().find_map(|l| {
        let rest = &l[l.find(":add(")? + ":add(".len()..];
        let rest = rest.trim_start().strip_prefix(['"', '\''])?;
        rest.split(['"', '\'']).next()
    })
}

/// Fails when a `--model-file` names no instrument of the loaded score.
pub async fn check_overrides(
    conductor: &Conductor,
    models: &super::ModelFileArgs,
) -> anyhow::Result<()> {
    if models.model_files.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = conductor
        .info()
        .await?
        .instruments
        .into_iter()
        .map(|i| i.name)
        .collect();
    models.check_names(&names)
}

/// `orchestra rehearse`: plays the embedded `scores/rehearsal.lua` on the rehearsal
/// band (written to `dir`, default the orchestra cache, when missing).
pub async fn rehearse(
    prompt: &str,
    dir: Option<PathBuf>,
    say: Option<String>,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| crate::home::orchestra_home().join("rehearsal"));
    let options = ScoreOptions::default().with_rehearsal_dir(dir);
    let conductor = Conductor::start(ScoreSource::rehearsal(), options).await?;
    println!("request: {prompt}\n");
    let show = Show {
        trace: Some("text".into()),
        narrate: true,
        say,
        ..Show::default()
    };
    play_once(&conductor, prompt, &show).await
}
