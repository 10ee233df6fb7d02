//! Operators' calls (admin keys): adjustments, failed events and their replay, commands; and the catalog.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, Body, Query, Service};
use super::views::*;
use crate::catalog::Catalog;
use crate::ledger::Op;
use crate::store::{IdempotencyKey, InboxFilter, InboxStatus, OnMissing, Request};
use crate::time::format_rfc3339;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

#[utoipa::path(get, path = "/v1/catalog", security(("bearer" = [])),
    responses((status = 200, body = Catalog), (status = 401, body = ErrorBody)))]
pub async fn catalog(_: Service, State(app): State<AppState>) -> Json<Catalog> {
    Json(app.config.catalog.clone())
}

#[utoipa::path(post, path = "/v1/admin/accounts/{account}/adjustments", request_body = AdjustmentRequest, security(("bearer" = [])),
    params(("account" = String, Path)),
    responses((status = 201, body = Adjustment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn adjust(
    _: Admin,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Body(a): Body<AdjustmentRequest>,
) -> Result<(StatusCode, Json<Adjustment>), ApiError> {
    let out = adjust_account(&app, account, &a).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// An operator's adjustment, checked and applied: the API's and the console's one path.
pub async fn adjust_account(app: &AppState, account: String, a: &AdjustmentRequest) -> Result<Adjustment, ApiError> {
    if a.credits == 0 || !(-1_000_000_000..=1_000_000_000).contains(&a.credits) {
        return Err(ApiError::BadRequest(format!(
            "credits must be non-zero and at most 1000000000 either way, got {}",
            a.credits
        )));
    }
    for (field, v) in [("reason", &a.reason), ("idempotency_key", &a.idempotency_key)] {
        if v.trim().is_empty() || v.len() > 256 || v.contains('\0') {
            return Err(ApiError::BadRequest(format!("{field} must be 1 to 256 characters")));
        }
    }
    let req = Request {
        account,
        op: Op::Adjust { key: format!("http:{}", a.idempotency_key), credits: a.credits },
        cause: format!("adjustment:{} ({})", a.idempotency_key, a.reason),
        key: Some(IdempotencyKey {
            key: format!("adjust:{}", a.idempotency_key),
            fingerprint: serde_json::json!([a.credits, a.reason]).to_string(),
        }),
        on_missing: OnMissing::Refuse,
        now: app.clock.now(),
    };
    let out = app.store.execute(req).await?;
    let r = out.applied();
    Ok(Adjustment { credits: r.credits, balance: r.balance.get() })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FailedQuery {
    /// `stripe` or `queue`.
    pub source: Option<String>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/failed-events", security(("bearer" = [])), params(FailedQuery),
    responses((status = 200, body = FailedEvents), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn failed(
    _: Admin,
    State(app): State<AppState>,
    Query(q): Query<FailedQuery>,
) -> Result<Json<FailedEvents>, ApiError> {
    if let Some(s) = q.source.as_deref().filter(|s| !matches!(*s, "stripe" | "queue")) {
        return Err(ApiError::BadRequest(format!("source must be stripe or queue, got {s:?}")));
    }
    let after = super::extract::cursor("cursor", q.cursor.as_deref())?;
    const PAGE: usize = 100;
    let mut rows = Vec::new();
    for status in [InboxStatus::Failed, InboxStatus::Waiting] {
        let f = InboxFilter {
            status: Some(status),
            source: q.source.clone(),
            after_id: after,
            limit: PAGE as i64,
            ..Default::default()
        };
        rows.extend(app.store.inbox_list(&f).await?);
    }
    rows.sort_by_key(|r| r.id);
    rows.truncate(PAGE);
    let next_cursor = (rows.len() == PAGE).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    let items = rows
        .into_iter()
        .map(|r| FailedEvent {
            id: r.id,
            source: r.source,
            event_id: r.event_id,
            kind: r.kind,
            status: r.status.as_str().into(),
            error: r.detail,
            attempts: r.attempts,
            first_seen: format_rfc3339(r.first_seen),
            last_seen: format_rfc3339(r.last_seen),
        })
        .collect();
    Ok(Json(FailedEvents { items, next_cursor }))
}

#[utoipa::path(post, path = "/v1/admin/failed-events/{id}/replay", security(("bearer" = [])), params(("id" = String, Path, description = "inbox id or event id")),
    responses((status = 200, body = Replay), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn replay(_: Admin, State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Replay>, ApiError> {
    Ok(Json(replay_stored(&app, &id).await?))
}

/// Decide a stored event again (by inbox id or event id): the API's and the console's one path.
pub async fn replay_stored(app: &AppState, id: &str) -> Result<Replay, ApiError> {
    let row = app.store.inbox_get(id).await?.ok_or_else(|| ApiError::NotFound(format!("no stored event {id}")))?;
    let now = app.clock.now();
    let (status, duplicate, detail) = if row.source == crate::commands::SOURCE {
        let o = app.commander.replay(row.id, now).await?;
        (o.status, o.duplicate, o.detail)
    } else {
        let d = app.intake.replay(row.id, now).await?;
        (d.status, d.duplicate, d.detail)
    };
    let outcome = match (duplicate, status) {
        (true, InboxStatus::Applied | InboxStatus::Ignored) => "already_applied",
        (_, InboxStatus::Applied | InboxStatus::Ignored) => "applied",
        (_, InboxStatus::Waiting) => "waiting",
        _ => "failed",
    };
    let error = (outcome == "failed" || outcome == "waiting").then_some(detail).flatten();
    Ok(Replay { outcome: outcome.into(), error })
}

#[utoipa::path(post, path = "/v1/commands", request_body(content = String, description = "a command: {type, id, ...} (SPEC §6)", content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, body = CommandResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn command(
    _: Admin,
    State(app): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<CommandResult>, ApiError> {
    let body = body.map_err(super::extract::body_error)?;
    let cmd = crate::commands::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let raw = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    let o = app.commander.apply(&cmd, raw, app.clock.now()).await?;
    app.metrics.command(o.status.as_str());
    if o.status == InboxStatus::Failed && !o.duplicate {
        return Err(ApiError::CommandFailed(o.detail.unwrap_or_default()));
    }
    Ok(Json(CommandResult {
        id: o.id,
        status: o.status.as_str().into(),
        duplicate: o.duplicate,
        detail: o.detail,
        credits: o.credits,
        balance: o.balance,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// The cursor of the last event seen; default: from the start.
    pub after: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/events", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn events(
    _: Service,
    State(app): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let after = super::extract::cursor("after", q.after.as_deref())?;
    let limit = super::extract::limit(q.limit)?;
    let rows = app.store.outbox_page(after, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.pos.to_string())).flatten();
    let events = rows
        .into_iter()
        .map(|r| OutEvent {
            cursor: r.pos,
            id: r.event_id,
            kind: r.kind,
            account: r.account_id,
            published: r.published_at.is_some(),
            event: serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(Json(EventsPage { events, next_cursor }))
}
