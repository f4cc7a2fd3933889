//! `GET /metrics`: the conductor's [`Metrics`](crate::metrics::Metrics) in the
//! Prometheus text exposition, with the gauges of the moment (queue, in flight,
//! budget) read just before.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let c = state.conductor()?;
    let m = c.metrics();
    m.set_load(state.admission.in_flight(), state.admission.queued());
    m.set_budget(c.stage_status().budget);
    Ok((
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        m.encode(),
    )
        .into_response())
}
