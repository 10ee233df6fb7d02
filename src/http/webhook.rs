//! `POST /webhooks/stripe` (SPEC §5): verify the signature on the raw body, parse the envelope, hand the event to
//! the intake. 200 once the event is durably decided; 400 and nothing stored for bad input; 5xx only when it
//! could not be stored, so Stripe retries.

use super::AppState;
use super::error::ApiError;
use crate::stripe::event::parse_envelope;
use crate::stripe::signature::verify;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde_json::{Value, json};

#[utoipa::path(post, path = "/webhooks/stripe",
    request_body(content = String, description = "the raw Stripe event, signed in the Stripe-Signature header", content_type = "application/json"),
    params(("Stripe-Signature" = Option<String>, Header)),
    responses((status = 200, body = Object, description = "stored with its outcome"), (status = 400, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)))]
pub async fn stripe(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(super::extract::body_error)?;
    if app.config.webhook_secrets.is_empty() {
        return Err(ApiError::WebhooksDisabled);
    }
    let header = headers.get("stripe-signature").map(|v| v.to_str().unwrap_or(""));
    let now = app.clock.now();
    verify(header, &body, &app.config.webhook_secrets, app.config.webhook_tolerance_secs, now.secs())
        .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    let env = parse_envelope(&body).map_err(|e| ApiError::BadPayload(e.to_string()))?;
    let payload = std::str::from_utf8(&body).map_err(|_| ApiError::BadPayload("body is not UTF-8".into()))?;
    let d = app.intake.receive(&env, payload, now).await?;
    app.metrics.webhook(if d.duplicate { "duplicate" } else { d.status.as_str() });
    Ok(Json(json!({"received": env.id, "status": d.status, "detail": d.detail, "duplicate": d.duplicate})))
}
