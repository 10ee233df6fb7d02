//! The deployment files (`deploy/docker`, `deploy/k8s`, `deploy/systemd`) stay true to the worker: every
//! environment variable they set is one the worker reads, the port is the same everywhere, every probe path is a
//! route, every command they run parses, and the example catalog loads. They cannot run here (no container
//! runtime); `deploy/check-deploy.sh` checks their syntax, the systemd unit and the alert rules.

use billing_worker::catalog::Catalog;
use billing_worker::cli::Cli;
use clap::Parser;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// (path relative to the repository, text) of every file of the deployment targets, not the scripts beside them.
fn deploy_files() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    for dir in ["deploy/docker", "deploy/k8s", "deploy/systemd"] {
        files_under(&root().join(dir), &mut paths);
    }
    paths.sort();
    let root = root();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.strip_prefix(&root).unwrap().display().to_string(), text)
        })
        .collect()
}

/// All of `src/`, to look for string literals in.
fn source_text() -> String {
    let mut paths = Vec::new();
    files_under(&root().join("src"), &mut paths);
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Environment variable names in `text`: `BILLING_*`, `STRIPE_*`, `DATABASE_URL`, `AMQP_URL`, `RUST_LOG`.
fn env_names(text: &str) -> BTreeSet<String> {
    let upper = |w: &str| w.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["DATABASE_URL", "AMQP_URL", "RUST_LOG"].contains(w)
                || ["BILLING_", "STRIPE_"].iter().any(|p| w.len() > p.len() && w.starts_with(p) && upper(w))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_variable_the_deploy_files_set_is_read_by_the_worker() {
    let src = source_text();
    let mut seen = BTreeSet::new();
    for (file, text) in deploy_files() {
        for name in env_names(&text) {
            assert!(src.contains(&format!("\"{name}\"")), "{file} names {name}, which nothing in src/ reads");
            seen.insert(name);
        }
    }
    for name in ["DATABASE_URL", "AMQP_URL", "BILLING_LISTEN", "BILLING_CONFIG", "STRIPE_WEBHOOK_SECRET"] {
        assert!(seen.contains(name), "{name} not found in the deploy files: is the scan still reading them?");
    }
}

#[test]
fn the_port_is_8080_everywhere() {
    let dockerfile = read("deploy/docker/Dockerfile");
    assert!(dockerfile.lines().any(|l| l.trim() == "EXPOSE 8080"), "Dockerfile: EXPOSE 8080");
    assert!(read("deploy/docker/compose.yaml").contains(":8080"), "compose.yaml: port 8080");
    assert!(read("deploy/k8s/deployment.yaml").contains("containerPort: 8080"), "deployment.yaml: containerPort");
    assert!(read("deploy/k8s/service.yaml").contains("port: 8080"), "service.yaml: port 8080");
    // Wherever BILLING_LISTEN is given a value (`NAME=value` or `NAME: value`), it listens on that port.
    for (file, text) in deploy_files() {
        for (i, _) in text.match_indices("BILLING_LISTEN") {
            let rest = &text[i + "BILLING_LISTEN".len()..];
            let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(": ")) else { continue };
            let value = value.lines().next().unwrap_or("").trim().trim_matches('"');
            assert!(value.ends_with(":8080"), "{file}: BILLING_LISTEN={value} is not port 8080");
        }
    }
}

/// HTTP paths used by probes and scrapes: YAML `path: /x` (Kubernetes probes, the scrape annotation, the
/// ServiceMonitor) and URLs `...:8080/x` (the Docker and compose health checks).
fn http_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for marker in ["path: ", ":8080/"] {
        for (i, _) in text.match_indices(marker) {
            // For a URL, keep its slash.
            let rest = if marker.ends_with('/') { &text[i + marker.len() - 1..] } else { &text[i + marker.len()..] };
            let rest = rest.trim_start_matches('"');
            if rest.starts_with('/') {
                out.insert(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || "/_.-".contains(*c)).collect());
            }
        }
    }
    out
}

#[test]
fn every_probe_path_is_a_route_of_the_worker() {
    // The router is read as text: a path is served when src/http/mod.rs routes it (`.route("/healthz", ...)`).
    let router = read("src/http/mod.rs");
    let mut seen = BTreeSet::new();
    for (file, text) in deploy_files() {
        for path in http_paths(&text) {
            assert!(
                router.contains(&format!(".route(\"{path}\"")),
                "{file} uses {path}, which the worker does not serve"
            );
            seen.insert(path);
        }
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(seen.contains(path), "{path} not found in the deploy files: is the scan still reading them?");
    }
}

