//! `orchestra status` and `orchestra listen`: a running server seen from a terminal —
//! its `/api/status` as a table, as JSON or as a spoken-style briefing, and its
//! `/api/events` as live narration (printed, and spoken with `--say`).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use crate::events::Event;
use crate::narrate::{Speaker, stage_name};
use crate::stage::{ModelState, human_bytes};
use crate::status::{StatusReport, brief};

/// Where the server is, and its key.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's address (`orchestra serve` prints it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's API key, when it has one.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ServerArgs {
    /// `path` on the server (the URL may end in `/` or `/v1`).
    fn endpoint(&self, path: &str) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}{path}")
    }

    fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let req = client.get(self.endpoint(path));
        match self.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the status as JSON (what `/api/status` answers).
    #[arg(long, conflicts_with = "brief")]
    pub json: bool,
    /// A short spoken-style briefing: STATUS, ACTIVE, DONE and WATCH lines.
    #[arg(long)]
    pub brief: bool,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Speak each line with this command: `{}` is replaced by the line, otherwise it
    /// goes to the command's stdin (`espeak-ng --stdin`, `say`).
    #[arg(long, value_name = "CMD")]
    pub say: Option<String>,
}

/// Reads the server's `/api/status`.
pub async fn fetch(server: &ServerArgs) -> anyhow::Result<StatusReport> {
    let client = reqwest::Client::new();
    let url = server.endpoint("/api/status");
    let res = server
        .get(&client, "/api/status")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach `{url}`: is `orchestra serve` running there? (`--url`)")
        })?;
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        let hint = if status.as_u16() == 401 {
            ": give the server's key with `--api-key` or ORCHESTRA_API_KEY"
        } else {
            ""
        };
        anyhow::bail!("`{url}` answered {status}{hint}: {}", body.trim());
    }
    res.json()
        .await
        .with_context(|| format!("`{url}` did not answer a status report"))
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let report = fetch(&args.server).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.brief {
        for l in brief(&report) {
            println!("{l}");
        }
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn state_word(s: ModelState) -> &'static str {
    match s {
        ModelState::Offstage => "offstage",
        ModelState::Loading => "loading",
        ModelState::Resident => "resident",
        ModelState::Playing => "playing",
        ModelState::Evicted => "evicted",
    }
}

/// The status as a few lines and a table of instruments.
pub fn table(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "score `{}` version {}", r.score.name, r.score.version);
    let _ = writeln!(
        w,
        "memory {} of {}; {} playing, {} waiting; {} requests done, {} failed",
        human_bytes(r.memory.used),
        human_bytes(r.memory.budget),
        r.in_flight,
        r.queued,
        r.done.requests,
        r.done.failed
    );
    if let Some(rl) = r.last_reload.as_ref().filter(|rl| !rl.ok) {
        let _ = writeln!(
            w,
            "last reload rejected: {}",
            rl.error
                .as_deref()
                .unwrap_or("?")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    // Columns as wide as their widest cell: a tempo of 1234.5 tok/s or a long
    // instrument name keeps the table straight.
    let mut t = super::hub::Table::new([
        "instrument",
        "section",
        "state",
        "footprint",
        "tempo",
        "swing",
        "",
    ]);
    for i in &r.instruments {
        t.row([
            i.name.clone(),
            i.section.clone(),
            state_word(i.state).to_string(),
            human_bytes(i.footprint_bytes),
            i.tempo
                .map(|t| format!("{t:.1} tok/s"))
                .unwrap_or_else(|| "—".into()),
            i.swing
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "—".into()),
            if i.pinned { "pinned" } else { "" }.to_string(),
        ]);
    }
    w.push_str(&t.render());
    for a in &r.active {
        let _ = writeln!(
            w,
            "playing: request {} ({}) {}{}",
            a.request_id,
            a.model,
            a.phase,
            a.soloist
                .as_deref()
                .map(|s| format!(", {} soloing", stage_name(s)))
                .unwrap_or_default()
        );
    }
    for a in r.recent.iter().take(5) {
        let _ = writeln!(
            w,
            "recent: request {} {} → {}{}{}",
            a.request_id,
            a.section.as_deref().unwrap_or("?"),
            a.soloist.as_deref().map(stage_name).unwrap_or("?".into()),
            a.verdict
                .as_deref()
                .map(|v| format!(", {v}"))
                .unwrap_or_default(),
            a.error
                .as_deref()
                .map(|e| format!(", failed: {e}"))
                .unwrap_or_default()
        );
    }
    out
}

