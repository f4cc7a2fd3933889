//! `GET /v1/models` (every id a client may send as `model`) and `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::play::ORCHESTRA;

/// Every model id, `orchestra` first, then `orchestra/<section>`, then instruments.
pub async fn model_ids(state: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(catalog(state)
        .await?
        .into_iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect())
}

async fn catalog(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let info = state.conductor()?.info().await?;
    let created = super::openai::now();
    let players: Vec<_> = info.instruments.iter().filter(|i| !i.embeddings).collect();
    // What a request can count on: the narrowest player that may solo.
    let window = |section: Option<&str>| info.window(section).map_or(0, |w| w.context);
    let mut out = vec![json!({
        "id": ORCHESTRA,
        "object": "model",
        "created": created,
        "owned_by": "orchestra",
        "kind": "arrangement",
        "description": format!("the score `{}`: routing, comping, solo and review", info.name),
        "context_length": window(None),
        "score_version": info.version,
    })];
    for section in &info.sections {
        let members: Vec<_> = players.iter().filter(|i| &i.section == section).collect();
        if members.is_empty() {
            continue;
        }
        out.push(json!({
            "id": format!("{ORCHESTRA}/{section}"),
            "object": "model",
            "created": created,
            "owned_by": "orchestra",
            "kind": "section",
            "description": format!("the arrangement with the `{section}` section soloing"),
            "context_length": window(Some(section)),
        }));
    }
    for i in &info.instruments {
        out.push(json!({
            "id": i.name,
            "object": "model",
            "created": created,
            "owned_by": "orchestra",
            "kind": if i.embeddings { "embeddings" } else { "instrument" },
            "section": i.section,
            "source": i.model,
            "context_length": i.context,
            "max_tokens": i.max_tokens,
        }));
    }
    Ok(out)
}

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let data = catalog(&state).await?;
    Ok(axum::Json(json!({ "object": "list", "data": data })).into_response())
}

/// 200 once the score is loaded, 503 before.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.conductor() {
        Ok(c) => axum::Json(json!({
            "status": "ok",
            "score": c.name(),
            "score_version": c.version(),
            "in_flight": state.admission.in_flight(),
            "queued": state.admission.queued(),
        }))
        .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "loading" })),
        )
            .into_response(),
    }
}
