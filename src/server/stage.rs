//! `GET /`: the stage page — one self-contained HTML file (CSS and JS inline, nothing
//! from the network) built into the binary. It draws what `/api/status` and
//! `/api/events` say and nothing more.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page, as shipped.
pub const PAGE: &str = include_str!("stage/index.html");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
