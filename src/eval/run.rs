//! Driving a suite through targets: a target is a model id played in this process the
//! way `orchestra serve` plays it (`orchestra`, `orchestra/<section>`, an instrument) or
//! any OpenAI-compatible server (`--url`). Each answer is checked (code in the sandbox,
//! routing against the label) and reported as a [`ProblemResult`] the moment it is
//! known, so an interrupted run keeps everything it measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::suite::{Check, Problem, Suite, SuiteKind, humaneval_program};
use super::{EvalError, Sandbox};
use crate::engine::{ChatMessage, GenerateRequest, StreamItem};
use crate::score::{Conductor, InstrumentHandle, Request};

/// The model id of the score's own arrangement.
pub const ORCHESTRA: &str = "orchestra";

/// Every id a score answers to, as `/v1/models` lists them: `orchestra`, then
/// `orchestra/<section>` for each section with a playing instrument, then instruments.
pub async fn model_ids(conductor: &Conductor) -> Result<Vec<String>, EvalError> {
    let info = conductor.info().await.map_err(target_err)?;
    let mut ids = vec![ORCHESTRA.to_string()];
    for s in &info.sections {
        if info
            .instruments
            .iter()
            .any(|i| &i.section == s && !i.embeddings)
        {
            ids.push(format!("{ORCHESTRA}/{s}"));
        }
    }
    ids.extend(
        info.instruments
            .iter()
            .filter(|i| !i.embeddings)
            .map(|i| i.name.clone()),
    );
    Ok(ids)
}

fn target_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Target(e.to_string())
}

/// What a model id plays.
#[derive(Debug, Clone)]
enum Plays {
    /// The score's `perform`, with the section forced or not.
    Perform { section: Option<String> },
    /// One instrument, no arrangement.
    Instrument(InstrumentHandle),
    /// A model on another server.
    Remote {
        client: reqwest::Client,
        /// `/v1` base URL.
        url: String,
        api_key: Option<String>,
    },
}

/// One model id to evaluate.
#[derive(Debug, Clone)]
pub struct Target {
    /// The id as given (`orchestra`, `orchestra/code`, `coltrane`, a peer's model name).
    pub model: String,
    /// Where it plays: `local` or the server's URL.
    pub place: String,
    plays: Plays,
    conductor: Option<Conductor>,
}

impl Target {
    /// A model id of the score played in this process, resolved like the server does.
    pub async fn local(conductor: &Conductor, model: &str) -> Result<Target, EvalError> {
        let plays = if model == ORCHESTRA {
            Plays::Perform { section: None }
        } else if let Some(section) = model.strip_prefix("orchestra/") {
            let info = conductor.info().await.map_err(target_err)?;
            if !info.sections.iter().any(|s| s == section) {
                return Err(EvalError::Target(format!(
                    "the score has no section `{section}`: its sections are {}",
                    info.sections.join(", ")
                )));
            }
            Plays::Perform {
                section: Some(section.to_string()),
            }
        } else {
            match conductor.instrument(model).await.map_err(target_err)? {
                Some(h) if h.embeddings => {
                    return Err(EvalError::Target(format!(
                        "`{model}` is an embedding model and cannot answer: pick another model id"
                    )));
                }
                Some(h) => Plays::Instrument(h),
                None => {
                    let ids = model_ids(conductor).await.unwrap_or_default();
                    return Err(EvalError::Target(format!(
                        "the model `{model}` does not exist: this score plays {}",
                        ids.join(", ")
                    )));
                }
            }
        };
        Ok(Target {
            model: model.to_string(),
            place: "local".into(),
            plays,
            conductor: Some(conductor.clone()),
        })
    }

    /// A model of an OpenAI-compatible server (`url` is its `/v1` base).
    pub fn remote(url: &str, model: &str, api_key: Option<String>) -> Target {
        let url = url.trim_end_matches('/').to_string();
        Target {
            model: model.to_string(),
            place: url.clone(),
            plays: Plays::Remote {
                client: reqwest::Client::new(),
                url,
                api_key,
            },
            conductor: None,
        }
    }

