//! Errors as OpenAI's clients expect them: an HTTP status and
//! `{"error": {"message", "type", "param", "code"}}`. Library errors are mapped here,
//! in one place, so every endpoint answers a failure the same way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::score::ScoreError;
use crate::stage::StageError;

/// One failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before trying again (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .with_code("model_not_found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
            .with_code("invalid_api_key")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message);
        e.retry_after = Some(retry_after);
        e
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body (also sent as an SSE event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::PromptTooLong { .. } => {
                ApiError::bad_request(message).with_code("context_length_exceeded")
            }
            EngineError::EmptyPrompt
            | EngineError::Grammar
            | EngineError::Template { .. }
            | EngineError::Schema { .. }
            | EngineError::UnknownTool { .. } => ApiError::bad_request(message),
            EngineError::NotAnEmbeddingModel(_) | EngineError::EmbeddingOnly(_) => {
                ApiError::bad_request(message).with_code("model_not_supported")
            }
            // The instrument's own server failed us: a gateway error, not ours.
            EngineError::Remote { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
            }
            _ => ApiError::internal(message),
        }
    }
}

impl From<crate::score::InstrumentError> for ApiError {
    fn from(e: crate::score::InstrumentError) -> Self {
        match e {
            crate::score::InstrumentError::Stage(e) => e.into(),
            crate::score::InstrumentError::Engine(e) => e.into(),
        }
    }
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        let message = e.to_string();
        match e {
            StageError::BudgetFull { .. } => ApiError::unavailable(message, 5),
            StageError::Unknown { .. } => ApiError::not_found(message),
            _ => ApiError::internal(message),
        }
    }
}

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> Self {
        let message = e.to_string();
        match e {
            ScoreError::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
            }
            ScoreError::Stopped => ApiError::unavailable(message, 1),
            ScoreError::Refused {
                kind: crate::score::Refusal::ContextLength,
                ..
            } => ApiError::bad_request(message).with_code("context_length_exceeded"),
            ScoreError::Refused { .. } => ApiError::bad_request(message),
            // A score error (file:line and traceback in the message) is the server's
            // fault, not the client's.
            _ => ApiError::internal(message).with_code("score_error"),
        }
    }
}
