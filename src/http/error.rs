//! The one error type of the HTTP boundary and its mapping to status codes and `{"error": {code, message}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    BadPayload(String),
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("webhooks are disabled: STRIPE_WEBHOOK_SECRET is not set")]
    WebhooksDisabled,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadSignature(_) => (StatusCode::BAD_REQUEST, "bad_signature"),
            ApiError::BadPayload(_) => (StatusCode::BAD_REQUEST, "bad_payload"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::WebhooksDisabled => (StatusCode::SERVICE_UNAVAILABLE, "webhooks_disabled"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        ApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (status, Json(json!({"error": {"code": code, "message": self.to_string()}}))).into_response()
    }
}
