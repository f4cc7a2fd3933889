//! `orchestra soak`: a bounded reliability run. N concurrent clients for M minutes
//! against an in-process server on 127.0.0.1 (nothing else is contacted), playing a
//! score of rehearsal instruments under a memory budget that fits two of them, so
//! models are evicted and loaded again all the time. Clients mix streaming and
//! non-streaming requests, arrangements and direct instrument calls, disconnects in
//! the middle of a stream and bad JSON, while the score is edited (valid, broken,
//! valid) on a timer. It reports what was sent and answered, checks every answer
//! against the non-streamed answer of the same greedy request, samples RSS, and
//! checks that nothing is left behind (in flight, queued, reserved, leased) and that
//! nothing panicked. CI runs `orchestra soak --minutes 1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::events::EventKind;
use crate::score::{Conductor, ScoreOptions, ScoreSource};
use crate::server::{AppState, ServeConfig};
use crate::stage::human_bytes;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the clients play, in minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seed of the clients' choices (the same seed makes the same mix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many of the five instruments the memory budget fits at once (5: no
    /// evictions).
    #[arg(long, default_value_t = 2)]
    pub fits: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a soak run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub clients: usize,
    /// Requests sent, of every kind.
    pub sent: usize,
    /// Answered with 200 and checked complete.
    pub answered: usize,
    /// Refused with 429 (queue full), as asked by the limits.
    pub refused_429: usize,
    /// Bad JSON answered 400, as it should be.
    pub bad_json_400: usize,
    /// Streams the client dropped on purpose after their first chunks.
    pub disconnected: usize,
    /// Anything else: a transport error, an unexpected status, an incomplete answer.
    pub failed: usize,
    /// Answers compared with the non-streamed answer of the same request.
    pub checked: usize,
    /// Of those, streamed ones.
    pub checked_streams: usize,
    /// Answers that differed from it or lacked a finish reason.
    pub mismatched: usize,
    /// A few failures, for the reader.
    pub failures: Vec<String>,
    pub model_loads: usize,
    pub evictions: usize,
    pub reloads_ok: usize,
    pub reloads_rejected: usize,
    /// Score edits whose expected reload did not come.
    pub edit_failures: usize,
    /// RSS in bytes, one sample every 10 s (the first at the start).
    pub rss: Vec<u64>,
    /// Samples taken before this index are warm-up.
    pub warm_up_samples: usize,
    /// Largest RSS after warm-up over the first one after warm-up, minus 1.
    pub rss_growth: f64,
    /// Whether RSS growth was checked (runs of 5 minutes or more).
    pub rss_checked: bool,
    pub in_flight_at_end: usize,
    pub queued_at_end: usize,
    pub reserved_at_end: u64,
    pub leases_at_end: usize,
    pub live_generations_at_end: usize,
    pub panics: usize,
}

impl SoakReport {
    /// Why the run failed, if it did.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check = |bad: bool, what: String| {
            if bad {
                p.push(what);
            }
        };
        check(self.failed > 0, format!("{} requests failed", self.failed));
        check(
            self.mismatched > 0,
            format!("{} answers were incomplete", self.mismatched),
        );
        check(self.panics > 0, format!("{} panics", self.panics));
        check(
            self.edit_failures > 0,
            format!(
                "{} score edits were not reloaded as expected",
                self.edit_failures
            ),
        );
        check(
            self.in_flight_at_end + self.queued_at_end > 0,
            format!(
                "{} requests in flight and {} queued at the end",
                self.in_flight_at_end, self.queued_at_end
            ),
        );
        check(
            self.reserved_at_end > 0,
            format!("{} reserved at the end", human_bytes(self.reserved_at_end)),
        );
        check(
            self.leases_at_end + self.live_generations_at_end > 0,
            format!(
                "{} leases and {} generations left at the end",
                self.leases_at_end, self.live_generations_at_end
            ),
        );
        check(
            self.rss_checked && self.rss_growth > 0.05,
            format!("RSS grew {:.1}% after warm-up", self.rss_growth * 100.0),
        );
        check(self.answered == 0, "no request was answered".into());
        p
    }
}

