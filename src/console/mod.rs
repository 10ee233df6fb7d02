//! The operator console at `/console`: server-rendered pages for the people who replay failed events and answer
//! "where did my credits go?". It is part of the worker so one binary stays the whole product, and it reads and
//! writes only through the functions the API uses (store, intake, commander), so its answers are the API's.
//!
//! Why server-rendered (maud, compile-time templates, escaping by default) with a little JavaScript: nothing to
//! build or vendor, every value from events and accounts is escaped where it is written, and the pages work
//! without a script (the one script adds progress to "Replay all shown"). Charts are SVG drawn on the server.
//! Sessions live in the database (see `store::sessions`), so two instances share them.

mod accounts;
mod auth;
mod charts;
mod events;
mod ops;

use crate::http::AppState;
use crate::store::StoreError;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

pub use auth::Operator;

/// The console's routes, nested at `/console` by the HTTP router unless `BILLING_CONSOLE=off`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(ops::overview))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/events", get(events::list))
        .route("/events/replay-shown", post(events::replay_shown))
        .route("/events/{id}", get(events::detail))
        .route("/events/{id}/replay", post(events::replay))
        .route("/accounts", get(accounts::search))
        .route("/accounts/{account}", get(accounts::show))
        .route("/accounts/{account}/ledger.csv", get(accounts::ledger_csv))
        .route("/accounts/{account}/usage.csv", get(accounts::usage_csv))
        .route("/accounts/{account}/adjust", post(accounts::adjust_confirm))
        .route("/accounts/{account}/adjust/apply", post(accounts::adjust_apply))
        .route("/parked", get(ops::parked))
        .route("/parked/requeue", post(ops::requeue))
        .route("/keys", get(ops::keys).post(ops::create_key))
        .route("/keys/{id}/revoke", post(ops::revoke_key))
        .route("/catalog", get(ops::catalog))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .layer(axum::middleware::map_response(protect))
}

/// Every console answer: not kept in caches (a page may show a new key, once), not framed, and only our own
/// script and style run.
async fn protect(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("static/console.css"))
}

async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("static/console.js"))
}

/// What can go wrong on a console page, answered as a page (never the error's inner text for storage faults).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("not signed in")]
    SignIn,
    #[error("this form has expired or did not come from the console; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error("the service is unavailable; try again")]
    Unavailable,
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownAccount(a) => ConsoleError::NotFound(format!("no account {a}")),
            other => {
                tracing::error!(error = %other, "console: storage failed");
                ConsoleError::Unavailable
            }
        }
    }
}

impl From<crate::http::error::ApiError> for ConsoleError {
    fn from(e: crate::http::error::ApiError) -> Self {
        use crate::http::error::ApiError as A;
        match e {
            A::NotFound(m) => ConsoleError::NotFound(m),
            A::UnknownAccount(a) => ConsoleError::NotFound(format!("no account {a}")),
            A::Unavailable | A::TimedOut(_) | A::Internal => ConsoleError::Unavailable,
            other => ConsoleError::BadInput(other.to_string()),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadInput(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = bare(
            "Error",
            html! { main { h1 { "Something went wrong" } p.msg.bad { (self.to_string()) } p { a href="/console" { "Back to the overview" } } } },
        );
        (status, body).into_response()
    }
}

/// A page without the navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · billing console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { (body) }
        }
    }
}

/// A page of the signed-in console: navigation, sign-out, the content.
pub fn page(op: &Operator, title: &str, content: Markup) -> Markup {
    bare(
        title,
        html! {
            header {
                span.brand { "billing console" }
                nav {
                    a href="/console" { "Overview" }
                    a href="/console/events" { "Failed events" }
                    a href="/console/accounts" { "Accounts" }
                    a href="/console/parked" { "Parked" }
                    a href="/console/keys" { "API keys" }
                    a href="/console/catalog" { "Catalog" }
                }
                form.inline method="post" action="/console/logout" {
                    (op.csrf_field())
                    button.secondary type="submit" { "Sign out" }
                }
            }
            main { h1 { (title) } (content) }
        },
    )
}

/// A time as RFC 3339 (UTC), or a dash.
pub fn when(t: Option<crate::time::UnixTime>) -> String {
    t.map(crate::time::format_rfc3339).unwrap_or_else(|| "—".into())
}
