//! Accounts: search by account or Stripe customer id, the account page (balance, lots, cycle, holds, members,
//! subscriptions, charts, the ledger), CSV exports, and a manual adjustment with a confirmation step that goes
//! through the API's own adjustment path.

use super::events::urlencode;
use super::{ConsoleError, Operator, charts, page, when};
use crate::http::AppState;
use crate::http::accounts::csv_field;
use crate::http::admin::adjust_account;
use crate::http::views::AdjustmentRequest;
use crate::store::EntryRow;
use crate::time::{UnixTime, parse_rfc3339};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

const LEDGER_PAGE: i64 = 50;
/// Entries read for the charts of one period, at most.
const CHART_ENTRIES: i64 = 20_000;

#[derive(Deserialize, Default)]
pub struct Search {
    #[serde(default)]
    q: String,
}

pub async fn search(
    op: Operator,
    State(app): State<AppState>,
    Query(s): Query<Search>,
) -> Result<Response, ConsoleError> {
    let q = s.q.trim();
    let mut missing = None;
    if !q.is_empty() {
        let account = match app.store.account_of_customer(q).await? {
            Some(a) => Some(a),
            None => app.store.account_exists(q).await?.then(|| q.to_owned()),
        };
        match account {
            Some(a) => return Ok(Redirect::to(&format!("/console/accounts/{}", urlencode(&a))).into_response()),
            None => missing = Some(q.to_owned()),
        }
    }
    Ok(page(
        &op,
        "Accounts",
        html! {
            form.filters method="get" action="/console/accounts" {
                label { "Account id or Stripe customer id" input name="q" value=(q) placeholder="acc_123 or cus_…" autofocus; }
                button type="submit" { "Find" }
            }
            @if let Some(m) = missing { p.msg.bad { "No account or Stripe customer " strong { (m) } "." } }
        },
    )
    .into_response())
}

#[derive(Deserialize, Default)]
pub struct Period {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    done: String,
}

/// The chosen period, `[from, to]` by day (UTC), the last 30 days by default.
fn period(p: &Period, now: UnixTime) -> Result<(UnixTime, UnixTime), ConsoleError> {
    let parse = |field: &str, v: &str| {
        parse_rfc3339(&format!("{v}T00:00:00Z"))
            .ok_or_else(|| ConsoleError::BadInput(format!("{field}: expected a date like 2026-11-30, got {v:?}")))
    };
    let to = if p.to.is_empty() { now } else { parse("to", &p.to)? + 86_399 };
    let from = if p.from.is_empty() { to - 30 * 86_400 } else { parse("from", &p.from)? };
    if from >= to {
        return Err(ConsoleError::BadInput("the period must start before it ends".into()));
    }
    Ok((from, to))
}