/// Follows `/api/events` and prints (and speaks) the narration; reconnects after the
/// server restarts, resuming after the last event heard.
pub async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let speaker = args.say.map(Speaker::new);
    let client = reqwest::Client::new();
    let mut last: Option<u64> = None;
    let mut warned = false;
    let mut teller = crate::narrate::Teller::default();
    loop {
        let mut req = args.server.get(&client, "/api/events");
        if let Some(seq) = last {
            req = req.header("last-event-id", seq.to_string());
        }
        let res = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().as_u16() == 401 => anyhow::bail!(
                "`{}` needs an API key: give it with `--api-key` or ORCHESTRA_API_KEY",
                args.server.endpoint("/api/events")
            ),
            other => {
                if !warned {
                    let why = match other {
                        Ok(r) => format!("answered {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    eprintln!(
                        "waiting for `{}` ({why}); retrying every second",
                        args.server.endpoint("/api/events")
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        warned = false;
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let Some(event) = parse_block(&block) else {
                    continue;
                };
                last = Some(event.seq);
                for text in teller.tell(&event) {
                    println!("{text}");
                    if let Some(s) = speaker.clone() {
                        let spoken = text.clone();
                        let res = tokio::task::spawn_blocking(move || s.say(&spoken)).await;
                        if let Ok(Err(e)) = res {
                            eprintln!("warning: --say: {e}");
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One SSE block's event (its `data:` lines joined), if it carries one.
pub fn parse_block(block: &str) -> Option<Event> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_stays_aligned_when_numbers_grow() {
        let instrument = |name: &str, tempo: f64| {
            serde_json::json!({
                "name": name, "section": "code", "model": "m.gguf", "embeddings": false,
                "state": "resident", "load_progress": null, "footprint_bytes": 123_456_789_012u64,
                "pinned": false, "playing": 0, "idle_ms": null, "unloads_in_ms": null,
                "tempo": tempo, "swing": 0.5, "ttft_ms": null, "generations": 1,
                "tokens": 1, "live_tokens": 0,
            })
        };
        let report: StatusReport = serde_json::from_value(serde_json::json!({
            "score": { "name": "s.lua", "version": 1, "sections": ["code"], "watching": false },
            "instruments": [instrument("a", 1.0), instrument("a-very-long-instrument-name", 12345.6)],
            "memory": { "used": 0, "budget": 0 }, "in_flight": 0, "queued": 0,
            "max_in_flight": 1, "max_queue": 1,
            "done": { "requests": 0, "failed": 0, "cancelled": 0 },
            "active": [], "recent": [], "last_reload": null, "last_seq": 0,
        }))
        .unwrap();
        let out = table(&report);
        let rows: Vec<&str> = out.lines().skip(2).collect();
        let column = |row: &str, word: &str| row.find(word).unwrap();
        // "tempo" in the header starts where every tempo does.
        let at = column(rows[0], "tempo");
        assert_eq!(column(rows[1], "1.0 tok/s"), at, "{out}");
        assert_eq!(column(rows[2], "12345.6 tok/s"), at, "{out}");
        let swing = column(rows[0], "swing");
        assert_eq!(column(rows[1], "0.50"), swing, "{out}");
        assert_eq!(column(rows[2], "0.50"), swing, "{out}");
    }
}
