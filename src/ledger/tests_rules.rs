//! Unit tests for the rules that needed a second look: holds across a cycle close (rules 4, 12), the plan that
//! follows the subscription's status (rule 7), statuses applied in event order.

use super::tests::{basic, check_invariants, t};
use super::*;
#[allow(unused_imports)]
use crate::domain::test_values::{at, cr};
use crate::time::add_months;

fn ok(a: &mut Account, op: Op, now: UnixTime) -> Applied {
    a.apply(&op, now, "test").unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

/// Basic, paid for three cycles and never used: 60 credits in the third cycle; its close at `close` keeps the
/// cap (40) and grants nothing (the fourth cycle is not paid).
fn sixty_before_a_close() -> (Account, UnixTime) {
    let anchor = t("2026-01-10T00:00:00Z");
    let mut a = Account::new("acc");
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, anchor);
    ok(&mut a, Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, 3) }, anchor);
    let close = add_months(anchor, 3);
    ok(&mut a, Op::Tick, close - 10);
    assert_eq!(a.balance, 60);
    (a, close)
}

fn hold(id: &str, credits: i64, now: UnixTime) -> Op {
    Op::HoldCreate { id: id.into(), credits, deadline: now + 3_600, user_id: None, operation: None }
}

#[test]
fn a_hold_across_a_close_keeps_only_what_the_close_keeps() {
    let (mut without, close) = sixty_before_a_close();
    ok(&mut without, Op::Tick, close + 5);
    assert_eq!(without.balance, 40, "without a hold: cut to the cap");

    let (mut a, close) = sixty_before_a_close();
    ok(&mut a, hold("h", 20, close - 5), close - 5);
    assert_eq!(a.balance, 40);
    ok(&mut a, Op::HoldRelease { id: "h".into() }, close + 5);
    assert_eq!(a.balance, 40, "the same as without the hold");
    check_invariants(&a);
}

#[test]
fn the_excess_expires_from_unheld_credits_first() {
    let (mut a, close) = sixty_before_a_close();
    ok(&mut a, hold("h", 20, close - 5), close - 5);
    ok(&mut a, Op::Tick, close + 1);
    // 40 unheld + 20 held is 20 over the cap: the unheld credits pay it, the held ones survive.
    assert_eq!((a.balance, a.held()), (cr(20), cr(20)));
    ok(&mut a, Op::HoldRelease { id: "h".into() }, close + 5);
    assert_eq!(a.balance, 40);
}

#[test]
fn when_held_credits_must_go_a_release_gives_back_only_the_survivors() {
    let (mut a, close) = sixty_before_a_close();
    ok(&mut a, hold("h", 50, close - 5), close - 5);
    ok(&mut a, Op::Tick, close + 1);
    assert_eq!((a.balance, a.held()), (cr(0), cr(50)), "the 10 unheld expired; 10 of the held are cut");
    let r = ok(&mut a, Op::HoldRelease { id: "h".into() }, close + 5);
    assert_eq!((r.credits, a.balance), (40, cr(40)), "40 of the 50 come back");
    check_invariants(&a);
    let expired: i64 = a.entries.iter().filter(|e| e.kind == EntryKind::Expire).map(|e| -e.amount).sum();
    assert_eq!(expired, 20, "10 at the close, 10 held ones at the release");
}

