//! The HTTP server (SPEC §5, §7): Stripe webhooks, the API for the AI tools and operators, health and metrics.
//! Routes are thin: they check input and call the store, the intake or the commander; every error goes through
//! [`error::ApiError`].

mod accounts;
mod admin;
pub mod error;
mod extract;
mod health;
pub mod openapi;
mod spend;
pub mod views;
mod webhook;

use crate::clock::Clock;
use crate::commands::Commander;
use crate::config::Config;
use crate::metrics::Registry;
use crate::store::Store;
use crate::stripe::Intake;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use std::sync::Arc;

/// Webhook bodies over this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

/// Every route, as (method, path): the router serves them and the OpenAPI document lists them (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/accounts/{account}/balance"),
    ("get", "/v1/accounts/{account}/entitlements"),
    ("get", "/v1/accounts/{account}/ledger"),
    ("get", "/v1/accounts/{account}/usage"),
    ("post", "/v1/accounts/{account}/members"),
    ("delete", "/v1/accounts/{account}/members/{user}"),
    ("post", "/v1/quote"),
    ("post", "/v1/accounts/{account}/debits"),
    ("post", "/v1/accounts/{account}/holds"),
    ("post", "/v1/holds/{id}/capture"),
    ("post", "/v1/holds/{id}/release"),
    ("get", "/v1/catalog"),
    ("post", "/v1/admin/accounts/{account}/adjustments"),
    ("get", "/v1/admin/failed-events"),
    ("post", "/v1/admin/failed-events/{id}/replay"),
    ("post", "/v1/commands"),
    ("get", "/v1/events"),
    ("post", "/webhooks/stripe"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub intake: Intake,
    pub commander: Commander,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub metrics: &'static Registry,
    pub broker: crate::queue::BrokerState,
}

impl AppState {
    pub fn broker_status(&self) -> &'static str {
        self.broker.status()
    }

    /// Seconds since the oldest outgoing event not yet published was written (0 when none).
    pub async fn outbox_lag(&self) -> f64 {
        self.store.outbox_lag(self.clock.now()).await.unwrap_or(0) as f64
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/accounts/{account}/balance", get(accounts::balance))
        .route("/v1/accounts/{account}/entitlements", get(accounts::entitlements))
        .route("/v1/accounts/{account}/ledger", get(accounts::ledger))
        .route("/v1/accounts/{account}/usage", get(accounts::usage))
        .route("/v1/accounts/{account}/members", post(accounts::add_member))
        .route("/v1/accounts/{account}/members/{user}", delete(accounts::remove_member))
        .route("/v1/quote", post(spend::quote))
        .route("/v1/accounts/{account}/debits", post(spend::debit))
        .route("/v1/accounts/{account}/holds", post(spend::hold))
        .route("/v1/holds/{id}/capture", post(spend::capture))
        .route("/v1/holds/{id}/release", post(spend::release))
        .route("/v1/catalog", get(admin::catalog))
        .route("/v1/admin/accounts/{account}/adjustments", post(admin::adjust))
        .route("/v1/admin/failed-events", get(admin::failed))
        .route("/v1/admin/failed-events/{id}/replay", post(admin::replay))
        .route("/v1/commands", post(admin::command))
        .route("/v1/events", get(admin::events))
        .route("/webhooks/stripe", post(webhook::stripe))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A span and metrics per request; handlers add the event or account id to their own spans.
async fn observe(axum::extract::State(app): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    // Ids with NUL cannot be stored (PostgreSQL text): refused here for every route.
    let uri = req.uri().to_string().to_ascii_lowercase();
    if uri.contains("%00") {
        return axum::response::IntoResponse::into_response(error::ApiError::BadRequest(
            "NUL is not allowed in paths or queries".into(),
        ));
    }
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!("http", %method, route = %route);
    let started = std::time::Instant::now();
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let secs = started.elapsed().as_secs_f64();
    app.metrics.request(&route, &method, resp.status().as_u16(), secs);
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), ms = (secs * 1000.0) as u64, "request"));
    resp
}
