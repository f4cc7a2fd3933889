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

mod admission;
mod chat;
mod embeddings;
mod error;
mod models;
mod openai;
mod play;
mod streaming;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use admission::Admission;
pub use error::ApiError;
pub use play::ORCHESTRA;

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
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            max_queue: 64,
            body_limit: 8 << 20,
            api_key: None,
        }
    }
}

/// What every handler reaches.
pub struct Inner {
    /// Set once the score has loaded (`/health` says 503 before).
    conductor: OnceLock<Conductor>,
    pub admission: Admission,
    api_key: Option<String>,
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
                api_key: config.api_key.clone().filter(|k| !k.is_empty()),
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
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(api)
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
            "no route `{} {}`: the API is under /v1 (chat/completions, completions, embeddings, models)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Checks `Authorization: Bearer <key>` when the server has a key.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(req).await;
    };
    let sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match sent {
        Some(s) if same(s.as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the API key is wrong").into_response(),
        None => ApiError::unauthorized(
            "this server needs an API key: send `Authorization: Bearer <key>`",
        )
        .into_response(),
    }
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn same(a: &[u8], b: &[u8]) -> bool {
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

/// Serves until `shutdown` resolves, then stops accepting connections and waits for
/// the requests in flight (streams included) to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state, config);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
