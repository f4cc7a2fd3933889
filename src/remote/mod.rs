//! Remote instruments: a model served by any OpenAI-compatible server (llama-server,
//! vLLM, Ollama, another `orchestra serve`) played like a local one. A [`RemoteModel`]
//! streams `/chat/completions` (or `/completions` for raw prompts) and hands back the
//! same [`Generation`] a local model does — text pieces, then a [`Completion`] whose
//! [`Timings`] come from the arrival times of the pieces — so Lua and the server never
//! ask where an instrument plays. It holds no memory on the stage and never touches
//! llama.cpp; falling back to another instrument is the arrangement's business.
//!
//! Failures before the first piece of text (connection refused, a timeout, a 5xx or
//! 429) are retried with exponential backoff, `retries` times; a failure after it ends
//! the generation with [`EngineError::Remote`] saying how far it got.

mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::engine::{
    Completion, EngineError, FinishReason, GenerateRequest, Generation, GenerationObserver,
    PromptSources, StreamItem, Timings,
};
use crate::events::{EventBus, EventContext, EventKind};
use crate::metrics::Metrics;

/// Where a remote instrument plays and how patiently.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteSpec {
    /// The instrument's name in the score.
    pub name: String,
    /// The API base, e.g. `http://host:8080/v1` (without a trailing slash).
    pub url: String,
    /// The model id sent to the server.
    pub model: String,
    /// Sent as `Authorization: Bearer` when set.
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Time to open the connection.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to start, and between two pieces of it.
    pub timeout: Duration,
    /// Attempts after the first, before any text arrived.
    pub retries: u32,
}

impl RemoteSpec {
    /// A spec with the defaults: 5 s to connect, 60 s read timeout, 2 retries.
    pub fn new(name: impl Into<String>, url: &str, model: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.trim_end_matches('/').to_string(),
            model: model.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            retries: 2,
        }
    }
}

/// Why talking to a remote server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("`{url}` is not an http(s) URL: write it like `http://host:8080/v1`")]
    BadUrl { url: String },
    #[error("cannot reach `{url}`: {reason}; is the server running?")]
    Connect { url: String, reason: String },
    #[error("`{url}` did not send {what} within {secs:.1} s: raise `timeout` or check the server")]
    Timeout {
        url: String,
        what: String,
        secs: f64,
    },
    #[error("`{url}` answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("`{url}` broke off the answer: {reason}")]
    Broken { url: String, reason: String },
    #[error("`{url}` did not answer in OpenAI's format: {reason}")]
    Protocol { url: String, reason: String },
}

impl RemoteError {
    /// Worth another attempt (the server may be starting, busy or restarting).
    fn retryable(&self) -> bool {
        match self {
            RemoteError::Connect { .. }
            | RemoteError::Timeout { .. }
            | RemoteError::Broken { .. } => true,
            RemoteError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            RemoteError::BadUrl { .. } | RemoteError::Protocol { .. } => false,
        }
    }
}

/// A remote model: cheap to clone, clones share one HTTP client.
#[derive(Clone)]
pub struct RemoteModel {
    inner: Arc<Inner>,
}

struct Inner {
    spec: RemoteSpec,
    client: reqwest::Client,
    /// Where finished generations are announced (`played`) and retries told.
    events: EventBus,
    /// Counted like a local instrument's generations; no memory, no loads.
    metrics: Metrics,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteModel")
            .field("name", &self.inner.spec.name)
            .field("url", &self.inner.spec.url)
            .field("model", &self.inner.spec.model)
            .finish_non_exhaustive()
    }
}

/// Generation ids of remote instruments, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The wait before retry `attempt` (0-based): 250 ms, 500 ms, 1 s, … at most 4 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(4)))
}