/// The commands the deploy files run: exec lists `["billing-worker", "migrate"]` (Dockerfile, compose,
/// Kubernetes) and systemd's `ExecStart=/usr/local/bin/billing-worker serve`.
fn commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("[\"billing-worker\"") {
        let list = &text[i + 1..];
        let list = &list[..list.find(']').expect("a closed list")];
        out.push(list.split(',').map(|a| a.trim().trim_matches('"').to_owned()).collect());
    }
    for line in text.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")) {
        let mut words = line.split_whitespace();
        if words.next().is_some_and(|bin| bin.ends_with("/billing-worker")) {
            out.push(std::iter::once("billing-worker").chain(words).map(str::to_owned).collect());
        }
    }
    out
}

#[test]
fn every_command_the_deploy_files_run_parses() {
    let mut seen = BTreeSet::new();
    for (file, text) in deploy_files() {
        for args in commands(&text) {
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{file}: {args:?} does not parse: {e}");
            }
            seen.insert(args.get(1).cloned().unwrap_or_default());
        }
    }
    for sub in ["serve", "migrate"] {
        assert!(
            seen.contains(sub),
            "no `billing-worker {sub}` found in the deploy files: is the scan still reading them?"
        );
    }
}

/// The text of the YAML block scalar `key: |` in `yaml`, without its indentation.
fn block_scalar(yaml: &str, key: &str) -> String {
    let head = format!("{key}: |");
    let mut lines = yaml.lines();
    let start = lines.by_ref().find(|l| l.trim() == head).unwrap_or_else(|| panic!("no `{head}`"));
    let outer = start.len() - start.trim_start().len();
    let mut inner = None;
    let mut body = String::new();
    for l in lines {
        let indent = l.len() - l.trim_start().len();
        if !l.trim().is_empty() {
            if indent <= outer {
                break;
            }
            body.push_str(&l[*inner.get_or_insert(indent)..]);
        }
        body.push('\n');
    }
    body
}

#[test]
fn the_example_catalog_loads_where_billing_config_points() {
    let configmap = read("deploy/k8s/configmap.example.yaml");
    let catalog = Catalog::with_overlay(&block_scalar(&configmap, "catalog.toml"))
        .unwrap_or_else(|e| panic!("configmap.example.yaml, catalog.toml: {e}"));
    assert!(catalog.packages.contains_key("credits_1000"), "the example's own package is in the catalog");
    assert!(configmap.contains("BILLING_CONFIG: /etc/billing-worker/catalog.toml"), "BILLING_CONFIG");
    for file in ["deploy/k8s/deployment.yaml", "deploy/k8s/migrate-job.yaml"] {
        assert!(read(file).contains("mountPath: /etc/billing-worker\n"), "{file}: the catalog is mounted there");
    }
}

#[test]
fn every_metric_the_alerts_use_is_exported() {
    let src = source_text();
    let alerts = read("deploy/prometheus/alerts.yaml");
    let metrics: BTreeSet<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("billing_") && w.len() > "billing_".len())
        .collect();
    assert!(metrics.contains("billing_broker_up"), "the scan reads the alert rules");
    for m in metrics {
        assert!(src.contains(&format!("\"{m}\"")), "alerts.yaml uses {m}, which the worker does not export");
    }
}

/// `KEY: "value"` or `KEY=value` settings of the worker's variables in `text` (YAML maps, env files).
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once(": ").or_else(|| l.split_once('='))?;
            let k = k.trim();
            // The catalog file is checked by its own test (its path exists only in the target).
            let wanted = (k.starts_with("BILLING_") || k.starts_with("STRIPE_"))
                && k == k.to_uppercase()
                && k != "BILLING_CONFIG";
            wanted.then(|| (k.to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

fn number_after(text: &str, key: &str) -> u64 {
    let rest = text.split(key).nth(1).unwrap_or_else(|| panic!("{key} not found"));
    rest.trim_start_matches([':', '=', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The settings each target ships are a configuration the worker accepts (the shutdown deadline against the
/// request deadline and the delay, for one), and each supervisor waits longer than the drain may take.
#[test]
fn each_targets_settings_load_and_its_grace_outlasts_the_drain() {
    for (file, grace_key) in [
        ("deploy/k8s/configmap.example.yaml", ("deploy/k8s/deployment.yaml", "terminationGracePeriodSeconds")),
        ("deploy/systemd/env.example", ("deploy/systemd/billing-worker.service", "TimeoutStopSec")),
        ("deploy/docker/compose.yaml", ("deploy/docker/compose.yaml", "stop_grace_period")),
    ] {
        let vars: std::collections::HashMap<String, String> = settings(&read(file)).into_iter().collect();
        let config = billing_worker::config::Config::from_lookup(|k| vars.get(k).cloned())
            .unwrap_or_else(|e| panic!("{file}: the worker refuses these settings: {e}"));
        let grace = number_after(&read(grace_key.0), grace_key.1);
        assert!(
            grace > config.shutdown_secs,
            "{}: {} = {grace} s must exceed BILLING_SHUTDOWN_SECS = {} s",
            grace_key.0,
            grace_key.1,
            config.shutdown_secs
        );
    }
}