#[test]
fn a_capture_after_the_close_spends_the_cut_credits_first() {
    // Less than held: the cut credits are spent, the rest comes back.
    let (mut a, close) = sixty_before_a_close();
    ok(&mut a, hold("h", 50, close - 5), close - 5);
    ok(&mut a, Op::HoldCapture { id: "h".into(), credits: 30 }, close + 5);
    assert_eq!(a.balance, 20, "60 - 30 spent - 10 over the cap");
    check_invariants(&a);
    // As much as a capture before the close would have left: 60 - 30 = 30, cut to 40 → 30? No: 30 ≤ 40 survives.
    // Spending 30 of which 10 were to be cut leaves 20, the same as capturing first and closing after.
    let (mut b, close) = sixty_before_a_close();
    ok(&mut b, hold("h", 50, close - 5), close - 5);
    ok(&mut b, Op::HoldCapture { id: "h".into(), credits: 30 }, close - 1);
    ok(&mut b, Op::Tick, close + 5);
    assert_eq!(b.balance, 30, "captured before the close, nothing was over the cap");

    // All of it: a long job across the close can still be paid in full.
    let (mut c, close) = sixty_before_a_close();
    ok(&mut c, hold("h", 50, close - 5), close - 5);
    ok(&mut c, Op::HoldCapture { id: "h".into(), credits: 50 }, close + 5);
    assert_eq!(c.balance, 0);
    check_invariants(&c);
}

#[test]
fn a_hold_across_two_closes_is_counted_at_each() {
    let anchor = t("2026-01-10T00:00:00Z");
    let mut a = Account::new("acc");
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, anchor);
    ok(&mut a, Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, 5) }, anchor);
    let c3 = add_months(anchor, 2);
    ok(
        &mut a,
        Op::HoldCreate { id: "h".into(), credits: 30, deadline: add_months(anchor, 6), user_id: None, operation: None },
        c3,
    );
    ok(&mut a, Op::Tick, add_months(anchor, 4) + 1);
    ok(&mut a, Op::HoldRelease { id: "h".into() }, add_months(anchor, 4) + 2);
    let mut b = Account::new("acc");
    ok(&mut b, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, anchor);
    ok(&mut b, Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, 5) }, anchor);
    ok(&mut b, Op::Tick, add_months(anchor, 4) + 2);
    assert_eq!(a.balance, b.balance, "holding across two closes ends like never holding");
    check_invariants(&a);
}

#[test]
fn the_plan_follows_the_subscription_status() {
    let anchor = t("2026-01-10T00:00:00Z");
    let terms = PlanTerms { plan: "business".into(), monthly: cr(150), cap: cr(300) };
    for (status, plan) in [
        ("active", "business"),
        ("trialing", "business"),
        ("past_due", "business"),
        ("incomplete", "free"),
        ("incomplete_expired", "free"),
        ("unpaid", "free"),
        ("paused", "free"),
        ("canceled", "free"),
    ] {
        let mut a = Account::new("acc");
        let snap = Snapshot {
            id: "sub".into(),
            start: anchor,
            anchor,
            terms: terms.clone(),
            status: status.into(),
            version: 1,
            at: anchor,
            ..Snapshot::default()
        };
        ok(&mut a, Op::Snapshot(snap), anchor);
        assert_eq!(a.plan(), plan, "{status}");
    }
}

#[test]
fn a_status_from_an_older_event_does_not_overwrite_a_newer_one() {
    let anchor = t("2026-01-10T00:00:00Z");
    let mut a = Account::new("acc");
    let snap = |status: &str, version| Snapshot {
        id: "sub".into(),
        start: anchor,
        anchor,
        terms: basic(),
        status: status.into(),
        version,
        at: anchor,
        ..Snapshot::default()
    };
    ok(&mut a, Op::Snapshot(snap("active", 40)), anchor);
    // A payment failure older than the snapshot that said active again: the snapshot stands.
    let failed = |version| Op::SubscriptionStatus { subscription: "sub".into(), status: "past_due".into(), version };
    ok(&mut a, failed(Some(30)), anchor);
    assert_eq!(a.subscriptions[0].status, "active");
    // A newer one applies, and an older snapshot arriving after it does not undo it.
    ok(&mut a, failed(Some(50)), anchor);
    assert_eq!(a.subscriptions[0].status, "past_due");
    ok(&mut a, Op::Snapshot(snap("active", 45)), anchor);
    assert_eq!(a.subscriptions[0].status, "past_due");
}