    /// The label in tables: the id, and the server for a remote one.
    pub fn label(&self) -> String {
        match &self.plays {
            Plays::Remote { url, .. } => format!("{} @ {url}", self.model),
            _ => self.model.clone(),
        }
    }
}

/// How problems are asked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Answer length limit for every model id.
    pub max_tokens: u32,
    /// Samples per problem: 1 is greedy (temperature 0); more use each instrument's
    /// (or the peer's) own sampling with seeds 1..=n.
    pub samples: usize,
    pub sandbox: Sandbox,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_tokens: 512,
            samples: 1,
            sandbox: Sandbox::default(),
        }
    }
}

/// Where a request's time went, from its arrangement trace (milliseconds; `None` when
/// the part did not play or there is no trace). Revisions count under review.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Parts {
    pub route_ms: Option<f64>,
    pub comp_ms: Option<f64>,
    pub solo_ms: Option<f64>,
    pub review_ms: Option<f64>,
}

impl Parts {
    /// The parts of an arrangement trace (`answer.data.trace`, or an HTTP answer's
    /// `orchestra.trace`): the router's decision time plus classifier plays, and each
    /// role's plays summed.
    pub fn from_trace(trace: &Value) -> Parts {
        let mut p = Parts::default();
        if trace.is_null() {
            return p;
        }
        let add = |slot: &mut Option<f64>, ms: f64| *slot = Some(slot.unwrap_or(0.0) + ms);
        if let Some(us) = trace.pointer("/route/us").and_then(Value::as_f64) {
            add(&mut p.route_ms, us / 1e3);
        }
        for play in trace
            .get("plays")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ms = play.get("ms").and_then(Value::as_f64).unwrap_or(0.0);
            match play.get("role").and_then(Value::as_str).unwrap_or("") {
                "route" => add(&mut p.route_ms, ms),
                "comp" => add(&mut p.comp_ms, ms),
                "solo" | "jam" | "merge" => add(&mut p.solo_ms, ms),
                "review" | "revise" => add(&mut p.review_ms, ms),
                _ => {}
            }
        }
        // Comping runs concurrently: its wall time is the comp block's, when recorded.
        if let Some(ms) = trace.pointer("/comp/ms").and_then(Value::as_f64) {
            p.comp_ms = Some(ms);
        }
        p
    }
}

/// One answered (or failed) problem.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemResult {
    pub problem: String,
    pub model: String,
    /// 1-based sample number.
    pub sample: usize,
    pub passed: bool,
    /// `passed`, `failed`, `timeout`, `memory_limit`, … from the sandbox; `wrong_section`
    /// for routing; `error` when the model did not answer.
    pub status: String,
    /// Wall time of the request (the sandbox not included).
    pub latency_ms: f64,
    pub completion_tokens: usize,
    pub parts: Parts,
    /// The section the router (or the arrangement) picked, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// The expected section (routing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    pub answer: String,
    /// The last lines the program wrote to stderr (a traceback), or the error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Whether the sandbox's child had left the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_dropped: Option<bool>,
}

/// One model's answer to one request.
struct Reply {
    text: String,
    completion_tokens: usize,
    parts: Parts,
    section: Option<String>,
}

/// Runs every problem of `suite` on every target (target by target, problem by
/// problem, sample by sample), handing each result to `report` as soon as it is
/// checked. Dropping the future stops the run; what was reported stays reported.
pub async fn run(
    suite: &Suite,
    targets: &[Target],
    settings: &Settings,
    mut report: impl FnMut(ProblemResult),
) {
    for target in targets {
        for problem in &suite.problems {
            for sample in 1..=settings.samples.max(1) {
                let result = one(suite.kind, target, problem, sample, settings).await;
                report(result);
            }
        }
    }
}

