//! Charts drawn on the server as SVG: the balance over time (a step line from each entry's balance after it,
//! with cycle boundaries marked) and usage by day, stacked by operation. No script and nothing vendored; the
//! labels go through the template's escaping like any other value.

use crate::time::{UnixTime, format_rfc3339};
use maud::{Markup, html};
use std::collections::BTreeMap;

const W: f64 = 800.0;
const H: f64 = 240.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 28.0;
/// Colours for operations, in order of first appearance.
const COLOURS: [&str; 8] = ["#2456c7", "#d2691e", "#1b7f3b", "#8e44ad", "#b3261e", "#00838f", "#8a5a00", "#5b6673"];

fn day(t: UnixTime) -> String {
    format_rfc3339(t)[..10].to_owned()
}

/// x for a time in `[from, to]`, y for a value in `[0, max]`.
fn scale(from: UnixTime, to: UnixTime, max: i64) -> impl Fn(UnixTime, i64) -> (f64, f64) {
    let span = ((to - from) as f64).max(1.0);
    let max = (max as f64).max(1.0);
    move |t, v| {
        let x = PAD_L + ((t - from) as f64 / span).clamp(0.0, 1.0) * (W - PAD_L - PAD_R);
        let y = PAD_T + (1.0 - (v as f64 / max).clamp(0.0, 1.0)) * (H - PAD_T - PAD_B);
        (x, y)
    }
}

/// The balance from `start` (the balance before the period) through each `(at, balance after)` to `to`.
pub fn balance(start: i64, points: &[(UnixTime, i64)], from: UnixTime, to: UnixTime, cycles: &[UnixTime]) -> Markup {
    let max = points.iter().map(|p| p.1).chain([start]).max().unwrap_or(0).max(1);
    let at = scale(from, to, max);
    let mut path = Vec::new();
    let mut last = start;
    let (x0, y0) = at(from, start);
    path.push(format!("{x0:.1},{y0:.1}"));
    for &(t, v) in points {
        let (x, y_before) = at(t, last);
        let (_, y) = at(t, v);
        path.push(format!("{x:.1},{y_before:.1}"));
        path.push(format!("{x:.1},{y:.1}"));
        last = v;
    }
    let (xe, ye) = at(to, last);
    path.push(format!("{xe:.1},{ye:.1}"));
    let bottom = H - PAD_B;
    html! {
        svg.chart #balance-chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="Balance over time" {
            line x1=(PAD_L) y1=(bottom) x2=(W - PAD_R) y2=(bottom) stroke="#d9dee4" {}
            text x=(PAD_L - 6.0) y=(PAD_T + 10.0) text-anchor="end" font-size="12" fill="#5b6673" { (max) }
            text x=(PAD_L - 6.0) y=(bottom) text-anchor="end" font-size="12" fill="#5b6673" { "0" }
            text x=(PAD_L) y=(H - 8.0) font-size="12" fill="#5b6673" { (day(from)) }
            text x=(W - PAD_R) y=(H - 8.0) text-anchor="end" font-size="12" fill="#5b6673" { (day(to)) }
            @for c in cycles.iter().filter(|c| **c > from && **c < to) {
                @let (x, _) = at(*c, 0);
                line.cycle x1=(format!("{x:.1}")) y1=(PAD_T) x2=(format!("{x:.1}")) y2=(bottom) stroke="#8a5a00" stroke-dasharray="4 3" {
                    title { "cycle boundary " (format_rfc3339(*c)) }
                }
            }
            polyline points=(path.join(" ")) fill="none" stroke="#2456c7" stroke-width="2" {}
        }
    }
}

/// Credits spent per day of `[from, to]`, stacked by operation; `debits` are `(at, operation, credits)`.
pub fn usage(debits: &[(UnixTime, String, i64)], from: UnixTime, to: UnixTime) -> Markup {
    let mut days: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut t = from;
    while t <= to && days.len() < 400 {
        days.insert(day(t), BTreeMap::new());
        t += 86_400;
    }
    let mut ops: Vec<String> = Vec::new();
    for (at, op, credits) in debits {
        if !ops.contains(op) {
            ops.push(op.clone());
        }
        *days.entry(day(*at)).or_default().entry(op.clone()).or_default() += credits;
    }
    ops.sort();
    let max = days.values().map(|d| d.values().sum::<i64>()).max().unwrap_or(0).max(1);
    let n = days.len().max(1) as f64;
    let slot = (W - PAD_L - PAD_R) / n;
    let y = |v: i64| (v as f64 / max as f64) * (H - PAD_T - PAD_B);
    let colour = |op: &str| COLOURS[ops.iter().position(|o| o == op).unwrap_or(0) % COLOURS.len()];
    let bottom = H - PAD_B;
    // Each bar: x, top, height, colour, and its title.
    let mut bars = Vec::new();
    for (i, (d, by_op)) in days.iter().enumerate() {
        let x = PAD_L + i as f64 * slot + slot * 0.1;
        let mut top = bottom;
        for (op, credits) in by_op {
            let h = y(*credits);
            top -= h;
            bars.push((x, top, h, colour(op), format!("{d} {op}: {credits} credits")));
        }
    }
    html! {
        div.legend { @for op in &ops { span { i style={ "background:" (colour(op)) } {} (op) } } }
        svg.chart #usage-chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="Usage by day" {
            line x1=(PAD_L) y1=(bottom) x2=(W - PAD_R) y2=(bottom) stroke="#d9dee4" {}
            text x=(PAD_L - 6.0) y=(PAD_T + 10.0) text-anchor="end" font-size="12" fill="#5b6673" { (max) }
            text x=(PAD_L - 6.0) y=(bottom) text-anchor="end" font-size="12" fill="#5b6673" { "0" }
            @if let (Some(first), Some(last)) = (days.keys().next(), days.keys().last()) {
                text x=(PAD_L) y=(H - 8.0) font-size="12" fill="#5b6673" { (first) }
                text x=(W - PAD_R) y=(H - 8.0) text-anchor="end" font-size="12" fill="#5b6673" { (last) }
            }
            @for (x, top, h, colour, title) in &bars {
                rect.bar x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{:.1}", slot * 0.8)) height=(format!("{h:.1}")) fill=(colour) {
                    title { (title) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balance_line_stays_inside_the_chart_and_marks_cycles_in_the_period() {
        let (from, to) = (UnixTime::from_secs(1_780_000_000), UnixTime::from_secs(1_780_000_000 + 30 * 86_400));
        let pts = [(from + 86_400, 20), (from + 5 * 86_400, 5), (from + 10 * 86_400, 45)];
        let cycles = [from + 15 * 86_400, to + 86_400];
        let svg = balance(0, &pts, from, to, &cycles).into_string();
        assert_eq!(svg.matches("class=\"cycle\"").count(), 1, "only the boundary inside the period: {svg}");
        let points = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        for p in points.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((PAD_L..=W - PAD_R).contains(&x) && (PAD_T..=H - PAD_B).contains(&y), "{p}");
        }
        assert!(svg.contains(">45<"), "the top of the scale is the highest balance");
    }

    #[test]
    fn usage_bars_stack_per_day_and_labels_are_escaped() {
        let from = UnixTime::from_secs(1_780_000_000);
        let d = vec![
            (from, "chat.message".to_owned(), 3),
            (from + 60, "<script>x</script>".to_owned(), 2),
            (from + 86_400, "chat.message".to_owned(), 5),
        ];
        let svg = usage(&d, from, from + 2 * 86_400).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"), "{svg}");
        assert!(svg.contains(">5<"), "the tallest day sets the scale");
    }
}
