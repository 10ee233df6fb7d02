//! The HTTP server (SPEC §5, §7): Stripe webhooks, the API for the AI tools and operators, health and metrics.
//! Routes are thin: they check input and call the store, the intake or the commander; every error goes through
//! [`error::ApiError`].

pub mod accounts;
pub mod admin;
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
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

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

/// What every handler shares, behind one `Arc`: axum clones the state for every request, and one reference
/// count costs less than the score of them inside (the store, the intake and the commander each hold several).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Store,
    pub intake: Intake,
    pub commander: Commander,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub metrics: &'static Registry,
    pub broker: crate::queue::BrokerState,
    /// Set at the start of a shutdown: `/readyz` answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    pub fn broker_status(&self) -> &'static str {
        self.broker.status()
    }

    /// Seconds since the oldest outgoing event not yet published was written (0 when none).
    pub async fn outbox_lag(&self) -> f64 {
        self.store.outbox_lag(self.clock.now()).await.unwrap_or(0) as f64
    }
}

/// The API's routes, and `extra` routes nested at their own path (the console, from `serve`), all behind the
/// same middleware.
pub fn router(state: AppState, extra: Option<(&str, Router<AppState>)>) -> Router {
    let routes = Router::new()
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
        .route("/openapi.json", get(openapi::serve));
    let routes = match extra {
        Some((at, extra)) => routes.nest(at, extra),
        None => routes,
    };
    let routes = routes
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(CatchPanicLayer::custom(panicked))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), observe));
    with_request_ids(routes.with_state(state))
}

/// The outer layers: every answer compressed when the caller accepts gzip (ledger pages and CSV are large), and
/// every request given an `x-request-id` (the caller's, or a new one) that the answer carries back and every log
/// line of the request shows.
fn with_request_ids(router: Router) -> Router {
    router
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomId))
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids for requests that come without one: 16 random hex digits.
#[derive(Clone, Copy)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).ok()?;
        HeaderValue::from_str(&hex::encode(b)).ok().map(RequestId::new)
    }
}

/// A panic in a handler: logged (inside the request's span, with its id), answered 500 in the error shape.
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    tracing::error!(panic = %what, "handler panicked");
    axum::response::IntoResponse::into_response(error::ApiError::Internal)
}

/// A span, a log line, a deadline and metrics per request; handlers add the event or account id to their spans.
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
    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let span = tracing::info_span!("http", request_id = %id, %method, route = %route);
    let started = std::time::Instant::now();
    let limit = app.config.request_timeout_secs;
    let run = tracing::Instrument::instrument(next.run(req), span.clone());
    let resp = match tokio::time::timeout(std::time::Duration::from_secs(limit), run).await {
        Ok(resp) => resp,
        Err(_) => {
            // The work already handed to the writer still commits or not as a whole; a retry with the same
            // idempotency key finds out which.
            span.in_scope(|| tracing::warn!(seconds = limit, "request timed out"));
            axum::response::IntoResponse::into_response(error::ApiError::TimedOut(limit))
        }
    };
    let secs = started.elapsed().as_secs_f64();
    app.metrics.request(&route, &method, resp.status().as_u16(), secs);
    span.in_scope(|| tracing::info!(status = resp.status().as_u16(), ms = (secs * 1000.0) as u64, "request"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics: the caller gets a JSON 500 with the request id, the connection stays usable.
    #[tokio::test]
    async fn a_panic_answers_500_in_the_error_shape() {
        async fn boom() -> &'static str {
            panic!("boom in a handler")
        }
        let app = with_request_ids(Router::new().route("/boom", get(boom)).layer(CatchPanicLayer::custom(panicked)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let r = client.get(format!("http://{addr}/boom")).header("x-request-id", "req-7").send().await.unwrap();
            assert_eq!(r.status(), 500);
            assert_eq!(r.headers()["x-request-id"], "req-7");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body, serde_json::json!({"error": {"code": "internal", "message": "internal error"}}));
        }
    }
}
