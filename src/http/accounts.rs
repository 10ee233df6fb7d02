//! Reading an account: balance, entitlements, ledger, usage; and its team members (SPEC §7, rule 11).

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Body, Query, Service};
use super::views::*;
use crate::ledger::Op;
use crate::store::{GroupBy, Request};
use crate::time::{UnixTime, format_rfc3339, parse_rfc3339};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[utoipa::path(get, path = "/v1/accounts/{account}/balance", security(("bearer" = [])), params(("account" = String, Path)),
    responses((status = 200, body = Balance), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn balance(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
) -> Result<Json<Balance>, ApiError> {
    let v = app.store.account(&account, app.clock.now()).await?;
    let plan = app.config.catalog.plan_or_free(&v.plan);
    let affordable = app
        .config
        .catalog
        .costs
        .iter()
        .map(|(op, cost)| (op.clone(), if app.config.catalog.entitled(plan, op) { v.balance.get() / cost } else { 0 }))
        .collect();
    Ok(Json(Balance {
        account: v.account,
        plan: v.plan.clone(),
        balance: v.balance.get(),
        held: v.held.get(),
        lots: v
            .lots
            .iter()
            .map(|l| LotView {
                source: l.source.as_str().into(),
                remaining: l.remaining.get(),
                expires_at: l.expires_at.map(format_rfc3339),
            })
            .collect(),
        cycle: v.cycle.map(|(s, e)| CycleView { start: format_rfc3339(s), end: format_rfc3339(e) }),
        expiring_at_cycle_end: v.expiring_at_cycle_end.get(),
        affordable,
    }))
}

#[utoipa::path(get, path = "/v1/accounts/{account}/entitlements", security(("bearer" = [])), params(("account" = String, Path)),
    responses((status = 200, body = Entitlements), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn entitlements(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
) -> Result<Json<Entitlements>, ApiError> {
    let v = app.store.account(&account, app.clock.now()).await?;
    let p = app.config.catalog.plan_or_free(&v.plan);
    Ok(Json(Entitlements {
        account: v.account,
        plan: v.plan.clone(),
        seats: p.seats,
        storage_days: p.storage_days,
        max_resolution: p.max_resolution.clone(),
        priority: p.priority.clone(),
        analytics: p.analytics,
        api_access: p.api_access,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LedgerQuery {
    /// RFC 3339, a date, or unix seconds.
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
}

fn time_param(name: &str, v: Option<&str>, default: UnixTime) -> Result<UnixTime, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => parse_rfc3339(s).ok_or_else(|| {
            ApiError::BadRequest(format!("{name} {s:?} is not a time (RFC 3339, a date, or unix seconds)"))
        }),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{account}/ledger", security(("bearer" = [])), params(("account" = String, Path), LedgerQuery),
    responses((status = 200, body = LedgerPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ledger(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    app.store.account(&account, app.clock.now()).await?;
    let since = time_param("since", q.since.as_deref(), UnixTime::MIN)?;
    let until = time_param("until", q.until.as_deref(), UnixTime::MAX)?;
    let after = super::extract::cursor("cursor", q.cursor.as_deref())?;
    let limit = super::extract::limit(q.limit)?;
    let rows = app.store.entries_page(&account, after, since, until, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|e| e.id.to_string())).flatten();
    let entries = rows
        .into_iter()
        .map(|e| EntryView {
            id: e.id,
            at: format_rfc3339(e.at),
            kind: e.kind,
            amount: e.amount,
            lot_id: e.lot_id,
            balance_after: e.balance_after,
            cause: e.cause,
            user_id: e.user_id,
            operation: e.operation,
            shortfall: e.shortfall,
        })
        .collect();
    Ok(Json(LedgerPage { account, entries, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// Start of the period, inclusive (RFC 3339, a date, or unix seconds). Default: 30 days before `to`.
    pub from: Option<String>,
    /// End of the period, inclusive, to the second: a debit made this second is in. Default: now.
    pub to: Option<String>,
    /// `operation` (default), `user` or `day`.
    pub group_by: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts/{account}/usage", security(("bearer" = [])), params(("account" = String, Path), UsageQuery),
    responses((status = 200, description = "the report, as JSON or (Accept: text/csv) as CSV with header key,credits,count", content((Usage = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn usage(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Query(q): Query<UsageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = app.clock.now();
    let v = app.store.account(&account, now).await?;
    if !app.config.catalog.plan_or_free(&v.plan).analytics {
        return Err(ApiError::NotEntitled(format!(
            "usage reports come with plans that include analytics; the {} plan does not",
            v.plan
        )));
    }
    let to = time_param("to", q.to.as_deref(), now)?;
    let from = time_param("from", q.from.as_deref(), to - 30 * 86_400)?;
    if from > to {
        return Err(ApiError::BadRequest("from must not be after to".into()));
    }
    let (group, name) = match q.group_by.as_deref().unwrap_or("operation") {
        "operation" => (GroupBy::Operation, "operation"),
        "user" => (GroupBy::User, "user"),
        "day" => (GroupBy::Day, "day"),
        other => return Err(ApiError::BadRequest(format!("group_by must be operation, user or day, got {other:?}"))),
    };
    let rows = app.store.usage(&account, from, to, group).await?;
    let wants_csv = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let mut csv = String::from("key,credits,count\n");
        for r in &rows {
            csv.push_str(&format!("{},{},{}\n", csv_field(&r.key), r.credits, r.count));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(Json(Usage { account, from: format_rfc3339(from), to: format_rfc3339(to), group_by: name.into(), rows })
        .into_response())
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

async fn members_view(app: &AppState, account: &str) -> Result<Members, ApiError> {
    let v = app.store.account(account, app.clock.now()).await?;
    let seats = app.config.catalog.plan_or_free(&v.plan).seats;
    Ok(Members { account: v.account, members: v.members, seats })
}

#[utoipa::path(post, path = "/v1/accounts/{account}/members", request_body = MemberRequest, security(("bearer" = [])), params(("account" = String, Path)),
    responses((status = 201, body = Members), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_member(
    _: Service,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Body(m): Body<MemberRequest>,
) -> Result<(StatusCode, Json<Members>), ApiError> {
    if m.user_id.trim().is_empty() || m.user_id.len() > 256 || m.user_id.contains('\0') {
        return Err(ApiError::BadRequest("user_id must be 1 to 256 characters".into()));
    }
    let seats = members_view(&app, &account).await?.seats;
    let op = Op::AddMember { user_id: m.user_id.clone(), seats };
    app.store
        .execute(Request {
            account: account.clone(),
            op,
            cause: format!("member:{}", m.user_id),
            key: None,
            on_missing: crate::store::OnMissing::Refuse,
            now: app.clock.now(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(members_view(&app, &account).await?)))
}

#[utoipa::path(delete, path = "/v1/accounts/{account}/members/{user}", security(("bearer" = [])), params(("account" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = Members), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    _: Service,
    State(app): State<AppState>,
    Path((account, user)): Path<(String, String)>,
) -> Result<Json<Members>, ApiError> {
    let op = Op::RemoveMember { user_id: user.clone() };
    let r = app
        .store
        .execute(Request {
            account: account.clone(),
            op,
            cause: format!("member:{user}"),
            key: None,
            on_missing: crate::store::OnMissing::Refuse,
            now: app.clock.now(),
        })
        .await;
    match r {
        Err(crate::store::StoreError::Rule(crate::ledger::RuleError::NotAMember(u))) => {
            Err(ApiError::NotFound(format!("{u:?} is not a member")))
        }
        other => other.map(|_| ()).map_err(ApiError::from),
    }?;
    Ok(Json(members_view(&app, &account).await?))
}
