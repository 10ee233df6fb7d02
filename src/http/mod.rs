//! The HTTP server: Stripe webhooks, health checks. Routes are thin: they check input and call the intake or
//! the store; every error goes through [`error::ApiError`].

pub mod error;
mod webhook;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use crate::stripe::Intake;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Webhook bodies over this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub intake: Intake,
    pub config: Arc<Config>,
    pub clock: Clock,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhook::stripe).layer(DefaultBodyLimit::max(MAX_BODY)))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .fallback(|| async { error::ApiError::NotFound })
        .layer(middleware::from_fn(trace))
        .with_state(state)
}

async fn readyz(State(app): State<AppState>) -> Response {
    let database = app.store.ping().await;
    let body = Json(json!({"database": if database { "up" } else { "down" }}));
    if database { body.into_response() } else { (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response() }
}

/// A span per request; handlers add the event or account id to their own spans.
async fn trace(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    let _enter = span.enter();
    let started = std::time::Instant::now();
    drop(_enter);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.in_scope(|| {
        tracing::info!(status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request")
    });
    resp
}
