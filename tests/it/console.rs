//! The operator console over plain HTTP: every form refuses a POST without its CSRF token and changes nothing,
//! values from events are shown escaped, sessions end when idle for 12 h or when their key is revoked, and
//! `BILLING_CONSOLE=off` removes it. The browser tests (`console_browser.rs`) walk it as a person would.

use crate::common::stripe::{checkout, event};
use crate::common::{TestApp, client, spawn_app, spawn_app_with};
use reqwest::redirect::Policy;
use serde_json::json;

const T0: i64 = 1_780_000_000;

/// A browser-like session: the console's cookies, kept by hand (no cookie store in the test client).
pub struct Session {
    pub base: String,
    pub cookie: String,
    pub csrf: String,
    http: reqwest::Client,
}

fn no_redirects() -> reqwest::Client {
    let _ = client(); // installs the TLS provider
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let v = c.strip_prefix(&format!("{name}="))?;
        Some(v.split(';').next().unwrap_or("").to_owned())
    })
}

/// A form body (the test client has no `form` feature).
fn form(rb: reqwest::RequestBuilder, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    rb.header("content-type", "application/x-www-form-urlencoded").body(serde_urlencoded::to_string(pairs).unwrap())
}

fn hidden_csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a csrf field").to_owned()
}

impl Session {
    pub async fn sign_in(base: &str, key: &str) -> Result<Session, u16> {
        let http = no_redirects();
        let page = http.get(format!("{base}/console/login")).send().await.unwrap();
        let login_cookie = set_cookie(&page, "bw_console_login").expect("the sign-in token cookie");
        let token = hidden_csrf(&page.text().await.unwrap());
        let rb =
            http.post(format!("{base}/console/login")).header("cookie", format!("bw_console_login={login_cookie}"));
        let r = form(rb, &[("csrf", token.as_str()), ("key", key)]).send().await.unwrap();
        if r.status() != 303 {
            return Err(r.status().as_u16());
        }
        let cookie = set_cookie(&r, "bw_console").expect("a session cookie");
        let mut s = Session { base: base.to_owned(), cookie, csrf: String::new(), http };
        let (status, body) = s.get("/console/keys").await;
        assert_eq!(status, 200, "{body}");
        s.csrf = hidden_csrf(&body);
        Ok(s)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", format!("bw_console={}", self.cookie));
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let r = self.http.post(format!("{}{path}", self.base)).header("cookie", format!("bw_console={}", self.cookie));
        let r = form(r, fields).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// An account with a failed event (a package the catalog lacks, whose name is markup).
async fn seeded() -> (TestApp, String) {
    seeded_on("sqlite").await
}

async fn seeded_on(backend: &str) -> (TestApp, String) {
    let app = spawn_app(backend, T0).await;
    let admin = app.key("admin").await;
    app.account(&admin, "acc_x").await;
    let meta = json!({"credits_package": "<script>alert(1)</script>"});
    let cs = checkout("cs_markup", Some("acc_x"), None, "pi_markup", meta, true);
    app.deliver(&event("evt_markup", "checkout.session.completed", T0, cs)).await;
    (app, admin)
}

#[tokio::test]
async fn a_bad_key_is_refused_and_a_service_key_is_not_enough() {
    let (app, _) = seeded().await;
    assert_eq!(Session::sign_in(&app.base, "bwk_nope_nope").await.err(), Some(401));
    let service = app.key("service").await;
    assert_eq!(Session::sign_in(&app.base, &service).await.err(), Some(401));
    let (status, _) =
        no_redirects().get(format!("{}/console", app.base)).send().await.map(|r| (r.status(), ())).unwrap();
    assert_eq!(status, 303, "pages redirect to the sign-in without a session");
    app.shutdown().await;
}

#[tokio::test]
async fn every_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    csrf_on("sqlite").await
}

#[tokio::test]
async fn every_form_without_its_csrf_token_is_refused_and_changes_nothing_on_postgres() {
    csrf_on("postgres").await
}

async fn csrf_on(backend: &str) {
    let (app, admin) = seeded_on(backend).await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let service = app.key("service").await;
    let service_id = service.split('_').nth(1).unwrap().to_owned();
    let balance = app.balance("acc_x").await;
    let keys = app.store.list_keys().await.unwrap().len();
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/console/logout".into(), vec![]),
        ("/console/events/evt_markup/replay".into(), vec![]),
        ("/console/events/replay-shown".into(), vec![("id", "1")]),
        ("/console/accounts/acc_x/adjust".into(), vec![("credits", "10"), ("reason", "r")]),
        ("/console/accounts/acc_x/adjust/apply".into(), vec![("credits", "10"), ("reason", "r"), ("key", "k1")]),
        ("/console/parked/requeue".into(), vec![]),
        ("/console/keys".into(), vec![("name", "sneaky"), ("scope", "admin")]),
        (format!("/console/keys/{service_id}/revoke"), vec![]),
    ];
    for (path, fields) in &forms {
        for csrf in [None, Some("0".repeat(48))] {
            let mut fields = fields.clone();
            if let Some(c) = &csrf {
                fields.push(("csrf", c));
            }
            let (status, body) = s.post(path, &fields).await;
            assert_eq!(status, 403, "{path} with {csrf:?}: {body}");
            assert!(body.contains("did not come from the console"), "{path}: {body}");
        }
    }
    assert_eq!(app.balance("acc_x").await, balance, "no adjustment");
    assert_eq!(app.store.list_keys().await.unwrap().len(), keys, "no key made");
    assert!(app.store.list_keys().await.unwrap().iter().all(|k| k.revoked_at.is_none()), "no key revoked");
    let row = app.store.inbox_get("evt_markup").await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 1), "not replayed");
    assert_eq!(s.get("/console").await.0, 200, "still signed in");
    // The sign-in form has its own token: without it nobody is signed in.
    let rb = no_redirects().post(format!("{}/console/login", app.base));
    let r = form(rb, &[("key", admin.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "bw_console").is_none());
    // With the token, the same forms work.
    let (status, _) = s.post("/console/events/evt_markup/replay", &[("csrf", &s.csrf)]).await;
    assert_eq!(status, 303);
    app.shutdown().await;
}