async fn page_view(app: &AppState, op: &Operator, account: &str, p: &Period) -> Result<(Markup, String), ConsoleError> {
    let now = app.clock.now();
    let v = app.store.account(account, now).await?;
    let (from, to) = period(p, now)?;
    let entries = app.store.entries_page(account, 0, from, to + 1, CHART_ENTRIES).await?;
    let before = app.store.entries_before(account, from).await?;
    let points: Vec<(UnixTime, i64)> = entries.iter().map(|e| (e.at, e.balance_after)).collect();
    let truncated = entries.len() as i64 == CHART_ENTRIES;
    // A cycle's allocation is a grant caused by `cycle:SUB:START`; the current cycle's ends are known too.
    let mut cycles: Vec<UnixTime> = entries.iter().filter(|e| e.cause.starts_with("cycle:")).map(|e| e.at).collect();
    if let Some((start, end)) = v.cycle {
        cycles.extend([start, end]);
    }
    let debits = app.store.usage_by_day(account, from, to).await?;
    let ledger = app.store.entries_page(account, p.after, UnixTime::MIN, UnixTime::MAX, LEDGER_PAGE).await?;
    let next = (ledger.len() as i64 == LEDGER_PAGE).then(|| ledger.last().map(|e| e.id)).flatten();
    let enc = urlencode(account);
    let range =
        format!("from={}&to={}", &crate::time::format_rfc3339(from)[..10], &crate::time::format_rfc3339(to)[..10]);
    let markup = html! {
        @if !p.done.is_empty() { p.msg.ok { (p.done) } }
        dl.facts {
            dt { "Plan" } dd { (v.plan) }
            dt { "Balance" } dd #balance { (v.balance.get()) " credits" }
            dt { "Held" } dd { (v.held.get()) }
            dt { "Current cycle" } dd { @if let Some((s, e)) = v.cycle { (when(Some(s))) " → " (when(Some(e))) } @else { "—" } }
            dt { "Expiring at cycle end" } dd { (v.expiring_at_cycle_end.get()) }
            dt { "Stripe customer" } dd { (v.stripe_customer_id.as_deref().unwrap_or("—")) }
            dt { "Team members" } dd { @if v.members.is_empty() { "—" } @else { (v.members.join(", ")) } }
        }
        h2 { "Balance over time" }
        form.filters method="get" action={ "/console/accounts/" (enc) } {
            label { "From" input type="date" name="from" value=(&crate::time::format_rfc3339(from)[..10]); }
            label { "To" input type="date" name="to" value=(&crate::time::format_rfc3339(to)[..10]); }
            button type="submit" { "Show" }
        }
        (charts::balance(before, &points, from, to, &cycles))
        p.muted {
            "Dashed lines: cycle boundaries."
            @if truncated { " The chart shows the first " (CHART_ENTRIES) " changes of the period; choose a shorter one to see the rest." }
        }
        h2 { "Usage by day" }
        (charts::usage(&debits, from, to))
        p { a href={ "/console/accounts/" (enc) "/usage.csv?" (range) } { "Usage CSV" } " · " a href={ "/console/accounts/" (enc) "/ledger.csv?" (range) } { "Ledger CSV" } }
        h2 { "Lots" }
        div.scroll { table {
            thead { tr { th { "Lot" } th { "Source" } th.num { "Granted" } th.num { "Remaining" } th { "Expires" } } }
            tbody { @for l in &v.lots { tr { td { (l.id.as_str()) } td { (l.source.as_str()) } td.num { (l.amount.get()) } td.num { (l.remaining.get()) } td { (when(l.expires_at)) } } } }
        } }
        h2 { "Holds" }
        @if v.holds.is_empty() { p.muted { "None." } } @else { div.scroll { table {
            thead { tr { th { "Hold" } th.num { "Credits" } th { "Status" } th { "Deadline" } } }
            tbody { @for h in &v.holds { tr { td { (h.id.as_str()) } td.num { (h.amount.get()) } td { (h.status.as_str()) } td { (when(Some(h.deadline))) } } } }
        } } }
        h2 { "Subscriptions" }
        @if v.subscriptions.is_empty() { p.muted { "None." } } @else { div.scroll { table {
            thead { tr { th { "Subscription" } th { "Plan" } th.num { "Monthly credits" } th { "Anchor" } th { "Ends" } } }
            tbody { @for s in &v.subscriptions { tr { td { (s.id) } td { (s.terms.plan) } td.num { (s.terms.monthly.get()) } td { (when(Some(s.anchor))) } td { (when(s.ends_at)) } } } }
        } } }
        h2 { "Adjust credits" }
        form.filters method="post" action={ "/console/accounts/" (enc) "/adjust" } {
            (op.csrf_field())
            label { "Credits (negative to remove)" input type="number" name="credits" required; }
            label { "Reason" input name="reason" required maxlength="256"; }
            button type="submit" { "Review…" }
        }
        h2 { "Ledger" }
        div.scroll { table {
            thead { tr { th { "At" } th { "Kind" } th.num { "Credits" } th.num { "Balance after" } th { "Cause" } th { "User" } th { "Operation" } } }
            tbody { @for e in &ledger { (entry(e)) } }
        } }
        p.pager {
            @if p.after > 0 { a href={ "/console/accounts/" (enc) "?" (range) } { "← First page" } }
            @if let Some(n) = next { a href={ "/console/accounts/" (enc) "?" (range) "&after=" (n) } { "Next page →" } }
        }
    };
    Ok((markup, v.account))
}

/// A cause links to the event or command that made it, when it names one.
fn entry(e: &EntryRow) -> Markup {
    let link = [("event:", "stripe"), ("command:", "queue")].iter().find_map(|(prefix, source)| {
        let rest = e.cause.strip_prefix(prefix)?;
        let id = rest.split([' ', ':']).next().unwrap_or(rest);
        Some(format!("/console/events/{}?source={source}", urlencode(id)))
    });
    html! { tr {
        td { (when(Some(e.at))) }
        td { (e.kind) }
        td.num { (e.amount) }
        td.num { (e.balance_after) }
        td { @if let Some(l) = link { a href=(l) { (e.cause) } } @else { (e.cause) } }
        td { (e.user_id.as_deref().unwrap_or("")) }
        td { (e.operation.as_deref().unwrap_or("")) }
    } }
}

pub async fn show(
    op: Operator,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Query(p): Query<Period>,
) -> Result<Markup, ConsoleError> {
    let (markup, name) = page_view(&app, &op, &account, &p).await?;
    Ok(page(&op, &format!("Account {name}"), markup))
}

/// A text cell of a CSV the operator opens in a spreadsheet: quoted as needed, and a leading `=`, `+`, `-`, `@`
/// (which a spreadsheet would run as a formula) made plain text.
fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { csv_field(&format!("'{s}")) } else { csv_field(s) }
}

