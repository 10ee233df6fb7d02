//! Failed and waiting events: the filtered list, one event with its payload, and replay (one, or all shown).

use super::auth::CsrfOnly;
use super::{ConsoleError, Operator, page, when};
use crate::http::AppState;
use crate::http::admin::replay_stored;
use crate::store::{InboxFilter, InboxRow, InboxStatus};
use crate::time::{UnixTime, parse_rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use maud::{Markup, html};
use serde::Deserialize;

/// Rows on a page.
const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    source: String,
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: i64,
}

/// `2026-11-30` (the day's start, UTC) or a full RFC 3339 time; empty is none.
fn time(field: &str, v: &str, end_of_day: bool) -> Result<Option<UnixTime>, ConsoleError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let full = if v.len() == 10 { format!("{v}T00:00:00Z") } else { v.to_owned() };
    let t = parse_rfc3339(&full)
        .ok_or_else(|| ConsoleError::BadInput(format!("{field}: expected a date like 2026-11-30, got {v:?}")))?;
    Ok(Some(if end_of_day && v.len() == 10 { t + 86_399 } else { t }))
}

fn filter(f: &Filters) -> Result<InboxFilter, ConsoleError> {
    let status = match f.status.as_str() {
        "" | "any" => None,
        s => Some(
            Some(InboxStatus::parse(s))
                .filter(|s| matches!(s, InboxStatus::Failed | InboxStatus::Waiting))
                .ok_or_else(|| ConsoleError::BadInput(format!("status: failed, waiting or any, got {s:?}")))?,
        ),
    };
    if !matches!(f.source.as_str(), "" | "stripe" | "queue") {
        return Err(ConsoleError::BadInput(format!("source: stripe or queue, got {:?}", f.source)));
    }
    Ok(InboxFilter {
        status,
        source: Some(f.source.clone()).filter(|s| !s.is_empty()),
        kind: Some(f.kind.trim().to_owned()).filter(|s| !s.is_empty()),
        since: time("since", &f.since, false)?,
        until: time("until", &f.until, true)?,
        after_id: f.after,
        limit: PAGE,
        problems_only: status.is_none(),
        ..Default::default()
    })
}

fn query_string(f: &Filters, after: i64) -> String {
    let pairs = [
        ("source", f.source.as_str()),
        ("status", f.status.as_str()),
        ("type", f.kind.as_str()),
        ("since", f.since.as_str()),
        ("until", f.until.as_str()),
    ];
    let mut q: Vec<String> =
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
    q.push(format!("after={after}"));
    q.join("&")
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn list(op: Operator, State(app): State<AppState>, Query(f): Query<Filters>) -> Result<Markup, ConsoleError> {
    let rows = app.store.inbox_list(&filter(&f)?).await?;
    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| r.id)).flatten();
    let sel = |v: &str, cur: &str| v == cur;
    Ok(page(
        &op,
        "Failed and waiting events",
        html! {
            form.filters method="get" action="/console/events" {
                label { "Source" select name="source" {
                    option value="" selected[sel("", &f.source)] { "any" }
                    option value="stripe" selected[sel("stripe", &f.source)] { "stripe" }
                    option value="queue" selected[sel("queue", &f.source)] { "queue" }
                } }
                label { "Status" select name="status" {
                    option value="" selected[sel("", &f.status)] { "failed or waiting" }
                    option value="failed" selected[sel("failed", &f.status)] { "failed" }
                    option value="waiting" selected[sel("waiting", &f.status)] { "waiting" }
                } }
                label { "Type" input name="type" value=(f.kind) placeholder="invoice.paid"; }
                label { "Seen since" input type="date" name="since" value=(f.since); }
                label { "until" input type="date" name="until" value=(f.until); }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() { p.muted { "Nothing failed or waiting matches." } } @else {
                form #replay-all method="post" action="/console/events/replay-shown" {
                    (op.csrf_field())
                    @for r in &rows { input type="hidden" name="id" value=(r.id); }
                    button type="submit" { "Replay all shown (" (rows.len()) ")" }
                    " " span #replay-count.muted {}
                    progress #replay-progress hidden {}
                }
                div.scroll { table {
                    thead { tr { th { "Event" } th { "Source" } th { "Type" } th { "Status" } th { "Error" } th.num { "Attempts" } th { "First seen" } th { "Last seen" } th { "Replay" } } }
                    tbody { @for r in &rows { (row(r)) } }
                } }
                @if let Some(n) = next { p.pager { a href={ "/console/events?" (query_string(&f, n)) } { "Next page →" } } }
            }
            script src="/console/static/console.js" {}
        },
    ))
}