/// Panics anywhere in the process since the hook was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    super::limit_malloc_arenas();
    let dir = soak_dir();
    let seconds = (args.minutes * 60.0).max(5.0);
    let report = soak(
        &dir,
        Duration::from_secs_f64(seconds),
        args.clients.max(1),
        args.fits,
        args.seed,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
    }
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the soak run failed: {}", problems.join("; "))
    }
}

/// The report as people read it.
pub fn describe(r: &SoakReport) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<28}{v}\n"));
    line("run", format!("{:.0} s, {} clients", r.seconds, r.clients));
    line(
        "requests",
        format!(
            "{} sent: {} answered, {} refused (429), {} bad JSON (400), {} disconnected on purpose, {} failed",
            r.sent, r.answered, r.refused_429, r.bad_json_400, r.disconnected, r.failed
        ),
    );
    line(
        "answers checked",
        format!(
            "{} ({} streamed) against the non-streamed answer: {} incomplete",
            r.checked, r.checked_streams, r.mismatched
        ),
    );
    line(
        "stage",
        format!("{} loads, {} evictions", r.model_loads, r.evictions),
    );
    line(
        "score edits",
        if r.reloads_ok + r.reloads_rejected + r.edit_failures == 0 {
            // Said plainly, so a short run is not read as a reload check that passed.
            "not exercised: the run was too short for an edit (the first comes after a sixth of the run, and needs 5 s before its end)".to_string()
        } else {
            format!(
                "{} reloads accepted, {} rejected (broken edits), {} not as expected",
                r.reloads_ok, r.reloads_rejected, r.edit_failures
            )
        },
    );
    let mib = |b: &u64| format!("{:.0}", *b as f64 / (1 << 20) as f64);
    line(
        "RSS every 10 s (MiB)",
        r.rss.iter().map(mib).collect::<Vec<_>>().join(" "),
    );
    line(
        "RSS after warm-up",
        format!(
            "{:+.1}% (max over first sample after {} warm-up samples){}",
            r.rss_growth * 100.0,
            r.warm_up_samples,
            if r.rss_checked {
                ", limit +5%"
            } else {
                ", not checked under 5 minutes"
            }
        ),
    );
    line(
        "left at the end",
        format!(
            "{} in flight, {} queued, {} reserved, {} leases, {} generations",
            r.in_flight_at_end,
            r.queued_at_end,
            human_bytes(r.reserved_at_end),
            r.leases_at_end,
            r.live_generations_at_end
        ),
    );
    line("panics", r.panics.to_string());
    for f in &r.failures {
        line("failure", f.clone());
    }
    let problems = r.problems();
    line(
        "verdict",
        if problems.is_empty() {
            "pass".into()
        } else {
            format!("FAIL: {}", problems.join("; "))
        },
    );
    s
}

/// The soak score: the rehearsal band and `drone` (a tiny random model for long
/// streams) under `budget` bytes; `edit` marks the version, `broken` breaks it.
fn score_text(budget: u64, drone: &Path, edit: usize, broken: bool) -> String {
    format!(
        r#"-- The soak score (edit {edit}), written by `orchestra soak`.
local route = require("orchestra.route")
local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "{budget}", sections = {{ "code", "creative", "analysis", "review" }} }}
for _, m in ipairs(orchestra.rehearsal_band()) do
  band:add(m.name, {{ model = orchestra.rehearsal_model(m.name), section = m.section,
    context = 512, slots = 4, sampling = {{ temperature = 0 }} }})
end
band:add("drone", {{ model = {drone:?}, section = "analysis", context = 2048, slots = 4,
  sampling = {{ temperature = 0 }} }})
local router = route.rules({{
  {{ name = "code words", when = route.keywords({{ "function", "code" }}), section = "code" }},
  {{ otherwise = "creative" }},
}}, {{ band = band }})
return {{
  perform = function(req)
    return arrange.perform(band, req, {{ router = router, comp = false }})
  end,
}}
{}"#,
        if broken {
            "this edit is not Lua (\n"
        } else {
            ""
        },
        drone = drone.display().to_string(),
    )
}

/// Requests whose answers are known (greedy): (model id, prompt).
const KNOWN: &[(&str, &str)] = &[
    ("coltrane", "hello"),
    ("ella", "hello"),
    ("monk", "hello"),
    ("mingus", "hello"),
    ("orchestra", "write a function that reverses a string"),
    ("orchestra", "sing me something soft"),
    ("orchestra/analysis", "why is the sky blue"),
];