fn csv(name: &str, body: String) -> Response {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let disposition = format!("attachment; filename=\"{safe}\"");
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

pub async fn ledger_csv(
    _: Operator,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Query(p): Query<Period>,
) -> Result<Response, ConsoleError> {
    let (from, to) = period(&p, app.clock.now())?;
    app.store.account(&account, app.clock.now()).await?;
    let mut out = String::from("id,at,kind,amount,balance_after,cause,user_id,operation\n");
    let mut after = 0;
    loop {
        let rows = app.store.entries_page(&account, after, from, to + 1, 1000).await?;
        for e in &rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                e.id,
                crate::time::format_rfc3339(e.at),
                e.kind,
                e.amount,
                e.balance_after,
                csv_text(&e.cause),
                csv_text(e.user_id.as_deref().unwrap_or("")),
                csv_text(e.operation.as_deref().unwrap_or(""))
            ));
        }
        match rows.last() {
            Some(l) if rows.len() == 1000 => after = l.id,
            _ => break,
        }
    }
    Ok(csv(&format!("{account}-ledger.csv"), out))
}

pub async fn usage_csv(
    _: Operator,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Query(p): Query<Period>,
) -> Result<Response, ConsoleError> {
    let (from, to) = period(&p, app.clock.now())?;
    app.store.account(&account, app.clock.now()).await?;
    let rows = app.store.usage(&account, from, to, crate::store::GroupBy::Day).await?;
    let mut out = String::from("day,credits,count\n");
    for r in rows {
        out.push_str(&format!("{},{},{}\n", csv_text(&r.key), r.credits, r.count));
    }
    Ok(csv(&format!("{account}-usage.csv"), out))
}

/// Credits to adjust by: a whole number, not 0, at most 10^9 either way (the API's rule, said before the
/// confirmation rather than after it).
fn credits(v: &str) -> Result<i64, ConsoleError> {
    match v.trim().parse::<i64>() {
        Ok(n) if n != 0 && (-1_000_000_000..=1_000_000_000).contains(&n) => Ok(n),
        _ => Err(ConsoleError::BadInput(format!(
            "credits: a whole number, not 0, at most 1000000000 either way; got {v:?}"
        ))),
    }
}

#[derive(Deserialize)]
pub struct Adjust {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    key: String,
}

/// The confirmation step: what will happen, and a second form that does it (with a key made now, so pressing it
/// twice adjusts once).
pub async fn adjust_confirm(
    op: Operator,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Form(a): Form<Adjust>,
) -> Result<Markup, ConsoleError> {
    op.check(&a.csrf)?;
    let credits = credits(&a.credits)?;
    if a.reason.trim().is_empty() || a.reason.len() > 256 || a.reason.contains('\0') {
        return Err(ConsoleError::BadInput("reason: 1 to 256 characters".into()));
    }
    let v = app.store.account(&account, app.clock.now()).await?;
    let key = format!("console-{}", crate::store::random_hex(12));
    let verb = if credits >= 0 { "Add" } else { "Remove" };
    Ok(page(
        &op,
        "Confirm the adjustment",
        html! {
            p.msg { (verb) " " strong { (credits.abs()) " credits" } " " (if credits >= 0 { "to" } else { "from" }) " account " strong { (v.account) } " (balance now " (v.balance.get()) "), because: " em { (a.reason) } }
            form.stack method="post" action={ "/console/accounts/" (urlencode(&account)) "/adjust/apply" } {
                (op.csrf_field())
                input type="hidden" name="credits" value=(credits);
                input type="hidden" name="reason" value=(a.reason);
                input type="hidden" name="key" value=(key);
                button type="submit" { "Confirm: " (verb) " " (credits.abs()) " credits" }
                " " a href={ "/console/accounts/" (urlencode(&account)) } { "Cancel" }
            }
        },
    ))
}

pub async fn adjust_apply(
    op: Operator,
    State(app): State<AppState>,
    Path(account): Path<String>,
    Form(a): Form<Adjust>,
) -> Result<Response, ConsoleError> {
    op.check(&a.csrf)?;
    let credits = credits(&a.credits)?;
    let req = AdjustmentRequest { credits, reason: a.reason.clone(), idempotency_key: a.key.clone() };
    let out = adjust_account(&app, account.clone(), &req).await?;
    tracing::info!(account = %account, credits = out.credits, "console: adjustment");
    let done = format!("Adjusted by {} credits; the balance is {}.", out.credits, out.balance);
    Ok(Redirect::to(&format!("/console/accounts/{}?done={}", urlencode(&account), urlencode(&done))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_text_cannot_become_a_formula() {
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_text("+1"), "'+1");
        assert_eq!(csv_text("@sum"), "'@sum");
        assert_eq!(csv_text("debit:job-1"), "debit:job-1");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
    }

    #[test]
    fn credits_to_adjust_are_whole_non_zero_and_bounded() {
        assert_eq!(credits(" 12 ").unwrap(), 12);
        assert_eq!(credits("-5").unwrap(), -5);
        for bad in ["0", "", "1.5", "1000000001", "-9223372036854775808"] {
            assert!(credits(bad).is_err(), "{bad}");
        }
    }
}
