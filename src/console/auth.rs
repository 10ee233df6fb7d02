//! Signing in and out, the session extractor and the CSRF check.
//!
//! The session is a random id in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/console` (`Secure` when the
//! request came over HTTPS, as a TLS-terminating proxy says in `X-Forwarded-Proto`). Every form carries the
//! session's CSRF token and every POST checks it in constant time before anything else; the sign-in form, which
//! has no session yet, uses a token in a cookie of its own (double submit).

use super::{ConsoleError, bare};
use crate::http::AppState;
use crate::store::{constant_time_eq, random_hex};
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

const SESSION_COOKIE: &str = "bw_console";
const LOGIN_COOKIE: &str = "bw_console_login";

/// A signed-in operator: the session's cookie value, the key it signed in with and its CSRF token.
pub struct Operator {
    pub session: String,
    pub key_id: String,
    pub csrf: String,
}

impl Operator {
    /// The hidden field every form of the session carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    /// Refuse a POST whose token is not this session's.
    pub fn check(&self, given: &str) -> Result<(), ConsoleError> {
        if constant_time_eq(given, &self.csrf) { Ok(()) } else { Err(ConsoleError::Csrf) }
    }
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn over_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: Option<i64>, headers: &HeaderMap) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if over_https(headers) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie characters")
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ConsoleError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ConsoleError> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignIn)?;
        let s = app.store.session(&id, app.clock.now()).await?.ok_or(ConsoleError::SignIn)?;
        Ok(Operator { session: id, key_id: s.key_id, csrf: s.csrf })
    }
}

fn random_token() -> String {
    random_hex(24)
}

fn login_form(token: &str, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            div.login {
                h1 { "billing console" }
                @if let Some(e) = error { p.msg.bad { (e) } }
                form.stack method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(token);
                    label { "Admin API key" input type="password" name="key" autocomplete="off" required; }
                    button type="submit" { "Sign in" }
                }
                p.muted { "Make a key with " code { "billing-worker keys create --scope admin --name NAME" } "." }
            }
        },
    )
}

pub async fn login_page(headers: HeaderMap) -> Response {
    let token = random_token();
    let mut r = login_form(&token, None).into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, Some(3600), &headers));
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

pub async fn login(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(&f.csrf, &expected) {
        return ConsoleError::Csrf.into_response();
    }
    let started = match app.store.session_start(f.key.trim(), app.clock.now()).await {
        Ok(s) => s,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    let Some((session, _)) = started else {
        tracing::warn!("console: sign-in refused");
        let token = random_token();
        let mut r =
            (axum::http::StatusCode::UNAUTHORIZED, login_form(&token, Some("That is not an admin API key in force.")))
                .into_response();
        r.headers_mut().insert(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, Some(3600), &headers));
        return r;
    };
    tracing::info!("console: signed in");
    let mut r = Redirect::to("/console").into_response();
    r.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &session, None, &headers));
    r.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", Some(0), &headers));
    r
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    op: Operator,
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    op.check(&f.csrf)?;
    app.store.session_end(&op.session).await?;
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0), &headers));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_tokens_compared_whole() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; bw_console=abc; bw_console_login=xyz"));
        assert_eq!(cookie(&h, "bw_console").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "bw_console_login").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
        assert!(
            constant_time_eq("abc", "abc")
                && !constant_time_eq("abc", "abd")
                && !constant_time_eq("abc", "ab")
                && !constant_time_eq("", "a")
        );
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_behind_https() {
        let plain = set_cookie(SESSION_COOKIE, "v", None, &HeaderMap::new());
        assert_eq!(plain, "bw_console=v; Path=/console; HttpOnly; SameSite=Strict");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(set_cookie(SESSION_COOKIE, "v", None, &h).to_str().unwrap().ends_with("; Secure"));
    }
}
