//! What the AI tools call before and while spending: quotes, debits, holds (SPEC §7, rules 2, 11, 12).

use super::AppState;
use super::error::ApiError;
use super::extract::{Body, Service};
use super::views::*;
use crate::ledger::{Account, Hold, HoldId, Op, RuleError};
use crate::store::{Guard, IdempotencyKey, OnMissing, Outcome, Request};
use crate::time::format_rfc3339;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

pub const MAX_QUANTITY: i64 = 10_000;

/// Credits for `quantity` of `operation`, checking both.
pub fn price(app: &AppState, operation: &str, quantity: Option<i64>) -> Result<(i64, i64), ApiError> {
    let unit = app.config.catalog.cost(operation).ok_or_else(|| ApiError::UnknownOperation(operation.into()))?;
    let quantity = quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::InvalidQuantity(format!(
            "quantity must be between 1 and {MAX_QUANTITY}, got {quantity}"
        )));
    }
    Ok((quantity, unit * quantity))
}

fn stable_id(prefix: &str, account: &str, key: &str) -> String {
    let h = Sha256::digest(format!("{account}\0{key}").as_bytes());
    format!("{prefix}_{}", &hex::encode(h)[..24])
}

fn non_empty(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() || v.len() > 256 || v.contains('\0') {
        return Err(ApiError::BadRequest(format!("{field} must be 1 to 256 characters")));
    }
    Ok(())
}

/// Refuses an operation the account's plan in force does not include (an 8k image on Basic), checked in the
/// change's own batch on the account brought up to date.
fn entitled(app: &AppState, operation: &str) -> Guard {
    let (config, operation) = (app.config.clone(), operation.to_owned());
    std::sync::Arc::new(move |a: &Account| {
        let catalog = &config.catalog;
        let plan = a.plan();
        if catalog.entitled(catalog.plan_or_free(&plan), &operation) {
            Ok(())
        } else {
            Err(RuleError::NotEntitled { plan, operation: operation.clone() })
        }
    })
}

/// A hold as the change left it, with the account's balance.
fn hold_of(id: &HoldId) -> impl Fn(&Account) -> Option<(Hold, i64)> + Send + Sync + 'static {
    let id = id.clone();
    move |a| a.holds.iter().find(|h| h.id == id).map(|h| (h.clone(), a.balance.get()))
}

#[utoipa::path(post, path = "/v1/quote", request_body = QuoteRequest, security(("bearer" = [])),
    responses((status = 200, body = Quote), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody)))]
pub async fn quote(
    _: Service,
    State(app): State<AppState>,
    Body(q): Body<QuoteRequest>,
) -> Result<Json<Quote>, ApiError> {
    let (quantity, credits) = price(&app, &q.operation, q.quantity)?;
    Ok(Json(Quote { operation: q.operation, quantity, credits }))
}

#[utoipa::path(post, path = "/v1/accounts/{account}/debits", request_body = DebitRequest, security(("bearer" = [])),
    params(("account" = String, Path)),
    responses((status = 201, body = Debit), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 402, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(account = %account))]
pub async fn debit(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Body(d): Body<DebitRequest>,
) -> Result<(StatusCode, Json<Debit>), ApiError> {
    non_empty("idempotency_key", &d.idempotency_key)?;
    non_empty("user_id", &d.user_id)?;
    let (quantity, credits) = price(&app, &d.operation, d.quantity)?;
    let fingerprint = serde_json::json!(["debit", d.operation, quantity, d.user_id]).to_string();
    let op = Op::Debit {
        key: d.idempotency_key.clone(),
        credits,
        user_id: Some(d.user_id.clone()),
        operation: Some(d.operation.clone()),
    };
    let cause = format!("debit:{}", d.idempotency_key);
    let req = Request {
        account: account.clone(),
        op,
        cause: cause.clone(),
        key: Some(IdempotencyKey { key: cause, fingerprint }),
        on_missing: OnMissing::Refuse,
        now: app.clock.now(),
    };
    // A repeat gets the first answer before the plan is checked: a plan change does not turn it into a 403.
    let out = app.store.execute_guarded(req, Some(entitled(&app, &d.operation))).await?;
    app.metrics.debit(matches!(out, Outcome::Applied(_)), credits);
    let a = out.applied();
    Ok((
        StatusCode::CREATED,
        Json(Debit {
            debit_id: stable_id("dbt", &account, &d.idempotency_key),
            credits: a.credits,
            balance: a.balance.get(),
        }),
    ))
}