#[tokio::test]
async fn values_from_events_are_shown_as_text() {
    escaped_on("sqlite").await
}

#[tokio::test]
async fn values_from_events_are_shown_as_text_on_postgres() {
    escaped_on("postgres").await
}

/// Also the filters of the list, on both backends.
async fn escaped_on(backend: &str) {
    let (app, admin) = seeded_on(backend).await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    for page in ["/console/events", "/console/events/evt_markup", "/console/parked"] {
        let (status, body) = s.get(page).await;
        assert_eq!(status, 200, "{page}");
        assert!(!body.contains("<script>alert(1)"), "{page} carries the markup as markup");
    }
    let (_, body) = s.get("/console/events").await;
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "shown escaped: {body}");
    for (filter, shown) in [
        ("?type=checkout.session.completed&source=stripe&status=failed", true),
        ("?type=invoice.paid", false),
        ("?source=queue", false),
        ("?status=waiting", false),
        ("?since=2020-01-01&until=2099-12-31", true),
        ("?until=2020-01-01", false),
    ] {
        let (status, body) = s.get(&format!("/console/events{filter}")).await;
        assert_eq!((status, body.contains("evt_markup")), (200, shown), "{filter}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_after_12_idle_hours_on_sign_out_and_with_its_key() {
    sessions_on("sqlite").await
}

#[tokio::test]
async fn a_session_ends_after_12_idle_hours_on_sign_out_and_with_its_key_on_postgres() {
    sessions_on("postgres").await
}

async fn sessions_on(backend: &str) {
    let (app, admin) = seeded_on(backend).await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    app.clock.set(app.clock.now() + (11 * 3600));
    assert_eq!(s.get("/console").await.0, 200, "11 h idle: still signed in (and seen again now)");
    app.clock.set(app.clock.now() + (11 * 3600));
    assert_eq!(s.get("/console").await.0, 200, "11 h after the last page: still signed in");
    app.clock.set(app.clock.now() + (12 * 3600 + 1));
    assert_eq!(s.get("/console").await.0, 303, "12 h idle: signed out");
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let (status, _) = s.post("/console/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(status, 303);
    assert_eq!(s.get("/console").await.0, 303, "signed out");
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let id = admin.split('_').nth(1).unwrap();
    app.store.revoke_key(id, app.clock.now()).await.unwrap();
    assert_eq!(s.get("/console").await.0, 303, "its key revoked: signed out");
    app.shutdown().await;
}

#[tokio::test]
async fn billing_console_off_serves_no_console() {
    let app = spawn_app_with("sqlite", T0, &[("BILLING_CONSOLE", "off")]).await;
    let r = no_redirects().get(format!("{}/console/login", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn search_finds_an_account_by_its_id_or_its_stripe_customer() {
    let (app, admin) = seeded().await;
    let cs =
        checkout("cs_c", Some("acc_c"), Some("cus_console"), "pi_c", json!({"credits_package": "credits_500"}), true);
    app.deliver(&event("evt_c", "checkout.session.completed", T0, cs)).await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let found = |q: &'static str| {
        let s = &s;
        async move {
            let r = s
                .http
                .get(format!("{}/console/accounts?q={q}", s.base))
                .header("cookie", format!("bw_console={}", s.cookie));
            let r = r.send().await.unwrap();
            r.headers().get("location").map(|l| l.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(found("acc_x").await.as_deref(), Some("/console/accounts/acc_x"));
    assert_eq!(found("cus_console").await.as_deref(), Some("/console/accounts/acc_c"));
    assert_eq!(found("cus_nobody").await, None);
    let (status, body) = s.get("/console/accounts?q=cus_nobody").await;
    assert!(status == 200 && body.contains("No account or Stripe customer"), "{body}");
    let (status, body) = s.get("/console/accounts/acc_nobody").await;
    assert!(status == 404 && body.contains("no account acc_nobody"), "{body}");
    let (status, body) = s.get("/console/accounts/acc_x?from=yesterday").await;
    assert!(status == 400 && body.contains("from: expected a date"), "{body}");
    let (status, csv) = s.get("/console/accounts/acc_c/ledger.csv").await;
    assert!(status == 200 && csv.starts_with("id,at,kind,amount") && csv.contains("event:evt_c"), "{csv}");
    let (status, body) = s.get("/console/events?status=bogus").await;
    assert!(status == 400 && body.contains("status: failed, waiting or any"), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_key_is_shown_once_and_pages_are_not_cached() {
    let (app, admin) = seeded().await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let r = s.http.get(format!("{}/console/keys", s.base)).header("cookie", format!("bw_console={}", s.cookie));
    let r = r.send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let (status, body) =
        s.post("/console/keys", &[("csrf", &s.csrf), ("name", "image-tool"), ("scope", "service")]).await;
    assert_eq!(status, 200, "{body}");
    let key = body.split("id=\"new-key\">").nth(1).and_then(|r| r.split('<').next()).expect("the new key").to_owned();
    let (s2, _) = app.call("GET", "/v1/accounts/acc_x/balance", Some(&key), None).await;
    assert_eq!(s2, 200, "the key shown works");
    let (_, list) = s.get("/console/keys").await;
    assert!(list.contains("image-tool") && !list.contains(&key), "listed by name, never shown again");
    for (fields, why) in [
        (vec![("name", ""), ("scope", "service")], "name: 1 to 100 characters"),
        (vec![("name", "x"), ("scope", "root")], "scope: service or admin"),
    ] {
        let mut f = fields.clone();
        f.push(("csrf", &s.csrf));
        let (status, body) = s.post("/console/keys", &f).await;
        assert!(status == 400 && body.contains(why), "{why}: {status} {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_adjustment_is_confirmed_before_it_applies_and_bad_amounts_are_refused() {
    let (app, admin) = seeded().await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let before = app.balance("acc_x").await;
    for bad in ["0", "ten", "9999999999", "-9223372036854775808"] {
        let (status, body) =
            s.post("/console/accounts/acc_x/adjust", &[("csrf", &s.csrf), ("credits", bad), ("reason", "r")]).await;
        assert!(status == 400 && body.contains("credits: a whole number, not 0"), "{bad}: {status} {body}");
    }
    let (status, body) =
        s.post("/console/accounts/acc_x/adjust", &[("csrf", &s.csrf), ("credits", "7"), ("reason", "goodwill")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance("acc_x").await, before, "nothing before the confirmation");
    let key = body.split("name=\"key\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    for _ in 0..2 {
        let form = [("csrf", s.csrf.as_str()), ("credits", "7"), ("reason", "goodwill"), ("key", &key)];
        let (status, _) = s.post("/console/accounts/acc_x/adjust/apply", &form).await;
        assert_eq!(status, 303);
    }
    assert_eq!(app.balance("acc_x").await, before + 7, "confirmed twice, applied once");
    app.shutdown().await;
}

#[tokio::test]
async fn parked_commands_are_counted_shown_with_their_reason_and_requeued() {
    use crate::common::amqp::{app as amqp_app, channel, cleanup, prefix, publish, ready};
    let p = prefix();
    let app = amqp_app("sqlite", &p, T0).await;
    ready(&app).await;
    let admin = app.key("admin").await;
    let (_c, ch) = channel().await;
    publish(&ch, &p, b"this is not JSON").await;
    let s = Session::sign_in(&app.base, &admin).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let (_, body) = s.get("/console/parked").await;
        if body.contains("id=\"parked-count\">1<") && body.contains("not JSON") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "parked: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(body.contains("not JSON"), "the park reason: {body}");
    let (status, done) = s.post("/console/parked/requeue", &[("csrf", &s.csrf)]).await;
    assert!(status == 200 && done.contains("1 messages moved back"), "{done}");
    app.shutdown().await;
    cleanup(&p).await;
}
