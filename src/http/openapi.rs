//! The OpenAPI document at `GET /openapi.json`, generated from the handlers' annotations.

use super::{accounts, admin, health, spend, webhook};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "billing-worker", description = "Prepaid credit ledger: balances, debits, holds, usage, operators' calls."),
    paths(
        accounts::balance,
        accounts::entitlements,
        accounts::ledger,
        accounts::usage,
        accounts::add_member,
        accounts::remove_member,
        spend::quote,
        spend::debit,
        spend::hold,
        spend::capture,
        spend::release,
        admin::catalog,
        admin::adjust,
        admin::failed,
        admin::replay,
        admin::command,
        admin::events,
        webhook::stripe,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi,
    ),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

// `GET /openapi.json`, tagged with the health endpoints where it always was listed. A plain comment: a doc
// comment here would become the operation's summary and change the document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, body = Object, content_type = "application/json")))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document().to_json().unwrap_or_default()).into_response()
}

pub use openapi as serve;