fn row(r: &InboxRow) -> Markup {
    let status = r.status.as_str();
    html! {
        tr {
            td { a href={ "/console/events/" (r.id) } { (r.event_id) } }
            td { (r.source) }
            td { (r.kind) }
            td class={ "status-" (status) } { (status) }
            td { (r.detail.as_deref().unwrap_or("")) }
            td.num { (r.attempts) }
            td { (when(Some(r.first_seen))) }
            td { (when(Some(r.last_seen))) }
            td id={ "result-" (r.id) } {}
        }
    }
}

#[derive(Deserialize, Default)]
pub struct Flash {
    /// With the event id in the path: which source's event (a Stripe event and a command may share an id).
    #[serde(default)]
    source: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    error: String,
}

pub async fn detail(
    op: Operator,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Markup, ConsoleError> {
    let found = match flash.source.as_str() {
        "" => app.store.inbox_get(&id).await?,
        source => app.store.inbox_find(source, &id).await?,
    };
    let r = found.ok_or_else(|| ConsoleError::NotFound(format!("no stored event {id}")))?;
    let pretty = serde_json::from_str::<serde_json::Value>(&r.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| r.payload.clone());
    Ok(page(
        &op,
        &format!("Event {}", r.event_id),
        html! {
            @if !flash.outcome.is_empty() {
                p class={ "msg " (if flash.outcome == "failed" { "bad" } else { "ok" }) } {
                    "Replay: " strong class={ "outcome-" (flash.outcome) } { (flash.outcome) }
                    @if !flash.error.is_empty() { " — " (flash.error) }
                }
            }
            dl.facts {
                dt { "Source" } dd { (r.source) }
                dt { "Type" } dd { (r.kind) }
                dt { "Status" } dd class={ "status-" (r.status.as_str()) } { (r.status.as_str()) }
                dt { "Error" } dd { (r.detail.as_deref().unwrap_or("—")) }
                dt { "Waiting for" } dd { (r.waiting_for.as_deref().unwrap_or("—")) }
                dt { "Account" } dd { @if let Some(a) = &r.account_id { a href={ "/console/accounts/" (urlencode(a)) } { (a) } } @else { "—" } }
                dt { "Attempts" } dd { (r.attempts) }
                dt { "First seen" } dd { (when(Some(r.first_seen))) }
                dt { "Last seen" } dd { (when(Some(r.last_seen))) }
            }
            form.stack method="post" action={ "/console/events/" (r.id) "/replay" } {
                (op.csrf_field())
                button type="submit" { "Replay" }
            }
            h2 { "Payload" }
            pre { (pretty) }
        },
    ))
}

/// Replay one event. A browser's form gets the event page back with the result; the progress script asks for
/// JSON (the API's answer).
pub async fn replay(
    op: Operator,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    op.check(&f.csrf)?;
    let r = replay_stored(&app, &id).await?;
    let wants_json = headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if wants_json {
        return Ok(Json(r).into_response());
    }
    let to = format!(
        "/console/events/{}?outcome={}&error={}",
        urlencode(&id),
        r.outcome,
        urlencode(r.error.as_deref().unwrap_or(""))
    );
    Ok(axum::response::Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
pub struct Shown {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: Vec<i64>,
}

/// Without the script: replay every event shown, one after another, and list each result.
pub async fn replay_shown(
    op: Operator,
    State(app): State<AppState>,
    axum::extract::RawForm(body): axum::extract::RawForm,
) -> Result<Markup, ConsoleError> {
    let shown: Shown = serde_html_form(&body)?;
    op.check(&shown.csrf)?;
    let mut results = Vec::new();
    for id in shown.id.iter().take(PAGE as usize) {
        // One failing does not stop the others; each says what happened to it.
        let r = replay_stored(&app, &id.to_string())
            .await
            .unwrap_or_else(|e| crate::http::views::Replay { outcome: "failed".into(), error: Some(e.to_string()) });
        results.push((*id, r));
    }
    Ok(page(
        &op,
        "Replay results",
        html! {
            div.scroll { table {
                thead { tr { th { "Event" } th { "Result" } th { "Error" } } }
                tbody { @for (id, r) in &results { tr {
                    td { a href={ "/console/events/" (id) } { (id) } }
                    td class={ "outcome-" (r.outcome) } { (r.outcome) }
                    td { (r.error.as_deref().unwrap_or("")) }
                } } }
            } }
            p { a href="/console/events" { "Back to the list" } }
        },
    ))
}

/// `id=1&id=2&csrf=...` into [`Shown`]: repeated keys, which `serde_urlencoded` does not gather into a list.
fn serde_html_form(body: &[u8]) -> Result<Shown, ConsoleError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| ConsoleError::BadInput(format!("form: {e}")))?;
    let mut s = Shown { csrf: String::new(), id: Vec::new() };
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => s.csrf = v,
            "id" => s.id.push(v.parse().map_err(|_| ConsoleError::BadInput(format!("id: not a number: {v:?}")))?),
            _ => {}
        }
    }
    Ok(s)
}