async fn one(
    kind: SuiteKind,
    target: &Target,
    problem: &Problem,
    sample: usize,
    settings: &Settings,
) -> ProblemResult {
    let started = Instant::now();
    let reply = match kind {
        SuiteKind::Routing => route(target, &problem.request).await,
        SuiteKind::HumanEval => ask(target, &problem.request, sample, settings).await,
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut result = ProblemResult {
        problem: problem.id.clone(),
        model: target.label(),
        sample,
        passed: false,
        status: "error".into(),
        latency_ms,
        completion_tokens: 0,
        parts: Parts::default(),
        section: None,
        expected: None,
        answer: String::new(),
        detail: String::new(),
        network_dropped: None,
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            result.detail = e.to_string();
            return result;
        }
    };
    result.completion_tokens = reply.completion_tokens;
    result.parts = reply.parts;
    result.section = reply.section.clone();
    result.answer = reply.text.clone();
    match &problem.check {
        Check::Section(want) => {
            result.expected = Some(want.clone());
            result.passed = reply.section.as_deref() == Some(want.as_str());
            result.status = if result.passed {
                "passed"
            } else {
                "wrong_section"
            }
            .into();
        }
        Check::Python {
            prompt,
            test,
            entry_point,
        } => {
            let program = humaneval_program(prompt, test, entry_point, &reply.text);
            let sandbox = settings.sandbox.clone();
            // Dropping this future (Ctrl-C) stops the program at once instead of
            // leaving it to its deadline.
            let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
            let flag = stop.0.clone();
            let ran =
                tokio::task::spawn_blocking(move || sandbox.run_python_until(&program, &flag))
                    .await;
            drop(stop);
            match ran {
                Ok(Ok(outcome)) => {
                    result.passed = outcome.passed;
                    result.status = outcome.status.to_string();
                    result.network_dropped = Some(outcome.isolation.network_dropped);
                    if !outcome.passed {
                        result.detail = last_lines(&outcome.stderr_tail, 6);
                    }
                }
                Ok(Err(e)) => result.detail = e.to_string(),
                Err(e) => result.detail = format!("the sandbox thread failed: {e}"),
            }
        }
    }
    result
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Asks `target` one question, greedy for one sample, seeded sampling for more.
async fn ask(
    target: &Target,
    text: &str,
    sample: usize,
    settings: &Settings,
) -> Result<Reply, EvalError> {
    let greedy = settings.samples <= 1;
    match &target.plays {
        Plays::Perform { section } => {
            let conductor = target.conductor.as_ref().expect("a local target");
            let request = Request {
                messages: vec![ChatMessage::user(text)],
                model: Some(target.model.clone()),
                max_tokens: Some(settings.max_tokens),
                temperature: greedy.then_some(0.0),
                section: section.clone(),
                ..Request::default()
            };
            let answer = conductor.perform(request).await.map_err(target_err)?;
            let trace = answer.data.get("trace").cloned().unwrap_or(Value::Null);
            Ok(Reply {
                text: answer.text,
                completion_tokens: answer.usage.completion_tokens,
                parts: Parts::from_trace(&trace),
                section: answer
                    .data
                    .get("section")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        }
        Plays::Instrument(h) => {
            let mut messages = Vec::new();
            if let Some(sys) = &h.system {
                messages.push(ChatMessage::system(sys.clone()));
            }
            messages.push(ChatMessage::user(text));
            let mut sampling = h.sampling.clone();
            if greedy {
                sampling.temperature = 0.0;
            } else {
                sampling.seed = Some(sample as u32);
            }
            let request = GenerateRequest::chat(messages)
                .with_sampling(sampling)
                .with_max_tokens(settings.max_tokens);
            let started = Instant::now();
            let (_lease, mut generation) = h.generate(request).await.map_err(target_err)?;
            let completion = loop {
                match generation.next().await {
                    Some(StreamItem::Text(_)) => {}
                    Some(StreamItem::Done(c)) => break c,
                    Some(StreamItem::Failed(e)) => return Err(target_err(e)),
                    None => return Err(target_err(format!("`{}` stopped", h.name))),
                }
            };
            Ok(Reply {
                text: completion.text,
                completion_tokens: completion.completion_tokens,
                parts: Parts {
                    solo_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                    ..Parts::default()
                },
                section: Some(h.section.clone()),
            })
        }
        Plays::Remote {
            client,
            url,
            api_key,
        } => {
            let mut body = json!({
                "model": target.model,
                "messages": [{ "role": "user", "content": text }],
                "max_tokens": settings.max_tokens,
                "stream": false,
            });
            if greedy {
                body["temperature"] = json!(0);
            } else {
                body["seed"] = json!(sample);
            }
            let v = post(client, url, api_key.as_deref(), &body).await?;
            let content = v
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let completion_tokens = v
                .pointer("/usage/completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            let trace = v
                .pointer("/orchestra/trace")
                .cloned()
                .unwrap_or(Value::Null);
            Ok(Reply {
                text: content,
                completion_tokens,
                parts: Parts::from_trace(&trace),
                section: v
                    .pointer("/orchestra/section")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &Value,
) -> Result<Value, EvalError> {
    let endpoint = format!("{url}/chat/completions");
    let mut req = client.post(&endpoint).json(body);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| EvalError::Target(format!("`{endpoint}`: {e}: is the server running?")))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| EvalError::Target(format!("`{endpoint}`: {e}")))?;
    if !status.is_success() {
        return Err(EvalError::Target(format!(
            "`{endpoint}` answered {status}: {}",
            text.chars().take(300).collect::<String>()
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| EvalError::Target(format!("`{endpoint}` sent no JSON: {e}")))
}

/// The section the target's router picks for `prompt`. Locally the score's router
/// decides without playing anything (`score.router`, else `route.default`); a server
/// plays the request (one token) and reports its `orchestra.section`.
async fn route(target: &Target, prompt: &str) -> Result<Reply, EvalError> {
    match &target.plays {
        Plays::Remote { .. } => {
            let settings = Settings {
                max_tokens: 1,
                ..Settings::default()
            };
            let reply = ask(target, prompt, 1, &settings).await?;
            if reply.section.is_none() {
                return Err(EvalError::Target(format!(
                    "`{}` reports no `orchestra.section`: the routing suite needs an orchestra server and the model id `orchestra`",
                    target.place
                )));
            }
            Ok(reply)
        }
        _ => {
            let conductor = target.conductor.as_ref().expect("a local target");
            let code = format!(
                "(function(p) local r = (type(score) == 'table' and score.router) or require('orchestra.route').default; \
                 if not r then error('the score returns no `router`: add `router = router` to the table it returns', 0) end; \
                 return r:explain(p).section end)({})",
                lua_string(prompt)
            );
            let started = Instant::now();
            let out = conductor.eval(&code, None).await.map_err(target_err)?;
            let us = started.elapsed().as_secs_f64() * 1e6;
            let section = match out {
                crate::score::EvalOutcome::Values(v) => v
                    .first()
                    .map(|s| s.trim_matches('"').to_string())
                    .filter(|s| s != "nil"),
                crate::score::EvalOutcome::Incomplete => None,
            };
            Ok(Reply {
                text: section.clone().unwrap_or_default(),
                completion_tokens: 0,
                parts: Parts {
                    route_ms: Some(us / 1e3),
                    ..Parts::default()
                },
                section,
            })
        }
    }
}

/// `s` as a Lua long-bracket string literal whose level never occurs inside it.
fn lua_string(s: &str) -> String {
    let mut level = 0;
    while s.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    // A newline right after the opening bracket is dropped by Lua: add one to keep a
    // leading newline of the prompt.
    format!("[{eq}[\n{s}]{eq}]")
}
