//! Prometheus metrics in text format, kept in-process: counters and latency histograms by label set.
//!
//! Why our own: a dozen counters and one histogram do not earn a metrics crate and its exporter; the text format
//! is simple and tested here.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

const BUCKETS: [f64; 11] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

type Labels = Vec<(&'static str, String)>;

/// A value read when scraped (same-named gauges next to each other).
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Labels,
    pub value: f64,
}

impl Gauge {
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Gauge {
        Gauge { name, help, labels: Vec::new(), value }
    }

    pub fn with(mut self, label: &'static str, value: impl Into<String>) -> Gauge {
        self.labels.push((label, value.into()));
        self
    }
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
    help: Mutex<BTreeMap<&'static str, &'static str>>,
}

/// The process-wide registry.
pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

impl Registry {
    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels, by: f64) {
        self.help.lock().unwrap().insert(name, help);
        *self.counters.lock().unwrap().entry((name, labels)).or_insert(0.0) += by;
    }

    pub fn observe(&self, name: &'static str, help: &'static str, labels: Labels, seconds: f64) {
        self.help.lock().unwrap().insert(name, help);
        let mut h = self.histograms.lock().unwrap();
        let e = h.entry((name, labels)).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                e.counts[i] += 1;
            }
        }
        e.sum += seconds;
        e.count += 1;
    }

    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = vec![("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        self.inc("billing_http_requests_total", "HTTP requests by route, method and status", labels, 1.0);
        self.observe(
            "billing_http_request_duration_seconds",
            "HTTP request latency by route",
            vec![("route", route.to_owned())],
            seconds,
        );
    }

    pub fn webhook(&self, outcome: &str) {
        self.inc("billing_webhooks_total", "Stripe webhooks by outcome", vec![("outcome", outcome.to_owned())], 1.0);
    }

    pub fn command(&self, outcome: &str) {
        self.inc(
            "billing_commands_total",
            "Commands (queue and HTTP) by outcome",
            vec![("outcome", outcome.to_owned())],
            1.0,
        );
    }

    pub fn debit(&self, applied: bool, credits: i64) {
        let outcome = if applied { "applied" } else { "duplicate" };
        self.inc("billing_debits_total", "Debits by outcome", vec![("outcome", outcome.into())], 1.0);
        if applied {
            self.inc("billing_debited_credits_total", "Credits debited through the API", vec![], credits as f64);
        }
    }

    /// A batch of `jobs` changes committed together (group commit).
    pub fn batch(&self, jobs: usize) {
        self.inc("billing_write_batches_total", "Write batches committed", vec![], 1.0);
        self.inc("billing_write_batch_jobs_total", "Changes committed in write batches", vec![], jobs as f64);
    }

    /// A batch tried optimistically (no locks, checked by version as it is written): `written`; `stale`, another
    /// writer had changed one of its accounts; `retried`, it needed what only locks give (a keyed request
    /// refused, a key used before). The last two are run again with locks.
    pub fn optimistic_batch(&self, outcome: &'static str) {
        self.inc(
            "billing_write_optimistic_batches_total",
            "Write batches tried without locks, by outcome (stale and retried ones are run again with locks)",
            vec![("outcome", outcome.into())],
            1.0,
        );
    }

    /// Ledger entries written, by kind, and the credits they moved: added to balances and taken out of them as
    /// two counters, so each only ever goes up (Prometheus' `rate` reads a drop as a restart).
    pub fn entry(&self, kind: &str, amount: i64) {
        self.inc(
            "billing_ledger_entries_total",
            "Ledger entries written, by kind",
            vec![("kind", kind.to_owned())],
            1.0,
        );
        if amount > 0 {
            let help = "Credits added to balances by ledger entries, by kind";
            self.inc("billing_credits_granted_total", help, vec![("kind", kind.to_owned())], amount as f64);
        } else if amount < 0 {
            let help = "Credits taken out of balances by ledger entries, by kind";
            self.inc(
                "billing_credits_removed_total",
                help,
                vec![("kind", kind.to_owned())],
                amount.unsigned_abs() as f64,
            );
        }
    }

    /// The Prometheus text exposition, with `extra` gauges (read when scraped) appended.
    pub fn render(&self, extra: &[Gauge]) -> String {
        let help = self.help.lock().unwrap().clone();
        let mut out = String::new();
        let fmt_labels = |l: &Labels, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> =
                l.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
        };
        let mut last = "";
        for ((name, labels), v) in self.counters.lock().unwrap().iter() {
            if *name != last {
                out.push_str(&format!("# HELP {name} {}\n# TYPE {name} counter\n", help.get(name).unwrap_or(&"")));
                last = name;
            }
            out.push_str(&format!("{name}{} {v}\n", fmt_labels(labels, None)));
        }
        last = "";
        for ((name, labels), h) in self.histograms.lock().unwrap().iter() {
            if *name != last {
                out.push_str(&format!("# HELP {name} {}\n# TYPE {name} histogram\n", help.get(name).unwrap_or(&"")));
                last = name;
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "{name}_bucket{} {}\n",
                    fmt_labels(labels, Some(("le", b.to_string()))),
                    h.counts[i]
                ));
            }
            out.push_str(&format!("{name}_bucket{} {}\n", fmt_labels(labels, Some(("le", "+Inf".into()))), h.count));
            out.push_str(&format!(
                "{name}_sum{} {}\n{name}_count{} {}\n",
                fmt_labels(labels, None),
                h.sum,
                fmt_labels(labels, None),
                h.count
            ));
        }
        last = "";
        for g in extra {
            if g.name != last {
                out.push_str(&format!("# HELP {} {}\n# TYPE {} gauge\n", g.name, g.help, g.name));
                last = g.name;
            }
            out.push_str(&format!("{}{} {}\n", g.name, fmt_labels(&g.labels, None), g.value));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_prometheus_text() {
        let r = Registry::default();
        r.request("/v1/quote", "POST", 200, 0.003);
        r.request("/v1/quote", "POST", 200, 0.2);
        r.debit(true, 4);
        let text = r.render(&[Gauge::new("billing_outbox_lag_seconds", "age of the oldest unsent event", 0.0)]);
        assert!(text.contains("# TYPE billing_http_requests_total counter"));
        assert!(text.contains("billing_http_requests_total{route=\"/v1/quote\",method=\"POST\",status=\"200\"} 2"));
        assert!(text.contains("billing_http_request_duration_seconds_bucket{route=\"/v1/quote\",le=\"0.005\"} 1"));
        assert!(text.contains("billing_http_request_duration_seconds_bucket{route=\"/v1/quote\",le=\"+Inf\"} 2"));
        assert!(text.contains("billing_http_request_duration_seconds_count{route=\"/v1/quote\"} 2"));
        assert!(text.contains("billing_debited_credits_total 4"));
        assert!(text.contains("billing_outbox_lag_seconds 0"));
    }

    #[test]
    fn credit_counters_only_go_up() {
        let r = Registry::default();
        r.entry("grant", 20);
        r.entry("debit", -5);
        r.entry("debit", -3);
        r.entry("shortfall", 0);
        let text = r.render(&[]);
        assert!(text.contains("billing_credits_granted_total{kind=\"grant\"} 20"), "{text}");
        assert!(text.contains("billing_credits_removed_total{kind=\"debit\"} 8"), "{text}");
        assert!(text.contains("billing_ledger_entries_total{kind=\"shortfall\"} 1"), "{text}");
        assert!(!text.contains(" -"), "no counter holds a negative value: {text}");
    }
}