impl RemoteModel {
    pub fn new(spec: RemoteSpec, events: EventBus, metrics: Metrics) -> Result<Self, RemoteError> {
        let url = reqwest::Url::parse(&spec.url).map_err(|_| RemoteError::BadUrl {
            url: spec.url.clone(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RemoteError::BadUrl {
                url: spec.url.clone(),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .build()
            .map_err(|e| RemoteError::Connect {
                url: spec.url.clone(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                client,
                events,
                metrics,
            }),
        })
    }

    pub fn spec(&self) -> &RemoteSpec {
        &self.inner.spec
    }

    /// `GET {url}/models`: the model ids the server offers (the health check).
    pub async fn health(&self) -> Result<Vec<String>, RemoteError> {
        let s = &self.inner.spec;
        let url = format!("{}/models", s.url);
        let limit = s.timeout.min(Duration::from_secs(10)) + s.connect_timeout;
        let mut req = self.inner.client.get(&url);
        if let Some(k) = &s.api_key {
            req = req.bearer_auth(k);
        }
        let asked = async {
            let resp = req.send().await.map_err(|e| connect_error(&url, &e))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| RemoteError::Broken {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            if !status.is_success() {
                return Err(RemoteError::Status {
                    url: url.clone(),
                    status: status.as_u16(),
                    body: clip(&text),
                });
            }
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| RemoteError::Protocol {
                    url: url.clone(),
                    reason: format!("`/models` is not JSON: {e}"),
                })?;
            Ok(v.get("data")
                .and_then(|d| d.as_array())
                .map(|d| {
                    d.iter()
                        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default())
        };
        tokio::time::timeout(limit, asked)
            .await
            .map_err(|_| RemoteError::Timeout {
                url: url.clone(),
                what: "its model list".into(),
                secs: limit.as_secs_f64(),
            })?
    }

    /// Starts a streamed generation (needs a tokio runtime). Dropping the returned
    /// [`Generation`] closes the connection, which stops the remote generation too.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::Remote {
            model: self.inner.spec.name.clone(),
            reason: "a remote instrument plays inside a tokio runtime only".into(),
        })?;
        let (tx, rx) = unbounded_channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ctx = crate::events::current().unwrap_or_default();
        handle.spawn(play(self.inner.clone(), request, tx, ctx));
        Ok(Generation::new(id, rx).observed(Report {
            inner: self.inner.clone(),
            id,
            ctx,
            pieces: 0,
            ended: false,
        }))
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= 300 {
        return s.to_string();
    }
    let cut: String = s.chars().take(299).collect();
    format!("{cut}…")
}

fn connect_error(url: &str, e: &reqwest::Error) -> RemoteError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    RemoteError::Connect {
        url: url.to_string(),
        reason,
    }
}

/// What arrived so far in one generation.
struct Received {
    started: Instant,
    text: String,
    pieces: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Gaps between pieces (Welford: count, mean, sum of squared deviations), in ms.
    gaps: (usize, f64, f64),
    calls: Vec<wire::PartialCall>,
    finish: Option<FinishReason>,
    usage: Option<(usize, usize, usize)>,
}

impl Received {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            text: String::new(),
            pieces: 0,
            first: None,
            last: None,
            gaps: (0, 0.0, 0.0),
            calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    /// Forgets a failed attempt (before any text: only calls and usage can be there).
    fn retry(&mut self) {
        let started = self.started;
        *self = Self::new();
        self.started = started;
    }

    fn piece(&mut self, text: &str) {
        let now = Instant::now();
        if let Some(last) = self.last {
            let gap = (now - last).as_secs_f64() * 1e3;
            let (n, mean, m2) = &mut self.gaps;
            *n += 1;
            let d = gap - *mean;
            *mean += d / *n as f64;
            *m2 += d * (gap - *mean);
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.pieces += 1;
        self.text.push_str(text);
    }

    fn completion(self) -> Completion {
        let (prompt, cached, tokens) = self.usage.unwrap_or((0, 0, self.pieces));
        let tokens = tokens.max(self.pieces.min(1));
        let mut t = Timings {
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
            ..Timings::default()
        };
        if let Some(first) = self.first {
            t.ttft_ms = (first - self.started).as_secs_f64() * 1e3;
            if prompt > 0 && t.ttft_ms > 0.0 {
                t.prompt_tok_s = prompt as f64 / (t.ttft_ms / 1e3);
            }
        }
        let (n, mean, m2) = self.gaps;
        if let (Some(first), Some(last), true) = (self.first, self.last, n > 0 && tokens > 1) {
            let span_ms = (last - first).as_secs_f64() * 1e3;
            if span_ms > 0.0 {
                t.decode_tok_s = (tokens - 1) as f64 / (span_ms / 1e3);
                // A server may send several tokens per piece: gaps per token, with the
                // pieces' spread scaled alike (swing, a ratio, stays what it was).
                let per_token = span_ms / (tokens - 1) as f64;
                let std = if n > 1 {
                    (m2 / (n - 1) as f64).sqrt()
                } else {
                    0.0
                };
                t.gap_mean_ms = per_token;
                t.gap_std_ms = if mean > 0.0 {
                    std * per_token / mean
                } else {
                    0.0
                };
            }
        }
        let tool_calls = wire::tool_calls(self.calls);
        let finish_reason = if tool_calls.is_empty() {
            match self.finish {
                Some(FinishReason::ToolCalls) | None => FinishReason::Stop,
                Some(f) => f,
            }
        } else {
            FinishReason::ToolCalls
        };
        Completion {
            text: self.text,
            finish_reason,
            prompt_tokens: prompt,
            cached_tokens: cached,
            // The remote server reports only its own prompt cache.
            prompt_sources: PromptSources {
                slot: cached,
                computed: prompt.saturating_sub(cached),
                ..PromptSources::default()
            },
            completion_tokens: tokens,
            timings: t,
            tool_calls,
        }
    }
}

/// The generation task: attempts, retries before the first piece, the end.
async fn play(
    inner: Arc<Inner>,
    request: GenerateRequest,
    tx: UnboundedSender<StreamItem>,
    ctx: EventContext,
) {
    let s = &inner.spec;
    let body = wire::body(&s.model, &request);
    let url = format!("{}/{}", s.url, wire::endpoint(&request));
    let mut got = Received::new();
    let mut attempt = 0;
    let outcome = loop {
        let res = tokio::select! {
            r = inner.attempt(&url, &body, &tx, &mut got) => r,
            // The caller dropped the generation: dropping the request closes the
            // connection.
            _ = tx.closed() => return,
        };
        match res {
            Ok(()) => break Ok(()),
            Err(e) if got.pieces == 0 && e.retryable() && attempt < s.retries => {
                let wait = backoff(attempt);
                attempt += 1;
                tracing::info!(instrument = %s.name, attempt, error = %e, "remote instrument: retrying");
                inner.events.emit_in(
                    ctx,
                    EventKind::Custom {
                        name: "remote_retry".into(),
                        data: serde_json::json!({
                            "instrument": s.name, "url": s.url, "attempt": attempt,
                            "wait_ms": wait.as_millis() as u64, "error": e.to_string(),
                        }),
                    },
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = tx.closed() => return,
                }
                got.retry();
            }
            Err(e) => break Err((e, attempt)),
        }
    };
    let item = match outcome {
        Ok(()) => StreamItem::Done(got.completion()),
        Err((e, attempts)) => {
            let reason = if got.pieces > 0 {
                format!(
                    "it stopped mid-answer after {} pieces of text: {e}",
                    got.pieces
                )
            } else if attempts > 0 {
                format!("{e} (after {} attempts)", attempts + 1)
            } else {
                e.to_string()
            };
            StreamItem::Failed(EngineError::Remote {
                model: s.name.clone(),
                reason,
            })
        }
    };
    let _ = tx.send(item);
}

impl Inner {
    /// One request; pieces go to `tx` as they arrive.
    async fn attempt(
        &self,
        url: &str,
        body: &serde_json::Value,
        tx: &UnboundedSender<StreamItem>,
        got: &mut Received,
    ) -> Result<(), RemoteError> {
        let s = &self.spec;
        let mut req = self.client.post(url).json(body);
        if let Some(k) = &s.api_key {
            req = req.bearer_auth(k);
        }
        let waited = |what: &str| RemoteError::Timeout {
            url: url.to_string(),
            what: what.to_string(),
            secs: s.timeout.as_secs_f64(),
        };
        let resp = tokio::time::timeout(s.timeout, req.send())
            .await
            .map_err(|_| waited("an answer"))?
            .map_err(|e| connect_error(url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = tokio::time::timeout(s.timeout, resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or(text);
            return Err(RemoteError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: clip(&message),
            });
        }
        let mut stream = resp.bytes_stream();
        let mut sse = wire::SseDecoder::default();
        loop {
            let what = if got.pieces == 0 {
                "the first token"
            } else {
                "the next piece"
            };
            let next = tokio::time::timeout(s.timeout, stream.next())
                .await
                .map_err(|_| waited(what))?;
            let (payloads, ended) = match next {
                Some(Ok(bytes)) => (sse.push(&bytes), false),
                Some(Err(e)) => {
                    return Err(RemoteError::Broken {
                        url: url.to_string(),
                        reason: match std::error::Error::source(&e) {
                            Some(src) => format!("{e}: {src}"),
                            None => e.to_string(),
                        },
                    });
                }
                None => (sse.finish().into_iter().collect(), true),
            };
            for p in payloads {
                let p = p.trim();
                if p == "[DONE]" {
                    return Ok(());
                }
                let v: serde_json::Value =
                    serde_json::from_str(p).map_err(|e| RemoteError::Protocol {
                        url: url.to_string(),
                        reason: format!("a stream chunk is not JSON ({e}): {}", clip(p)),
                    })?;
                let chunk = wire::chunk(&v);
                if let Some(error) = chunk.error {
                    return Err(RemoteError::Broken {
                        url: url.to_string(),
                        reason: error,
                    });
                }
                if let Some(text) = &chunk.text {
                    got.piece(text);
                    if tx.send(StreamItem::Text(text.clone())).is_err() {
                        return Ok(());
                    }
                }
                wire::merge_calls(&mut got.calls, &chunk);
                if chunk.finish.is_some() {
                    got.finish = chunk.finish;
                }
                if chunk.usage.is_some() {
                    got.usage = chunk.usage;
                }
            }
            if ended {
                // Some servers close without `[DONE]`; a finish reason is enough.
                return if got.finish.is_some() {
                    Ok(())
                } else {
                    Err(RemoteError::Broken {
                        url: url.to_string(),
                        reason: "the connection closed before the answer ended".into(),
                    })
                };
            }
        }
    }
}

/// Counts a remote generation the way the stage counts a local one: generations and
/// tokens in the metrics, a `played` event with tempo and swing.
struct Report {
    inner: Arc<Inner>,
    id: u64,
    ctx: EventContext,
    pieces: usize,
    ended: bool,
}

impl GenerationObserver for Report {
    fn item(&mut self, item: &StreamItem) {
        let name = &self.inner.spec.name;
        match item {
            StreamItem::Text(_) => self.pieces += 1,
            StreamItem::Done(c) => {
                self.ended = true;
                self.inner.metrics.generation(
                    name,
                    "finished",
                    c.prompt_tokens,
                    c.completion_tokens,
                );
                let t = &c.timings;
                let swing = (t.gap_mean_ms > 0.0 && t.gap_std_ms.is_finite())
                    .then(|| 1.0 / (1.0 + t.gap_std_ms / t.gap_mean_ms));
                self.inner.events.emit_in(
                    self.ctx,
                    EventKind::Played {
                        model: name.clone(),
                        generation: self.id,
                        tokens: c.completion_tokens,
                        tok_s: t.decode_tok_s,
                        swing,
                        ttft_ms: t.ttft_ms,
                    },
                );
            }
            StreamItem::Failed(_) => {
                self.ended = true;
                self.inner
                    .metrics
                    .generation(name, "failed", 0, self.pieces);
            }
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.ended {
            self.inner
                .metrics
                .generation(&self.inner.spec.name, "cancelled", 0, self.pieces);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_four_seconds() {
        let waits: Vec<u64> = (0..7).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| RemoteError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(status(503).retryable() && status(429).retryable());
        assert!(!status(401).retryable() && !status(404).retryable());
        assert!(
            !RemoteError::Protocol {
                url: "u".into(),
                reason: "x".into()
            }
            .retryable()
        );
    }

    #[test]
    fn timings_come_from_piece_arrivals() {
        let mut r = Received::new();
        for piece in ["a", "b", "c"] {
            std::thread::sleep(Duration::from_millis(5));
            r.piece(piece);
        }
        r.usage = Some((4, 0, 3));
        let c = r.completion();
        assert_eq!(c.text, "abc");
        assert_eq!(c.completion_tokens, 3);
        assert!(c.timings.ttft_ms >= 4.0, "{:?}", c.timings);
        assert!(c.timings.decode_tok_s > 0.0 && c.timings.gap_mean_ms > 0.0);
        assert_eq!(c.finish_reason, FinishReason::Stop);
    }
}
