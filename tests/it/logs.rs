//! Logs as an operator gets them from the binary: JSON lines by default when stderr is not a terminal, text
//! when asked, filtered per module by `RUST_LOG`, and a filter or format that cannot be read refused with exit 2.

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
