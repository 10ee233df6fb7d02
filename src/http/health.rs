//! Health, readiness, metrics and the OpenAPI document: no key needed.

use super::AppState;
use crate::metrics::Gauge;
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
    /// True once a shutdown began: the instance finishes its work and wants no new work (503).
    pub shutting_down: bool,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let shutting_down = app.draining.load(std::sync::atomic::Ordering::SeqCst);
    let database = app.store.ping().await;
    let broker = app.broker_status();
    let lag = if database { app.outbox_lag().await } else { 0.0 };
    let body = Json(Ready {
        database: if database { "up" } else { "down" }.into(),
        broker: broker.into(),
        outbox_lag_seconds: lag,
        shutting_down,
    });
    if database && !shutting_down {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut gauges = Vec::new();
    let (lag, unpublished) = app.store.outbox_backlog(app.clock.now()).await.unwrap_or((0, 0));
    gauges.push(Gauge::new("billing_outbox_lag_seconds", "Age of the oldest event not yet published", lag as f64));
    gauges.push(Gauge::new("billing_outbox_unpublished", "Events waiting to be published", unpublished as f64));
    let counts = app.store.inbox_counts().await.unwrap_or_default();
    let count = |status: &str| counts.iter().filter(|(s, _)| s == status).map(|(_, n)| *n).sum::<i64>() as f64;
    gauges.push(Gauge::new("billing_events_failed", "Events and commands failed, to replay", count("failed")));
    gauges.push(Gauge::new("billing_events_waiting", "Events and commands waiting for a fact", count("waiting")));
    let broker = app.broker_status();
    gauges.push(Gauge::new("billing_broker_up", "1 while connected to RabbitMQ", f64::from(u8::from(broker == "up"))));
    let configured = f64::from(u8::from(broker != "none"));
    gauges.push(Gauge::new("billing_broker_configured", "1 when AMQP_URL is set", configured));
    let pool = app.store.pool();
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    let help = "Database connections of the read pool, by state";
    gauges.push(Gauge::new("billing_db_pool_connections", help, idle).with("state", "idle"));
    gauges.push(Gauge::new("billing_db_pool_connections", help, (size - idle).max(0.0)).with("state", "in_use"));
    let commit = option_env!("BILLING_GIT_COMMIT").unwrap_or("unknown");
    gauges.push(
        Gauge::new("billing_build_info", "The running build", 1.0)
            .with("version", env!("CARGO_PKG_VERSION"))
            .with("commit", commit),
    );
    let text = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