#[utoipa::path(post, path = "/v1/accounts/{account}/holds", request_body = HoldRequest, security(("bearer" = [])),
    params(("account" = String, Path)),
    responses((status = 201, body = HoldView), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 402, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
pub async fn hold(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Body(h): Body<HoldRequest>,
) -> Result<(StatusCode, Json<HoldView>), ApiError> {
    non_empty("user_id", &h.user_id)?;
    let (quantity, credits) = price(&app, &h.operation, h.quantity)?;
    let ttl = h.ttl_secs.unwrap_or(900);
    if !(1..=86_400).contains(&ttl) {
        return Err(ApiError::BadRequest(format!("ttl_secs must be between 1 and 86400, got {ttl}")));
    }
    let key = match &h.idempotency_key {
        Some(k) => {
            non_empty("idempotency_key", k)?;
            k.clone()
        }
        None => {
            let mut buf = [0u8; 12];
            getrandom::getrandom(&mut buf).map_err(|e| {
                tracing::error!(error = %e, "no random source");
                ApiError::Unavailable
            })?;
            hex::encode(buf)
        }
    };
    let id = HoldId::new(stable_id("hold", &account, &key));
    let now = app.clock.now();
    let op = Op::HoldCreate {
        id: id.clone(),
        credits,
        deadline: now + ttl,
        user_id: Some(h.user_id.clone()),
        operation: Some(h.operation.clone()),
    };
    let fingerprint = serde_json::json!(["hold", h.operation, quantity, h.user_id, ttl]).to_string();
    let req = Request {
        account: account.clone(),
        op,
        cause: format!("hold:{id}"),
        key: Some(IdempotencyKey { key: format!("hold:{key}"), fingerprint }),
        on_missing: OnMissing::Refuse,
        now,
    };
    let (_, seen) = app.store.execute_with(req, Some(entitled(&app, &h.operation)), hold_of(&id)).await?;
    Ok((StatusCode::CREATED, Json(hold_view(&app, &id, &account, seen).await?)))
}

/// The answer about a hold: as the change left it, or as stored (a repeat whose hold has moved on).
async fn hold_view(
    app: &AppState,
    id: &HoldId,
    account: &str,
    seen: Option<(Hold, i64)>,
) -> Result<HoldView, ApiError> {
    let (h, balance) = match seen {
        Some(v) => v,
        None => {
            let (_, h) = app.store.hold(id).await?.ok_or_else(|| ApiError::UnknownHold(id.to_string()))?;
            (h, app.store.account(account, app.clock.now()).await?.balance.get())
        }
    };
    Ok(HoldView {
        hold_id: h.id.into_string(),
        account: account.to_owned(),
        status: h.status.as_str().into(),
        credits: h.amount.get(),
        expires_at: format_rfc3339(h.deadline),
        balance,
    })
}

#[utoipa::path(post, path = "/v1/holds/{id}/capture", request_body = CaptureRequest, security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = HoldView), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn capture(
    _: Service,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<HoldView>, ApiError> {
    let id = HoldId::from(id);
    // The body is optional: none captures all.
    let body: CaptureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CaptureRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let (account, h) = app.store.hold(&id).await?.ok_or_else(|| ApiError::UnknownHold(id.to_string()))?;
    let credits = body.credits.unwrap_or(h.amount.get());
    if credits < 0 {
        return Err(ApiError::BadRequest(format!("credits must be 0 or more, got {credits}")));
    }
    let req = Request {
        account: account.clone(),
        op: Op::HoldCapture { id: id.clone(), credits },
        cause: format!("hold:{id}"),
        key: None,
        on_missing: OnMissing::Refuse,
        now: app.clock.now(),
    };
    let (_, seen) = app.store.execute_with(req, None, hold_of(&id)).await?;
    Ok(Json(hold_view(&app, &id, &account, seen).await?))
}

#[utoipa::path(post, path = "/v1/holds/{id}/release", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = HoldView), (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
pub async fn release(
    _: Service,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HoldView>, ApiError> {
    let id = HoldId::from(id);
    let (account, _) = app.store.hold(&id).await?.ok_or_else(|| ApiError::UnknownHold(id.to_string()))?;
    let req = Request {
        account: account.clone(),
        op: Op::HoldRelease { id: id.clone() },
        cause: format!("hold:{id}"),
        key: None,
        on_missing: OnMissing::Refuse,
        now: app.clock.now(),
    };
    let (_, seen) = app.store.execute_with(req, None, hold_of(&id)).await?;
    Ok(Json(hold_view(&app, &id, &account, seen).await?))
}
