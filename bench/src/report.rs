//! The benchmark's table and JSON: one row per workload, worker and round, summarized as the median of the
//! rounds, with the compared worker's median beside it when there is one.
//!
//! Why medians of alternating rounds: on a shared two-core machine the same binary moves by up to 30 % between
//! runs, so one run each of two builds says little; rounds that alternate the builds, summarized by their
//! median, put the change next to its baseline from the same minutes.

use crate::load::Measured;
use serde_json::{Value, json};

/// Which binary a row measured: the worker, the one compared with it, or the naive baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Naive,
    Worker,
    Compare,
}

impl Who {
    /// Its name in the JSON and in the workers' log files.
    pub fn name(self) -> &'static str {
        match self {
            Who::Naive => "naive",
            Who::Worker => "worker",
            Who::Compare => "compare",
        }
    }
}

/// One workload measured once.
pub struct Row {
    pub who: Who,
    pub round: usize,
    pub work: String,
    pub backend: String,
    pub m: Measured,
    pub rss_mib: Option<f64>,
    /// The naive baseline's rate of the same round, for the ratio.
    pub baseline: Option<f64>,
}

impl Row {
    pub fn json(&self) -> Value {
        json!({
            "worker": self.who.name(), "round": self.round,
            "work": self.work, "backend": self.backend, "rate_per_s": round(self.m.rate()),
            "p50_ms": round(self.m.quantile_ms(0.5)), "p99_ms": round(self.m.quantile_ms(0.99)),
            "ok": self.m.ok, "errors": self.m.errors, "error_samples": self.m.samples,
            "peak_rss_mib": self.rss_mib.map(round),
            "ratio_to_naive": self.baseline.filter(|b| *b > 0.0).map(|b| round(self.m.rate() / b)),
        })
    }
}

pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The rounds of one workload of one binary, summarized.
pub struct Summary {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
    pub rss: Option<f64>,
    pub ratio: Option<f64>,
}

fn summary<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<Summary> {
    let rows: Vec<&Row> = rows.collect();
    if rows.is_empty() {
        return None;
    }
    let ratios: Vec<f64> =
        rows.iter().filter_map(|r| r.baseline.filter(|b| *b > 0.0).map(|b| r.m.rate() / b)).collect();
    Some(Summary {
        rate: median(rows.iter().map(|r| r.m.rate()).collect()),
        p50: median(rows.iter().map(|r| r.m.quantile_ms(0.5)).collect()),
        p99: median(rows.iter().map(|r| r.m.quantile_ms(0.99)).collect()),
        errors: rows.iter().map(|r| r.m.errors).sum(),
        rss: rows.iter().filter_map(|r| r.rss_mib).reduce(f64::max),
        ratio: (!ratios.is_empty()).then(|| median(ratios)),
    })
}

/// Each workload (in the order first measured) with the worker's or the baseline's summary, and the compared
/// worker's when there is one.
pub fn summarize(rows: &[Row]) -> Vec<(String, String, Summary, Option<Summary>)> {
    let mut keys: Vec<(Who, String, String)> = Vec::new();
    for r in rows {
        let who = if r.who == Who::Compare { Who::Worker } else { r.who };
        if !keys.iter().any(|(w, k, b)| *w == who && *k == r.work && *b == r.backend) {
            keys.push((who, r.work.clone(), r.backend.clone()));
        }
    }
    keys.into_iter()
        .filter_map(|(who, work, backend)| {
            let of = |w: Who| summary(rows.iter().filter(|r| r.who == w && r.work == work && r.backend == backend));
            let main = of(who)?;
            let other = if who == Who::Worker { of(Who::Compare) } else { None };
            Some((work, backend, main, other))
        })
        .collect()
}

pub fn print_table(rows: &[Row], rounds: usize, compare: bool) {
    println!();
    if rounds > 1 {
        println!("medians of {rounds} rounds");
    }
    let extra = if compare { format!(" {:>10} {:>9} {:>8}", "compare/s", "cmp p99", "change") } else { String::new() };
    println!(
        "{:<34} {:<9} {:>9} {:>8} {:>8} {:>7} {:>9} {:>9}{extra}",
        "work", "backend", "rate/s", "p50 ms", "p99 ms", "errors", "RSS MiB", "vs naive"
    );
    for (work, backend, s, other) in summarize(rows) {
        let rss = s.rss.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let ratio = s.ratio.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
        let extra = match other {
            Some(o) => {
                let change =
                    if o.rate > 0.0 { format!("{:+.0}%", (s.rate / o.rate - 1.0) * 100.0) } else { "-".into() };
                format!(" {:>10.0} {:>9.2} {:>8}", o.rate, o.p99, change)
            }
            None => String::new(),
        };
        println!(
            "{:<34} {:<9} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>9} {:>9}{extra}",
            work, backend, s.rate, s.p50, s.p99, s.errors, rss, ratio
        );
    }
    for r in rows.iter().filter(|r| r.m.errors > 0) {
        for s in r.m.samples.iter().take(2) {
            println!(
                "    error ({}, {}, {}): {}",
                r.who.name(),
                r.work,
                r.backend,
                s.chars().take(200).collect::<String>()
            );
        }
    }
}

/// The summary as JSON, beside every round's rows.
pub fn summary_json(rows: &[Row]) -> Value {
    let one = |s: &Summary| {
        json!({
            "rate_per_s": round(s.rate), "p50_ms": round(s.p50), "p99_ms": round(s.p99), "errors": s.errors,
            "peak_rss_mib": s.rss.map(round), "ratio_to_naive": s.ratio.map(round),
        })
    };
    Value::Array(
        summarize(rows)
            .iter()
            .map(|(work, backend, s, other)| {
                json!({"work": work, "backend": backend, "median": one(s), "compare_median": other.as_ref().map(one)})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(who: Who, round: usize, ok: u64) -> Row {
        let m = Measured { ok, secs: 1.0, latencies_us: vec![1000; 3], ..Default::default() };
        Row { who, round, work: "w".into(), backend: "b".into(), m, rss_mib: Some(ok as f64), baseline: Some(100.0) }
    }

    #[test]
    fn medians_of_rounds_with_the_compared_worker_beside() {
        let rows = vec![
            row(Who::Worker, 0, 300),
            row(Who::Compare, 0, 100),
            row(Who::Worker, 1, 500),
            row(Who::Compare, 1, 200),
            row(Who::Worker, 2, 100),
            row(Who::Compare, 2, 150),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 1, "one line per workload");
        let (_, _, main, other) = &s[0];
        assert_eq!(main.rate, 300.0);
        assert_eq!(main.ratio, Some(3.0));
        assert_eq!(main.rss, Some(500.0), "the peak of the rounds");
        assert_eq!(other.as_ref().map(|o| o.rate), Some(150.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