fn chat(model: &str, prompt: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream,
            "messages": [{ "role": "user", "content": prompt }] })
}

/// Counters the clients share.
#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    answered: AtomicUsize,
    refused: AtomicUsize,
    bad_json: AtomicUsize,
    disconnected: AtomicUsize,
    failed: AtomicUsize,
    checked: AtomicUsize,
    checked_streams: AtomicUsize,
    mismatched: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 10 {
            f.push(what);
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs the soak in `dir` for `length` with `clients` concurrent clients, under a
/// budget that fits the `fits` largest instruments and half the next.
pub async fn soak(
    dir: &Path,
    length: Duration,
    clients: usize,
    fits: usize,
    seed: u64,
) -> anyhow::Result<SoakReport> {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let drone = dir.join("drone.gguf");
    if !drone.exists() {
        let tmp = dir.join("drone.gguf.part");
        crate::synth::write_model(&crate::synth::tiny_spec(), &tmp)?;
        std::fs::rename(&tmp, &drone)?;
    }
    let score = dir.join("score.lua");
    let options = || {
        ScoreOptions::default()
            .with_rehearsal_dir(dir.join("band"))
            .with_printer(Arc::new(|_: &str| {}))
    };
    // By default the budget fits the two largest instruments: a third evicts one.
    std::fs::write(&score, score_text(64 << 30, &drone, 0, false))?;
    let sizing = Conductor::start(ScoreSource::file(&score), options())
        .await
        .context("loading the soak score")?;
    let mut estimates: Vec<u64> = sizing
        .stage_status()
        .models
        .iter()
        .filter_map(|m| m.estimate_bytes)
        .collect();
    drop(sizing);
    estimates.sort_unstable_by(|a, b| b.cmp(a));
    anyhow::ensure!(!estimates.is_empty(), "the soak band has no instruments");
    let fits = fits.clamp(1, estimates.len());
    let budget = estimates[..fits].iter().sum::<u64>()
        + estimates.get(fits).map_or(estimates[0], |next| next / 2);
    std::fs::write(&score, score_text(budget, &drone, 0, false))?;

    let conductor = Conductor::start(ScoreSource::file(&score), options())
        .await
        .context("loading the soak score")?;
    conductor.watch().await?;
    let config = ServeConfig {
        max_in_flight: (clients / 4).max(2),
        max_queue: (clients / 2).max(1),
        ..ServeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let state = AppState::with_conductor(&config, conductor.clone());
    let server = tokio::spawn({
        let (state, config) = (state.clone(), config.clone());
        async move {
            let _ = crate::server::serve(listener, state, &config, std::future::pending()).await;
        }
    });

    let loads = Arc::new(AtomicUsize::new(0));
    let evictions = Arc::new(AtomicUsize::new(0));
    let counting = tokio::spawn({
        let mut events = conductor.events().subscribe();
        let (loads, evictions) = (loads.clone(), evictions.clone());
        async move {
            loop {
                match events.recv().await {
                    Ok(e) => match e.kind {
                        EventKind::ModelLoaded { .. } => {
                            loads.fetch_add(1, Ordering::Relaxed);
                        }
                        EventKind::ModelEvicted { .. } => {
                            evictions.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        }
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()?;
    // The reference answers, one non-streamed request each.
    let mut reference = HashMap::new();
    for (model, prompt) in KNOWN {
        let body: Value = http
            .post(format!("{url}/chat/completions"))
            .json(&chat(model, prompt, false))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("the reference answer of `{model}`"))?
            .json()
            .await?;
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        reference.insert((*model, *prompt), text);
    }
    let reference = Arc::new(reference);

    let started = Instant::now();
    let deadline = started + length;
    let tally = Arc::new(Tally::default());

    let sampler = tokio::spawn(async move {
        let mut rss = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            rss.push(rss_bytes());
            if Instant::now() >= deadline {
                return rss;
            }
        }
    });

    // Valid, broken, valid: once a minute, three times in runs under five minutes.
    let edit_every = if length >= Duration::from_secs(300) {
        Duration::from_secs(60)
    } else {
        length / 3
    };
    let editor = tokio::spawn({
        let (conductor, score, drone) = (conductor.clone(), score.clone(), drone.clone());
        async move {
            let mut reloads = conductor.reloads();
            let (mut ok, mut rejected, mut wrong, mut edit) = (0usize, 0usize, 0usize, 0usize);
            let mut next = started + edit_every / 2;
            while next + Duration::from_secs(5) < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += edit_every;
                for broken in [false, true, false] {
                    edit += 1;
                    // Saved the way editors save: a new file renamed over the old one.
                    let tmp = score.with_extension("lua.part");
                    if std::fs::write(&tmp, score_text(budget, &drone, edit, broken)).is_err()
                        || std::fs::rename(&tmp, &score).is_err()
                    {
                        wrong += 1;
                        continue;
                    }
                    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
                        loop {
                            match reloads.recv().await {
                                Ok(r) => return Some(r.ok),
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => return None,
                            }
                        }
                    })
                    .await;
                    match outcome {
                        Ok(Some(true)) if !broken => ok += 1,
                        Ok(Some(false)) if broken => rejected += 1,
                        _ => wrong += 1,
                    }
                }
            }
            (ok, rejected, wrong)
        }
    });

    let mut players = Vec::new();
    for c in 0..clients {
        let (http, url, tally, reference) =
            (http.clone(), url.clone(), tally.clone(), reference.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(c as u64));
        players.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let roll = rng.random_range(0..100);
                tally.sent.fetch_add(1, Ordering::SeqCst);
                let outcome = if roll < 5 {
                    bad_json(&http, &url, &tally).await
                } else if roll < 15 {
                    disconnect(&http, &url, &tally).await
                } else {
                    let (model, prompt) = KNOWN[rng.random_range(0..KNOWN.len())];
                    let stream = rng.random_bool(0.5);
                    let expected = &reference[&(model, prompt)];
                    known(&http, &url, &tally, model, prompt, stream, expected).await
                };
                if outcome == Outcome::Refused {
                    let pause = rng.random_range(20..120);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }));
    }
    for p in players {
        if p.await.is_err() {
            tally.fail("a client task panicked".into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss = sampler.await.unwrap_or_default();
    let (reloads_ok, reloads_rejected, edit_failures) = editor.await.unwrap_or((0, 0, 1));

    // Everything the clients started has ended: nothing may be left behind.
    let leftovers = || {
        let st = conductor.stage_status();
        (
            state.admission.in_flight(),
            state.admission.queued(),
            conductor.stage_reserved(),
            st.models.iter().map(|m| m.playing).sum::<usize>(),
            st.models.iter().map(|m| m.stats.live).sum::<usize>(),
        )
    };
    let settle = Instant::now() + Duration::from_secs(30);
    while leftovers() != (0, 0, 0, 0, 0) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (in_flight, queued, reserved, leases, live) = leftovers();
    server.abort();
    counting.abort();

    let warm_up_samples = (rss.len() / 5).max(2).min(rss.len().saturating_sub(1));
    let after = &rss[warm_up_samples.min(rss.len())..];
    let rss_growth = match (after.first(), after.iter().max()) {
        (Some(&first), Some(&max)) if first > 0 => max as f64 / first as f64 - 1.0,
        _ => 0.0,
    };
    let t = &tally;
    Ok(SoakReport {
        seconds,
        clients,
        sent: t.sent.load(Ordering::SeqCst),
        answered: t.answered.load(Ordering::SeqCst),
        refused_429: t.refused.load(Ordering::SeqCst),
        bad_json_400: t.bad_json.load(Ordering::SeqCst),
        disconnected: t.disconnected.load(Ordering::SeqCst),
        failed: t.failed.load(Ordering::SeqCst),
        checked: t.checked.load(Ordering::SeqCst),
        checked_streams: t.checked_streams.load(Ordering::SeqCst),
        mismatched: t.mismatched.load(Ordering::SeqCst),
        failures: t.failures.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        model_loads: loads.load(Ordering::SeqCst),
        evictions: evictions.load(Ordering::SeqCst),
        reloads_ok,
        reloads_rejected,
        edit_failures,
        rss_checked: length >= Duration::from_secs(300),
        rss,
        warm_up_samples,
        rss_growth,
        in_flight_at_end: in_flight,
        queued_at_end: queued,
        reserved_at_end: reserved,
        leases_at_end: leases,
        live_generations_at_end: live,
        panics: PANICS.load(Ordering::SeqCst) - panics_before,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused,
}

/// Counts a 429 as refused; anything but `expected` as a failure.
fn status_ok(tally: &Tally, status: u16, expected: u16, what: &str) -> Option<Outcome> {
    if status == 429 {
        tally.refused.fetch_add(1, Ordering::SeqCst);
        return Some(Outcome::Refused);
    }
    if status != expected {
        tally.fail(format!("{what}: status {status}"));
        return Some(Outcome::Done);
    }
    None
}

async fn bad_json(http: &reqwest::Client, url: &str, tally: &Tally) -> Outcome {
    let res = http
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model": "coltrane", "messages": [{"role": "user", "#)
        .send()
        .await;
    match res {
        Ok(r) => {
            if let Some(o) = status_ok(tally, r.status().as_u16(), 400, "bad JSON") {
                return o;
            }
            tally.bad_json.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => tally.fail(format!("bad JSON: {e}")),
    }
    Outcome::Done
}

/// A long stream dropped after its first chunks.
async fn disconnect(http: &reqwest::Client, url: &str, tally: &Tally) -> Outcome {
    let mut req = chat("drone", "play on and on", true);
    req["ignore_eos"] = json!(true);
    req["max_tokens"] = json!(1500);
    let res = http
        .post(format!("{url}/chat/completions"))
        .json(&req)
        .send()
        .await;
    match res {
        Ok(mut r) => {
            if let Some(o) = status_ok(tally, r.status().as_u16(), 200, "disconnect") {
                return o;
            }
            for _ in 0..2 {
                if r.chunk().await.is_err() {
                    tally.fail("disconnect: the stream broke before the client left".into());
                    return Outcome::Done;
                }
            }
            tally.disconnected.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => tally.fail(format!("disconnect: {e}")),
    }
    Outcome::Done
}

/// A request whose answer is known; streamed or not, it must equal `expected` and
/// end with a finish reason.
async fn known(
    http: &reqwest::Client,
    url: &str,
    tally: &Tally,
    model: &str,
    prompt: &str,
    stream: bool,
    expected: &str,
) -> Outcome {
    let res = http
        .post(format!("{url}/chat/completions"))
        .json(&chat(model, prompt, stream))
        .send()
        .await;
    let what = format!("{model}{}", if stream { " (stream)" } else { "" });
    let r = match res {
        Ok(r) => r,
        Err(e) => {
            tally.fail(format!("{what}: {e}"));
            return Outcome::Done;
        }
    };
    if let Some(o) = status_ok(tally, r.status().as_u16(), 200, &what) {
        return o;
    }
    let body = match r.text().await {
        Ok(b) => b,
        Err(e) => {
            tally.fail(format!("{what}: the answer broke off: {e}"));
            return Outcome::Done;
        }
    };
    let (text, finish) = if stream {
        let mut text = String::new();
        let mut finish = None;
        let mut done = false;
        for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if chunk.get("error").is_some() {
                tally.fail(format!("{what}: {}", chunk["error"]["message"]));
                return Outcome::Done;
            }
            let choice = &chunk["choices"][0];
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        (text, finish.filter(|_| done))
    } else {
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let choice = &v["choices"][0];
        (
            choice["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            choice["finish_reason"].as_str().map(str::to_string),
        )
    };
    tally.checked.fetch_add(1, Ordering::SeqCst);
    if stream {
        tally.checked_streams.fetch_add(1, Ordering::SeqCst);
    }
    if text != expected || finish.is_none() {
        tally.mismatched.fetch_add(1, Ordering::SeqCst);
        tally.fail(format!(
            "{what}: answered {text:?} (finish {finish:?}), expected {expected:?}"
        ));
    } else {
        tally.answered.fetch_add(1, Ordering::SeqCst);
    }
    Outcome::Done
}

/// The folder `orchestra soak` works in.
pub fn soak_dir() -> PathBuf {
    crate::home::orchestra_home().join("soak")
}
