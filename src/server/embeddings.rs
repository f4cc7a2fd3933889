//! `POST /v1/embeddings`: pooled vectors from an embedding instrument, as floats or
//! base64 (little-endian f32, what the `openai` client asks for by default).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::AppState;
use super::chat::parse_body;
use super::error::ApiError;
use super::openai::{EmbeddingRequest, usage_json};
use super::play::ORCHESTRA;

fn inputs(v: Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "`input` must be a string or a list of strings (token arrays are not supported)",
        )
    };
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_body(body)?;
    let texts = inputs(req.input)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`encoding_format` is `{other}`: use float or base64"
            )));
        }
    };
    let conductor = state.conductor()?;
    let info = conductor.info().await?;
    let name = if req.model == ORCHESTRA {
        info.instruments
            .iter()
            .find(|i| i.embeddings)
            .map(|i| i.name.clone())
            .ok_or_else(|| {
                ApiError::bad_request("the score has no embedding instrument (`embeddings = true`)")
            })?
    } else {
        req.model.clone()
    };
    let handle = conductor.instrument(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!("the model `{name}` does not exist on this server"))
    })?;
    if !handle.embeddings {
        return Err(ApiError::bad_request(format!(
            "`{name}` generates text; embeddings come from instruments declared with `embeddings = true`"
        ))
        .with_code("model_not_supported"));
    }
    let _permit = state.admission.admit().await?;
    let lease = handle.stage.acquire(&handle.name).await?;
    let prompt_tokens: usize = texts.iter().map(|t| lease.tokenize(t, true).len()).sum();
    let vectors = lease.embed(texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let mut usage = usage_json(prompt_tokens, 0, 0);
    if let Some(u) = usage.as_object_mut() {
        u.remove("completion_tokens");
        u.remove("prompt_tokens_details");
    }
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": usage,
    }))
    .into_response())
}
