//! The overview, parked commands, API keys and the catalog.

use super::auth::CsrfOnly;
use super::{ConsoleError, Operator, page, when};
use crate::http::AppState;
use crate::queue::{Names, dlq};
use crate::store::{InboxFilter, InboxStatus, Scope};
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

pub async fn overview(op: Operator, State(app): State<AppState>) -> Result<Markup, ConsoleError> {
    let counts = app.store.inbox_counts().await?;
    let count = |s: &str| counts.iter().filter(|(st, _)| st == s).map(|(_, n)| *n).sum::<i64>();
    let newest = |status| InboxFilter { status: Some(status), newest_first: true, limit: 1, ..Default::default() };
    let failed = app.store.inbox_list(&newest(InboxStatus::Failed)).await?;
    let waiting = app.store.inbox_list(&newest(InboxStatus::Waiting)).await?;
    let database = app.store.ping().await;
    let (lag, unpublished) = app.store.outbox_backlog(app.clock.now()).await?;
    let parked = parked_count(&app).await;
    let broker = app.broker_status();
    let newest_seen = |rows: &[crate::store::InboxRow]| rows.iter().map(|r| r.last_seen).max();
    Ok(page(
        &op,
        "Overview",
        html! {
            div.cards {
                a.card href="/console/events?status=failed" { div.n #failed-count { (count("failed")) } div.l { "failed events · newest " (when(newest_seen(&failed))) } }
                a.card href="/console/events?status=waiting" { div.n { (count("waiting")) } div.l { "waiting events · newest " (when(newest_seen(&waiting))) } }
                a.card href="/console/parked" { div.n { @match parked { Some(n) => (n), None => "—" } } div.l { "parked commands" } }
                a.card href="/readyz" { div.n { (lag) " s" } div.l { "outbox lag (" (unpublished) " unpublished)" } }
                a.card href="/readyz" { div.n class={ "status-" (broker) } { (broker) } div.l { "broker" } }
                a.card href="/readyz" { div.n class={ "status-" (if database { "up" } else { "down" }) } { (if database { "up" } else { "down" }) } div.l { "database" } }
                a.card href="/metrics" { div.n { (env!("CARGO_PKG_VERSION")) } div.l { "version · " (option_env!("BILLING_GIT_COMMIT").unwrap_or("unknown")) } }
            }
        },
    ))
}

fn names(app: &AppState) -> Names {
    Names::new(&app.config.amqp_prefix, &app.config.retry_delays_ms)
}

/// Messages in the parking queue, when there is a broker to ask.
async fn parked_count(app: &AppState) -> Option<u64> {
    let url = app.config.amqp_url.as_deref()?;
    dlq::parked(url, &names(app)).await.map_err(|e| tracing::warn!(error = %e, "console: parking queue")).ok()
}

pub async fn parked(op: Operator, State(app): State<AppState>) -> Result<Markup, ConsoleError> {
    let n = parked_count(&app).await;
    // Every parked message is also kept as a failed command whose detail is its park reason (reading the
    // parking queue itself would take messages off it): the newest 20 of those.
    let f = InboxFilter {
        status: Some(InboxStatus::Failed),
        source: Some("queue".into()),
        detail_prefix: Some(crate::queue::consumer::PARKED.into()),
        newest_first: true,
        limit: 20,
        ..Default::default()
    };
    let rows = app.store.inbox_list(&f).await?;
    Ok(page(
        &op,
        "Parked commands",
        html! {
            @match (&app.config.amqp_url, n) {
                (None, _) => p.msg { "No broker is configured (AMQP_URL): commands come over HTTP and nothing is parked." },
                (Some(_), None) => p.msg.bad { "The broker does not answer; try again." },
                (Some(_), Some(n)) => {
                    p { strong #parked-count { (n) } " messages in " code { (names(&app).dead) } "." }
                    form.stack method="post" action="/console/parked/requeue" {
                        (op.csrf_field())
                        button type="submit" disabled[n == 0] { "Requeue all" }
                    }
                }
            }
            h2 { "Newest parked commands, with their x-park-reason" }
            div.scroll { table {
                thead { tr { th { "Command" } th { "Type" } th { "Reason" } th { "Last seen" } } }
                tbody { @for r in &rows { tr {
                    td { a href={ "/console/events/" (r.id) } { (r.event_id) } }
                    td { (r.kind) }
                    td.reason { (r.detail.as_deref().unwrap_or("").trim_start_matches(crate::queue::consumer::PARKED)) }
                    td { (when(Some(r.last_seen))) }
                } } }
            } }
        },
    ))
}

pub async fn requeue(
    op: Operator,
    State(app): State<AppState>,
    Form(f): Form<CsrfOnly>,
) -> Result<Markup, ConsoleError> {
    op.check(&f.csrf)?;
    let url = app.config.amqp_url.clone().ok_or_else(|| ConsoleError::BadInput("no broker is configured".into()))?;
    let moved = dlq::requeue(&url, &names(&app), None, |_, _| {}).await.map_err(|e| {
        tracing::error!(error = %e, "console: requeue failed");
        ConsoleError::Unavailable
    })?;
    tracing::info!(moved, "console: parked commands requeued");
    Ok(page(
        &op,
        "Parked commands",
        html! { p.msg.ok { (moved) " messages moved back to the command queue." } p { a href="/console/parked" { "Back" } } },
    ))
}

pub async fn keys(op: Operator, State(app): State<AppState>) -> Result<Markup, ConsoleError> {
    keys_page(&op, &app, None).await
}

async fn keys_page(op: &Operator, app: &AppState, made: Option<(String, String)>) -> Result<Markup, ConsoleError> {
    let keys = app.store.list_keys().await?;
    Ok(page(
        op,
        "API keys",
        html! {
            @if let Some((name, key)) = made {
                div.msg.ok { "Key " strong { (name) } " made. It is shown this once; copy it now:" div.key #new-key { (key) } }
            }
            form.filters method="post" action="/console/keys" {
                (op.csrf_field())
                label { "Name" input name="name" required maxlength="100"; }
                label { "Scope" select name="scope" { option value="service" { "service" } option value="admin" { "admin" } } }
                button type="submit" { "Create key" }
            }
            div.scroll { table {
                thead { tr { th { "Id" } th { "Name" } th { "Scope" } th { "Created" } th { "Revoked" } th {} } }
                tbody { @for k in &keys { tr {
                    td { code { (k.id) } } td { (k.name) } td { (k.scope.as_str()) } td { (when(Some(k.created_at))) } td { (when(k.revoked_at)) }
                    td { @if k.revoked_at.is_none() {
                        form.inline method="post" action={ "/console/keys/" (k.id) "/revoke" } {
                            (op.csrf_field())
                            button.danger type="submit" { @if k.id == op.key_id { "Revoke (signs you out)" } @else { "Revoke" } }
                        }
                    } }
                } } }
            } }
        },
    ))
}

#[derive(Deserialize)]
pub struct NewKey {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

pub async fn create_key(
    op: Operator,
    State(app): State<AppState>,
    Form(k): Form<NewKey>,
) -> Result<Markup, ConsoleError> {
    op.check(&k.csrf)?;
    let scope = Scope::parse(&k.scope)
        .ok_or_else(|| ConsoleError::BadInput(format!("scope: service or admin, got {:?}", k.scope)))?;
    let name = k.name.trim();
    if name.is_empty() || name.len() > 100 || name.contains('\0') {
        return Err(ConsoleError::BadInput("name: 1 to 100 characters".into()));
    }
    let (key, id) = app.store.create_key(name, scope, app.clock.now()).await?;
    tracing::info!(key_id = %id, scope = scope.as_str(), "console: key created");
    keys_page(&op, &app, Some((name.to_owned(), key))).await
}

pub async fn revoke_key(
    op: Operator,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    op.check(&f.csrf)?;
    if !app.store.revoke_key(&id, app.clock.now()).await? {
        return Err(ConsoleError::NotFound(format!("no key {id}")));
    }
    tracing::info!(key_id = %id, "console: key revoked");
    Ok(Redirect::to("/console/keys").into_response())
}

pub async fn catalog(op: Operator, State(app): State<AppState>) -> Markup {
    let c = &app.config.catalog;
    page(
        &op,
        "Catalog",
        html! {
            p.muted { "As this worker sees it (" (app.config.catalog_source) ")." }
            h2 { "Plans" }
            div.scroll { table {
                thead { tr { th { "Plan" } th.num { "Monthly credits" } th.num { "Rollover cap" } th.num { "Signup credits" } th { "Seats" } th { "Stripe prices" } } }
                tbody { @for (name, p) in &c.plans { tr {
                    td { (name) } td.num { (p.monthly_credits) } td.num { (p.rollover_cap) } td.num { (p.signup_credits) }
                    td { @match p.seats { Some(s) => (s), None => "unlimited" } } td { (p.stripe_prices.join(", ")) }
                } } }
            } }
            h2 { "Packages" }
            div.scroll { table {
                thead { tr { th { "Package" } th.num { "Credits" } th.num { "Price (cents)" } th { "Stripe prices" } } }
                tbody { @for (name, p) in &c.packages { tr {
                    td { (name) } td.num { (p.credits) } td.num { @match p.price_cents { Some(v) => (v), None => "—" } } td { (p.stripe_prices.join(", ")) }
                } } }
            } }
            h2 { "Costs" }
            div.scroll { table {
                thead { tr { th { "Operation" } th.num { "Credits" } } }
                tbody { @for (name, cost) in &c.costs { tr { td { (name) } td.num { (cost) } } } }
            } }
        },
    )
}
