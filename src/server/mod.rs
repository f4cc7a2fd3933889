//! `orchestra serve`: the orchestra as an OpenAI-compatible HTTP server (axum). This
//! module speaks HTTP and nothing else: every endpoint turns a request into the same
//! library calls the CLI and the REPL make ([`Conductor`], the stage, the event bus)
//! and maps typed errors to status codes. It owns no orchestration logic.
//!
//! # Layout
//! - `openai`: the wire types and their conversions. `error`: [`ApiError`], the one
//!   place errors become statuses and OpenAI error bodies.
//! - `play`: what a `model` id plays (arrangement, section, instrument) and playing it.
//! - `chat`: `/v1/chat/completions` and `/v1/completions`; `streaming`: SSE chunks.
//! - `embeddings`: `/v1/embeddings`. `models`: `/v1/models`, `/health`.
//! - `admission`: in-flight limit and bounded queue (429 past it).
//! - `observe`: one request's id, event context and counters, from arrival to end.
//! - `stage`: `GET /`, the stage page. `status`: `/api/status`. `events`:
//!   `/api/events` (SSE). `metrics`: `/metrics` (Prometheus).

mod admission;
mod chat;
mod embeddings;
mod error;
mod events;
mod metrics;
mod models;
mod observe;
mod openai;
mod play;
mod stage;
mod status;
mod streaming;
mod voice;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use admission::Admission;
pub use error::ApiError;
pub use play::ORCHESTRA;
pub use stage::PAGE as STAGE_PAGE;
pub use status::report as status_report;

use crate::score::Conductor;

/// Limits and access of one server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Requests playing at once; more wait in the queue.
    pub max_in_flight: usize,
    /// Requests waiting for a turn; more are refused with 429.
    pub max_queue: usize,
    /// Largest request body in bytes (413 past it).
    pub body_limit: usize,
    /// Clients must send `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Most messages one chat request may carry (400 past it): a body under the size
    /// limit can still hold a million empty messages, each rendered and tokenised.
    pub max_messages: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            max_queue: 64,
            body_limit: 8 << 20,
            api_key: None,
            max_messages: 1024,
        }
    }
}

/// What every handler reaches.
pub struct Inner {
    /// Set once the score has loaded (`/health` says 503 before).
    conductor: OnceLock<Conductor>,
    pub admission: Admission,
    /// `max_in_flight`, `max_queue`, as configured.
    limits: (usize, usize),
    /// Requests answered since the start (counted where they end, `observe`).
    done: DoneCounters,
    api_key: Option<String>,
    /// Bumped to stop every request playing now (`POST /api/voice` "stop"); each
    /// playing task watches it.
    stop: tokio::sync::watch::Sender<u64>,
    /// `ServeConfig::max_messages`.
    max_messages: usize,
    /// Cancelled when the server begins to stop: event streams (`/api/events`, the
    /// stage page, `orchestra listen`) end with a `closing` event then, because they
    /// are not requests in flight and would otherwise hold the shutdown open forever.
    closing: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct DoneCounters {
    requests: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

/// Shared state of the server; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    pub fn new(config: &ServeConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                conductor: OnceLock::new(),
                admission: Admission::new(config.max_in_flight, config.max_queue),
                limits: (config.max_in_flight.max(1), config.max_queue),
                done: DoneCounters::default(),
                api_key: config.api_key.clone().filter(|k| !k.is_empty()),
                stop: tokio::sync::watch::Sender::new(0),
                max_messages: config.max_messages.max(1),
                closing: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// The state of a server whose score is loaded already.
    pub fn with_conductor(config: &ServeConfig, conductor: Conductor) -> Self {
        let s = Self::new(config);
        s.set_conductor(conductor);
        s
    }

    /// Marks the score loaded: requests are answered from now on.
    pub fn set_conductor(&self, conductor: Conductor) {
        let _ = self.inner.conductor.set(conductor);
    }

    /// The score's conductor, or 503 while it is still loading.
    pub fn conductor(&self) -> Result<&Conductor, ApiError> {
        self.inner
            .conductor
            .get()
            .ok_or_else(|| ApiError::unavailable("the score is still loading", 2))
    }
}

/// Every route of the server.
pub fn router(state: AppState, config: &ServeConfig) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models::list))
        .layer(middleware::from_fn_with_state(state.clone(), refusals))
        .route("/api/status", get(status::status))
        .route("/api/events", get(events::events))
        .route("/metrics", get(metrics::metrics))
        .route("/api/voice", post(voice::voice))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(api)
        .route("/", get(stage::page))
        .route("/health", get(models::health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "no route `{} {}`: the API is under /v1 (chat/completions, completions, embeddings, models); the stage page is /, its data /api/status and /api/events, metrics /metrics",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Counts and announces requests refused for a full queue (429).
async fn refusals(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if res.status() == StatusCode::TOO_MANY_REQUESTS
        && let Ok(c) = state.conductor()
    {
        c.metrics().request_refused();
        c.events().emit(crate::events::EventKind::QueueFull {
            in_flight: state.admission.in_flight(),
            queued: state.admission.queued(),
        });
    }
    res
}

/// `?key=...` of a URL (percent-decoded): how the stage page's `EventSource`, which
/// cannot set headers, sends the key.
fn query_key(req: &Request) -> Option<String> {
    let query = req.uri().query()?;
    let raw = query.split('&').find_map(|p| p.strip_prefix("key="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Checks `Authorization: Bearer <key>` (or `?key=<key>`) when the server has a key.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(req).await;
    };
    let from_query = query_key(&req);
    let sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(from_query.as_deref());
    match sent {
        Some(s) if keys_match(s.as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the API key is wrong").into_response(),
        None => ApiError::unauthorized(
            "this server needs an API key: send `Authorization: Bearer <key>` (or `?key=<key>` in the URL)",
        )
        .into_response(),
    }
}

/// Whether the key a client sent is the server's, compared without stopping at the
/// first difference: the time taken gives no hint of how much of a guess was right.
pub fn keys_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses to listen beyond loopback without an API key.
pub fn check_bind(host: IpAddr, api_key: Option<&str>) -> Result<(), String> {
    if host.is_loopback() || api_key.is_some_and(|k| !k.is_empty()) {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on `{host}` without an API key: anyone on the network could use the models; set `--api-key KEY` (or ORCHESTRA_API_KEY), or bind to 127.0.0.1"
    ))
}

/// Serves until `shutdown` resolves, then stops accepting connections, ends the event
/// streams (with a `closing` event) and waits for the requests in flight (streamed
/// answers included) to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let app = router(state, config);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        closing.cancel();
    })
    .await
}
