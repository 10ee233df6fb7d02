//! The one error type of the HTTP boundary and its mapping to status codes and
//! `{"error": {"code", "message"}}` with stable codes (and `balance`/`cost` on 402).

use crate::ledger::RuleError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    BadPayload(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("webhooks are disabled: STRIPE_WEBHOOK_SECRET is not set")]
    WebhooksDisabled,
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("this key's scope does not allow this call")]
    Forbidden,
    #[error("unknown account {0}")]
    UnknownAccount(String),
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    #[error("{0}")]
    InvalidQuantity(String),
    #[error("insufficient credits: balance {balance}, cost {cost}")]
    Insufficient { balance: i64, cost: i64 },
    #[error("{0}")]
    NotEntitled(String),
    #[error("{0:?} is not a member of this account")]
    NotAMember(String),
    #[error("all {0} seats of the plan are taken")]
    SeatLimit(u32),
    #[error("idempotency key {0:?} was already used with a different request")]
    KeyConflict(String),
    #[error("{0}")]
    Hold(String),
    #[error("unknown hold {0}")]
    UnknownHold(String),
    #[error("{0}")]
    CommandFailed(String),
    /// The cause is logged, never answered: database and internal error text stays out of API answers.
    #[error("the service is unavailable; try again")]
    Unavailable,
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not take this method")]
    MethodNotAllowed,
    #[error("no answer within {0} s; try again")]
    TimedOut(u64),
    /// A handler panicked: logged with the request id, answered without its text.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::BadSignature(_) => (S::BAD_REQUEST, "bad_signature"),
            ApiError::BadPayload(_) => (S::BAD_REQUEST, "bad_payload"),
            ApiError::BadRequest(_) => (S::BAD_REQUEST, "invalid_request"),
            ApiError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::WebhooksDisabled => (S::SERVICE_UNAVAILABLE, "webhooks_disabled"),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (S::FORBIDDEN, "forbidden"),
            ApiError::UnknownAccount(_) => (S::NOT_FOUND, "unknown_account"),
            ApiError::UnknownOperation(_) => (S::BAD_REQUEST, "unknown_operation"),
            ApiError::InvalidQuantity(_) => (S::BAD_REQUEST, "invalid_quantity"),
            ApiError::Insufficient { .. } => (S::PAYMENT_REQUIRED, "insufficient_credits"),
            ApiError::NotEntitled(_) => (S::FORBIDDEN, "not_entitled"),
            ApiError::NotAMember(_) => (S::FORBIDDEN, "not_a_member"),
            ApiError::SeatLimit(_) => (S::CONFLICT, "seat_limit_reached"),
            ApiError::KeyConflict(_) => (S::CONFLICT, "idempotency_conflict"),
            ApiError::Hold(_) => (S::CONFLICT, "hold_not_active"),
            ApiError::UnknownHold(_) => (S::NOT_FOUND, "unknown_hold"),
            ApiError::CommandFailed(_) => (S::UNPROCESSABLE_ENTITY, "command_failed"),
            ApiError::Unavailable => (S::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TimedOut(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownAccount(a) => ApiError::UnknownAccount(a),
            StoreError::KeyConflict(k) => ApiError::KeyConflict(k),
            StoreError::Rule(r) => r.into(),
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::Unavailable
            }
        }
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Insufficient { balance, needed } => {
                ApiError::Insufficient { balance: balance.get(), cost: needed.get() }
            }
            RuleError::NotAMember(u) => ApiError::NotAMember(u),
            RuleError::SeatLimit { seats } => ApiError::SeatLimit(seats),
            RuleError::UnknownHold(h) => ApiError::UnknownHold(h.into_string()),
            RuleError::NotEntitled { .. } => ApiError::NotEntitled(e.to_string()),
            RuleError::HoldNotActive { .. } | RuleError::CaptureTooLarge { .. } => ApiError::Hold(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// The error body, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `insufficient_credits`.
    pub code: String,
    pub message: String,
    /// With `insufficient_credits`: the spendable balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// With `insufficient_credits`: what the call costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let ApiError::Insufficient { balance, cost } = self {
            body["error"]["balance"] = json!(balance);
            body["error"]["cost"] = json!(cost);
        }
        (status, Json(body)).into_response()
    }
}
