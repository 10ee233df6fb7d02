//! The console in a real browser (Debian's chromium, headless, driven through chromedriver), as an operator
//! uses it: sign in with a bad key and a good one, open a failed event made by a price the catalog lacks,
//! change the catalog and press Replay, see the balance and the chart change, make an adjustment, revoke a key
//! and see its API calls refused, look at each page at 1,280 and at 390 px, sign out. Each page's screenshot is
//! saved under the test's output folder (`BILLING_WRITE_SCREENSHOTS=1` also writes them to `docs/console/`).

use crate::common::stripe::{Line, Shape, Sub, checkout, event, invoice, price, subscription};
use crate::common::{TestApp, client, spawn_app_with};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T0: i64 = 1_780_000_000;
const DAY: i64 = 86_400;

struct Browser {
    client: Client,
    driver: Child,
    profile: PathBuf,
    shots: PathBuf,
    docs: Option<PathBuf>,
}

impl Drop for Browser {
    /// The chromium chromedriver started goes too (it does not end with chromedriver), found by its own
    /// profile folder, even when the test failed before closing its session.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = Command::new("pkill").args(["-KILL", "-f", &self.profile.display().to_string()]).status();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = crate::common::proc::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is required (deploy/test-services.sh installs Debian's chromium-driver)");
        let profile = std::env::temp_dir().join(format!("bw-chromium-{}", crate::common::unique()));
        let mut caps = serde_json::Map::new();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
        ];
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
        let mut client = None;
        for _ in 0..100 {
            let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            if let Ok(c) = c {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let docs = std::env::var("BILLING_WRITE_SCREENSHOTS")
            .is_ok()
            .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console"));
        Browser { client: client.expect("a WebDriver session with chromium"), driver, profile, shots, docs }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), &png).unwrap();
        if let Some(d) = &self.docs {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    /// Click a button that submits a form, and wait until the page it leads to has loaded (a click returns
    /// when the browser has sent the form, not when the answer is shown).
    async fn submit(&self, css: &str) {
        self.client.execute("window.__left = false;", vec![]).await.unwrap();
        self.click(css).await;
        let loaded = "return window.__left === undefined && document.readyState === 'complete';";
        for _ in 0..200 {
            if self.client.execute(loaded, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css}: no new page within 10 s");
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The page is no wider than the window (nothing to scroll sideways but the tables' own scroll boxes).
    async fn fits(&self) -> bool {
        let v = self.client.execute("return document.documentElement.scrollWidth <= window.innerWidth;", vec![]);
        v.await.unwrap().as_bool().unwrap()
    }
}

async fn worker(db: Option<&str>, catalog: Option<&str>) -> TestApp {
    let mut extra = vec![];
    if let Some(db) = db {
        extra.push(("DATABASE_URL", db));
    }
    if let Some(c) = catalog {
        extra.push(("BILLING_CONFIG", c));
    }
    spawn_app_with("sqlite", T0, &extra).await
}

/// Bounded: a browser that stops answering fails the test instead of holding CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_failed_event_adjusts_and_revokes_in_a_browser() {
    tokio::time::timeout(Duration::from_secs(180), scenario())
        .await
        .expect("the browser scenario ends within 3 minutes");
}

async fn scenario() {
    // A week of usage, then a purchase of a package the catalog does not know yet.
    let app = worker(None, None).await;
    let admin = app.key("admin").await;
    let service = app.key("service").await;
    app.account(&admin, "acc_x").await;
    app.grant(&admin, "acc_x", 100).await;
    for d in 0..7 {
        app.clock.set(app.clock.now() + DAY);
        for (i, op) in ["chat.message", "image.1080p", "chat.message"].iter().enumerate().take(1 + d as usize % 3) {
            let body = json!({"operation": op, "quantity": 1, "user_id": "u", "idempotency_key": format!("d{d}-{i}")});
            let (s, b) = app.call("POST", "/v1/accounts/acc_x/debits", Some(&service), Some(body)).await;
            assert_eq!(s, 201, "{b}");
        }
    }
    // A subscription to a price the catalog does not map yet (its first cycle began 3 days ago), and its invoice.
    let now = app.clock.now().secs();
    let start = now - 3 * DAY;
    let sub = Sub {
        id: "sub_studio",
        customer: "cus_x",
        account: Some("acc_x"),
        price: price("price_studio_m", None, json!({}), Some("month")),
        anchor: start,
        period: (start, start + 30 * DAY),
        status: "active",
        trial: None,
        cancel_at_period_end: false,
        ended_at: None,
    };
    let r =
        app.deliver(&event("evt_sub", "customer.subscription.created", start, subscription(&sub, Shape::New))).await;
    assert_eq!(r["status"], "failed", "a price the catalog lacks: {r}");
    let line = Line { price: "price_studio_m", period: (start, start + 30 * DAY), proration: false, amount: 4900 };
    let inv = invoice("in_studio", "sub_studio", "cus_x", "subscription_create", &[line], Shape::New);
    let r = app.deliver(&event("evt_inv", "invoice.paid", start, inv)).await;
    assert_ne!(r["status"], "applied", "{r}");
    let markup = json!({"credits_package": "<script>alert(1)</script>"});
    let cs = checkout("cs_markup", Some("acc_x"), None, "pi_markup", markup, true);
    app.deliver(&event("evt_markup", "checkout.session.completed", app.clock.now().secs(), cs)).await;
    let before = app.balance("acc_x").await;

    let b = Browser::start().await;
    let base = app.base.clone();
    b.client.goto(&format!("{base}/console")).await.unwrap();
    assert_eq!(b.path().await, "/console/login", "not signed in: the sign-in page");
    b.shot("sign-in").await;
    b.fill("input[name=key]", "bwk_0000_not-a-key").await;
    b.submit("button[type=submit]").await;
    assert!(b.text(".msg.bad").await.contains("not an admin API key"));
    b.fill("input[name=key]", &admin).await;
    b.submit("button[type=submit]").await;
    assert_eq!(b.path().await, "/console");
    let failed_count: usize = b.text("#failed-count").await.parse().unwrap();
    assert!(failed_count >= 2, "the subscription and the markup at least: {failed_count}");
    b.shot("overview").await;

    b.client.goto(&format!("{base}/console/events")).await.unwrap();
    let listed = b.text("table").await;
    assert!(listed.contains("evt_sub") && listed.contains("price_studio_m"), "{listed}");
    assert!(listed.contains("<script>alert(1)</script>"), "the markup is shown as text: {listed}");
    assert!(b.client.get_alert_text().await.is_err(), "and not run");
    b.shot("failed-events").await;
    b.client.goto(&format!("{base}/console/accounts/acc_x")).await.unwrap();
    let chart_before =
        b.client.find(Locator::Css("#balance-chart polyline")).await.unwrap().attr("points").await.unwrap();

    // The catalog learns the package; the worker restarts with it (sessions live in the database).
    let db = app.db_url.clone();
    let now = app.clock.now();
    app.shutdown().await;
    let dir = std::env::temp_dir().join(format!("bw-console-{}", crate::common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = dir.join("catalog.toml");
    let studio = "[plans.studio]\nmonthly_credits = 300\nrollover_cap = 600\nstripe_prices = [\"price_studio_m\"]\n";
    std::fs::write(&catalog, studio).unwrap();
    let app = worker(Some(&db), Some(catalog.to_str().unwrap())).await;
    app.clock.set(now);
    let base = app.base.clone();
    b.client.goto(&format!("{base}/console/events/evt_sub")).await.unwrap();
    assert_eq!(b.path().await, "/console/events/evt_sub", "still signed in on the restarted worker");
    b.shot("failed-event").await;
    b.submit("form[action$='/replay'] button").await;
    assert_eq!(b.text(".msg strong").await, "applied");
    b.shot("replayed").await;
    // "Replay all shown" on what is left: the invoice applies now that its subscription is known (unless
    // recording the subscription already decided it), the markup package still fails; each says so in its row.
    b.client.goto(&format!("{base}/console/events")).await.unwrap();
    let rows = b.client.find_all(Locator::Css("td[id^=result-]")).await.unwrap().len();
    b.click("#replay-all button").await;
    let mut results = vec![];
    for _ in 0..200 {
        results.clear();
        for cell in b.client.find_all(Locator::Css("td[id^=result-]")).await.unwrap() {
            results.push(cell.text().await.unwrap());
        }
        if results.iter().all(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(results.iter().any(|r| r.starts_with("failed: unknown package")), "{results:?}");
    assert_eq!(b.text("#replay-count").await, format!("{rows} of {rows} replayed"));
    b.shot("replay-all").await;

    b.client.goto(&format!("{base}/console/accounts?q=acc_x")).await.unwrap();
    assert_eq!(b.path().await, "/console/accounts/acc_x");
    assert_eq!(b.text("#balance").await, format!("{} credits", before + 300), "the studio allocation");
    assert!(b.text("main").await.contains("sub_studio"), "the subscription is listed");
    let boundaries = b.client.find_all(Locator::Css("#balance-chart line.cycle")).await.unwrap().len();
    assert_eq!(boundaries, 1, "the cycle that began 3 days ago is marked");
    let chart_after =
        b.client.find(Locator::Css("#balance-chart polyline")).await.unwrap().attr("points").await.unwrap();
    assert_ne!(chart_before, chart_after, "the chart shows the grant");
    let bars = b.client.find_all(Locator::Css("#usage-chart rect.bar")).await.unwrap().len();
    assert_eq!(bars, 11, "a bar per day and operation used that day (7 days; chat every day, images on 4)");
    let cause = b.client.find(Locator::Css("a[href='/console/events/evt_inv?source=stripe']")).await;
    assert!(cause.is_ok(), "the grant's ledger entry links to the event that made it");
    b.client.set_window_size(1280, 2400).await.unwrap();
    b.shot("account").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    b.fill("input[name=credits]", "10").await;
    b.fill("input[name=reason]", "goodwill for the outage").await;
    b.submit("form[action$='/adjust'] button").await;
    assert!(b.text(".msg").await.contains("Add 10 credits to account acc_x"));
    b.shot("adjustment-confirm").await;
    b.submit("form[action$='/adjust/apply'] button").await;
    assert!(b.text(".msg.ok").await.contains("Adjusted by 10 credits"));
    assert_eq!(b.text("#balance").await, format!("{} credits", before + 310));
    assert_eq!(app.balance("acc_x").await, before + 310, "the ledger has it");

    // Revoke the service key; its API calls are refused.
    let (s, _) = app.call("GET", "/v1/accounts/acc_x/balance", Some(&service), None).await;
    assert_eq!(s, 200);
    b.client.goto(&format!("{base}/console/keys")).await.unwrap();
    let service_id = service.split('_').nth(1).unwrap();
    b.submit(&format!("form[action='/console/keys/{service_id}/revoke'] button")).await;
    // The click returns when the browser has sent the form; its answer (a redirect back) says it is done.
    let revoked = format!("//tr[td/code[text()='{service_id}']]/td[5][not(text()='—')]");
    b.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::XPath(&revoked)).await.unwrap();
    let (s, _) = app.call("GET", "/v1/accounts/acc_x/balance", Some(&service), None).await;
    assert_eq!(s, 401, "a revoked key is refused");
    b.shot("api-keys").await;

    b.client.goto(&format!("{base}/console/parked")).await.unwrap();
    assert!(b.text(".msg").await.contains("No broker is configured"));
    b.shot("parked").await;
    b.client.goto(&format!("{base}/console/catalog")).await.unwrap();
    assert!(b.text("main").await.contains("price_studio_m"));
    b.shot("catalog").await;

    // Every page fits 1,280 px and 390 px (a phone); screenshots of a few at 390.
    let pages = [
        "/console",
        "/console/events",
        "/console/events/evt_markup",
        "/console/accounts",
        "/console/accounts/acc_x",
        "/console/parked",
        "/console/keys",
        "/console/catalog",
    ];
    for (w, h) in [(1280, 900), (390, 844)] {
        b.client.set_window_size(w, h).await.unwrap();
        for page in pages {
            b.client.goto(&format!("{base}{page}")).await.unwrap();
            assert!(b.fits().await, "{page} fits {w} px");
        }
    }
    for (page, name) in [
        ("/console", "overview-390"),
        ("/console/events", "failed-events-390"),
        ("/console/accounts/acc_x", "account-390"),
    ] {
        b.client.goto(&format!("{base}{page}")).await.unwrap();
        b.shot(name).await;
    }
    b.client.set_window_size(1280, 900).await.unwrap();
    b.client.goto(&format!("{base}/console")).await.unwrap();
    b.submit("header form button").await;
    assert_eq!(b.path().await, "/console/login");
    b.client.goto(&format!("{base}/console/accounts/acc_x")).await.unwrap();
    assert_eq!(b.path().await, "/console/login", "signed out: pages redirect to the sign-in");
    let _ = client();
    b.client.clone().close().await.unwrap();
    app.shutdown().await;
}
