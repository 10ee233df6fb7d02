//! Logs and printed configuration as an operator gets them from the binary: JSON lines by default when stderr
//! is not a terminal, text when asked, filtered per module by `RUST_LOG`, a filter or format that cannot be read
//! refused with exit 2, and no secret in what `config check` prints.

use std::process::Command;

fn run(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join("billing-worker-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join(format!("logs_{}.db", crate::common::unique())).display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billing-worker"));
    cmd.arg("migrate").env_clear().env("DATABASE_URL", db);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn json_lines_by_default_off_a_terminal() {
    let (code, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let applied = lines.iter().find(|l| l["fields"]["message"] == "migration applied").expect("a migration line");
    assert_eq!(applied["level"], "INFO");
    assert!(applied["target"].as_str().unwrap().starts_with("billing_worker::store"), "{applied}");
    assert!(applied["timestamp"].is_string() && applied["fields"]["version"].is_number(), "{applied}");
}

#[test]
fn text_when_asked_and_filtered_per_module() {
    let (code, err) = run(&[("BILLING_LOG_FORMAT", "text")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("INFO") && err.contains("migration applied") && !err.starts_with('{'), "{err}");
    let (code, err) = run(&[("BILLING_LOG_FORMAT", "text"), ("RUST_LOG", "info,billing_worker::store=warn")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("migration applied"), "the store's info lines are filtered out: {err}");
}

#[test]
fn a_format_or_filter_it_cannot_read_is_refused() {
    let (code, err) = run(&[("BILLING_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("BILLING_LOG_FORMAT: expected json or text, got \"xml\""), "{err}");
    let (code, err) = run(&[("RUST_LOG", "info,sqlx=loud")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("RUST_LOG \"info,sqlx=loud\""), "{err}");
}

/// `config check` and the start's log line show where the database and broker are, never their passwords, and
/// only how many webhook secrets there are.
#[test]
fn config_check_prints_no_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_billing-worker"))
        .args(["config", "check"])
        .env_clear()
        .env("DATABASE_URL", "postgres://app:pg-secret@127.0.0.1:1/none?password=pg-secret-2")
        .env("AMQP_URL", "amqp://worker:mq-secret@127.0.0.1:1/%2f")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_aaa,whsec_bbb")
        .env("STRIPE_API_KEY", "sk_test_secret")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for secret in ["pg-secret", "mq-secret", "whsec_aaa", "whsec_bbb", "sk_test_secret"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    assert!(text.contains("# database: postgres://app:***@127.0.0.1:1/none?password=***"), "{text}");
    assert!(text.contains("# webhook secrets: 2"), "{text}");
}

/// With the store at debug level, every change logs how it ended, with its account and cause; and every request
/// line its request id, method, route, status and milliseconds.
#[tokio::test]
async fn a_change_logs_its_account_and_cause_and_a_request_its_id() {
    use crate::common::proc::{Proc, admin_key, free_port, log_dir};
    let dir = log_dir("change_logs");
    let db = format!("sqlite:{}", dir.join("b.db").display());
    let admin = admin_key(&db);
    let log = dir.join("worker.log");
    let vars = [
        ("DATABASE_URL", db.as_str()),
        ("RUST_LOG", "info,billing_worker::store=debug"),
        ("BILLING_LOG_FORMAT", "json"),
    ];
    let w = Proc::spawn(free_port(), &vars, &log);
    w.ready(false).await;
    let http = crate::common::client();
    let cmd = serde_json::json!({"type": "account.created", "id": "c-logs", "account_id": "acc_logs"});
    let r = http.post(format!("{}/v1/commands", w.base)).bearer_auth(&admin).json(&cmd).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body =
        serde_json::json!({"operation": "chat.message", "quantity": 1, "user_id": "u", "idempotency_key": "job-7"});
    let r = http
        .post(format!("{}/v1/accounts/acc_logs/debits", w.base))
        .bearer_auth(&admin)
        .header("x-request-id", "req-logs-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(w);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let change = lines
        .iter()
        .find(|l| l["fields"]["message"] == "change committed" && l["span"]["cause"] == "debit:job-7")
        .unwrap_or_else(|| panic!("a change line for the debit: {lines:?}"));
    assert_eq!(change["span"]["account"], "acc_logs", "{change}");
    let request = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "req-logs-1" && l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("the request's line: {lines:?}"));
    assert_eq!(request["fields"]["status"], 201, "{request}");
    assert_eq!(request["span"]["route"], "/v1/accounts/{account}/debits", "{request}");
    assert!(request["fields"]["ms"].is_number(), "{request}");
}
