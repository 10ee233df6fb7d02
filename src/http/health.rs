//! Health, readiness, metrics and the OpenAPI document: no key needed.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `up` or `down`.
    pub database: String,
    /// `up`, `down`, or `none` without a broker. Reported, not judged: HTTP works without the broker (events
    /// wait in the outbox), so a broker outage is an alert, not a reason to take the instance out of service.
    pub broker: String,
    /// Seconds since the oldest event not yet published was written (0 when none).
    pub outbox_lag_seconds: f64,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let database = app.store.ping().await;
    let broker = app.broker_status();
    let lag = if database { app.outbox_lag().await } else { 0.0 };
    let body = Json(Ready {
        database: if database { "up" } else { "down" }.into(),
        broker: broker.into(),
        outbox_lag_seconds: lag,
    });
    if database { body.into_response() } else { (StatusCode::SERVICE_UNAVAILABLE, body).into_response() }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let lag = app.outbox_lag().await;
    let text = app.metrics.render(&[("billing_outbox_lag_seconds", "Age of the oldest event not yet published", lag)]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
