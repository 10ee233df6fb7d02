//! Unit tests for every credit rule of SPEC §4, and property tests over random sequences of operations.

use super::*;
pub(crate) use crate::domain::test_values::{at, cr};
use crate::time::{add_months, parse_rfc3339};

pub(crate) fn t(s: &str) -> UnixTime {
    parse_rfc3339(s).unwrap()
}

pub(crate) fn basic() -> PlanTerms {
    PlanTerms { plan: "basic".into(), monthly: cr(20), cap: cr(40) }
}
pub(crate) fn pro() -> PlanTerms {
    PlanTerms { plan: "pro".into(), monthly: cr(50), cap: cr(100) }
}

fn ok(a: &mut Account, op: Op, now: UnixTime) -> Applied {
    a.apply(&op, now, "test").unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

fn subscribed(terms: PlanTerms, anchor: UnixTime, paid_months: i64) -> Account {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms }, anchor);
    ok(&mut a, Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, paid_months) }, anchor);
    a
}

fn pay(a: &mut Account, anchor: UnixTime, month: i64, now: UnixTime) {
    let (start, end) = (add_months(anchor, month), add_months(anchor, month + 1));
    ok(a, Op::Paid { subscription: "sub".into(), start, end }, now);
}

fn debit(credits: i64, key: &str) -> Op {
    Op::Debit { key: key.into(), credits, user_id: Some("u1".into()), operation: Some("chat.message".into()) }
}

pub(crate) fn check_invariants(a: &Account) {
    let lots: Credits = a.lots.iter().map(|l| l.remaining).sum();
    assert_eq!(a.balance, lots, "balance = sum of remaining in lots");
    // Never negative: balances and what lots have left are `Credits`, which cannot go below zero.
    if let Some(last) = a.entries.last() {
        assert_eq!(last.balance_after, a.balance);
    }
}

#[test]
fn basic_never_used_goes_20_40_60_60() {
    let anchor = t("2026-01-15T10:00:00Z");
    let mut a = Account::new("acc");
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, anchor);
    let mut seen = vec![];
    for m in 0..5 {
        let start = add_months(anchor, m);
        pay(&mut a, anchor, m, start);
        seen.push(a.balance);
        check_invariants(&a);
    }
    assert_eq!(seen, vec![20, 40, 60, 60, 60]);
    // The cut expired the excess: 20 expired at the 4th and 5th close each.
    let expired: i64 = a.entries.iter().filter(|e| e.kind == EntryKind::Expire).map(|e| -e.amount).sum();
    assert_eq!(expired, 40);
}

#[test]
fn yearly_basic_allocates_every_month() {
    let anchor = t("2026-03-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 12);
    assert_eq!(a.balance, 20);
    let mut seen = vec![];
    for m in 1..=13 {
        ok(&mut a, Op::Tick, add_months(anchor, m));
        seen.push(a.balance);
    }
    // 40, then 60 every month of the paid year; the 13th month is not paid.
    assert_eq!(&seen[..11], &[40, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60]);
    assert_eq!(seen[11], 40, "month 13 is unpaid: the close cuts to the cap and nothing is granted");
    assert_eq!(a.subscriptions[0].granted.len(), 12);
}

#[test]
fn anchor_on_the_31st_clamps_and_comes_back() {
    let anchor = t("2025-01-31T12:00:00Z");
    let a = subscribed(basic(), anchor, 1);
    assert_eq!(a.subscriptions[0].cycle().1, t("2025-02-28T12:00:00Z"));
    let s = &a.subscriptions[0];
    assert_eq!(cycle::boundary_after(s.anchor, t("2025-02-28T12:00:00Z")), t("2025-03-31T12:00:00Z"));
    let leap = t("2024-01-31T00:00:00Z");
    assert_eq!(cycle::boundary_after(leap, leap), t("2024-02-29T00:00:00Z"));
    assert_eq!(cycle::boundary_after(leap, t("2024-02-29T00:00:00Z")), t("2024-03-31T00:00:00Z"));
    assert_eq!(cycle::cycle_start_at(leap, t("2024-03-30T00:00:00Z")), t("2024-02-29T00:00:00Z"));
}

#[test]
fn debits_take_expiring_then_subscription_then_oldest() {
    let anchor = t("2026-01-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 1);
    ok(&mut a, Op::Grant { lot_id: "pi_pkg".into(), source: Source::Package, credits: 100 }, anchor + 10);
    ok(&mut a, debit(25, "d1"), anchor + 20);
    let sub = a.lots.iter().find(|l| l.source == Source::Subscription).unwrap();
    let pkg = a.lots.iter().find(|l| l.source == Source::Package).unwrap();
    assert_eq!((sub.remaining, pkg.remaining), (cr(0), cr(95)), "subscription credits (cut at close) go first");
    // A lot with a fixed expiry (a cancelled subscription's) goes before both.
    let mut b = subscribed(basic(), anchor, 1);
    ok(&mut b, Op::Grant { lot_id: "pi_pkg".into(), source: Source::Package, credits: 100 }, anchor + 10);
    ok(&mut b, Op::Cancel { subscription: "sub".into(), at: anchor + 30 }, anchor + 30);
    ok(&mut b, debit(5, "d2"), anchor + 40);
    assert_eq!(b.lots.iter().find(|l| l.source == Source::Subscription).unwrap().remaining, 15);
}

#[test]
fn a_debit_the_balance_cannot_cover_is_refused_whole() {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Signup { credits: 5 }, at(0));
    let before = a.clone();
    assert_eq!(a.apply(&debit(6, "d"), at(10), "t"), Err(RuleError::Insufficient { balance: cr(5), needed: cr(6) }));
    assert_eq!(a, before, "nothing changed");
    assert_eq!(a.apply(&debit(0, "d"), at(10), "t"), Err(RuleError::NonPositive(0)));
    assert_eq!(a.apply(&debit(-3, "d"), at(10), "t"), Err(RuleError::NonPositive(-3)));
    ok(&mut a, debit(5, "d"), at(10));
    assert_eq!(a.balance, 0);
}

#[test]
fn signup_once_and_not_for_stripe_accounts() {
    let mut a = Account::new("acc");
    assert_eq!(ok(&mut a, Op::Signup { credits: 5 }, at(0)).credits, 5);
    assert_eq!(ok(&mut a, Op::Signup { credits: 5 }, at(1)).credits, 0);
    assert_eq!(a.balance, 5);
    let b = subscribed(basic(), at(0), 1);
    assert!(b.lots.iter().all(|l| l.source != Source::Signup));
}

#[test]
fn packages_grant_once_per_payment_and_never_expire() {
    let mut a = Account::new("acc");
    let g = Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 300 };
    assert_eq!(ok(&mut a, g.clone(), at(0)).credits, 300);
    assert_eq!(ok(&mut a, g, at(5)).credits, 0);
    ok(&mut a, Op::Tick, add_months(at(0), 120));
    assert_eq!(a.balance, 300);
    assert!(a.lots[0].expires_at.is_none());
}

#[test]
fn cycle_close_cuts_only_subscription_credits_oldest_first() {
    let anchor = t("2026-01-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 1);
    ok(&mut a, Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 100 }, anchor);
    ok(&mut a, Op::Adjust { key: "a1".into(), credits: 7 }, anchor);
    ok(&mut a, Op::Signup { credits: 5 }, anchor);
    for m in 1..4 {
        pay(&mut a, anchor, m, add_months(anchor, m));
    }
    let sub: Credits = a.lots.iter().filter(|l| l.source == Source::Subscription).map(|l| l.remaining).sum();
    assert_eq!(sub, 60);
    assert_eq!(a.balance, 60 + 100 + 7 + 5);
    let first = a.lots.iter().find(|l| l.cycle_start == Some(anchor)).unwrap();
    assert_eq!(first.remaining, 0, "the oldest subscription lot was cut first");
}

#[test]
fn unpaid_cycle_grants_nothing_and_late_payment_ends_as_if_on_time() {
    let anchor = t("2026-01-10T00:00:00Z");
    // On time: months 0..3 paid at their starts.
    let mut on_time = subscribed(basic(), anchor, 1);
    for m in 1..3 {
        pay(&mut on_time, anchor, m, add_months(anchor, m));
    }
    ok(&mut on_time, Op::Tick, add_months(anchor, 2) + 100);
    // Late: month 1's invoice failed and was paid in month 2 after month 2's.
    let mut late = subscribed(basic(), anchor, 1);
    ok(&mut late, Op::Tick, add_months(anchor, 1) + 5);
    assert_eq!(late.balance, 20, "failed payment: nothing granted");
    pay(&mut late, anchor, 2, add_months(anchor, 2));
    pay(&mut late, anchor, 1, add_months(anchor, 2) + 100);
    assert_eq!(late.balance, on_time.balance);
    assert_eq!(late.balance, 60);
    check_invariants(&late);
}

#[test]
fn late_payments_in_reverse_order_are_cut_like_on_time() {
    let anchor = t("2026-01-10T00:00:00Z");
    let mut a = Account::new("acc");
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, anchor);
    let now = add_months(anchor, 4) + 1;
    for m in (0..5).rev() {
        pay(&mut a, anchor, m, now);
    }
    assert_eq!(a.balance, 60, "40 kept + 20 new, however late the payments came");
}

#[test]
fn upgrade_grants_difference_once_per_cycle_downgrade_waits() {
    let anchor = t("2026-01-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 1);
    let mid = anchor + 10 * 86_400;
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: pro() }, mid);
    assert_eq!(a.balance, 20, "recording the plan grants nothing by itself");
    assert_eq!(ok(&mut a, Op::Upgrade { subscription: "sub".into(), terms: pro(), at: mid }, mid).credits, 30);
    assert_eq!(ok(&mut a, Op::Upgrade { subscription: "sub".into(), terms: pro(), at: mid + 5 }, mid + 5).credits, 0);
    assert_eq!(a.balance, 50);
    assert_eq!(a.plan(), "pro");
    // Downgrade back to basic: takes effect at the next cycle, with basic's cap at that close.
    ok(&mut a, Op::Subscribe { id: "sub".into(), anchor, terms: basic() }, mid + 10);
    assert_eq!(a.plan(), "pro");
    assert_eq!(
        ok(&mut a, Op::Upgrade { subscription: "sub".into(), terms: basic(), at: mid + 11 }, mid + 11).credits,
        0
    );
    pay(&mut a, anchor, 1, add_months(anchor, 1));
    assert_eq!(a.plan(), "basic");
    assert_eq!(a.balance, 40 + 20, "cut to basic's cap of 40, then basic's 20");
}

#[test]
fn cancellation_keeps_credits_to_cycle_end_then_falls_back_to_free() {
    let anchor = t("2026-01-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 1);
    ok(&mut a, Op::Signup { credits: 5 }, anchor);
    ok(&mut a, Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 10 }, anchor);
    ok(&mut a, Op::Cancel { subscription: "sub".into(), at: anchor + 86_400 }, anchor + 86_400);
    assert_eq!(a.plan(), "free");
    assert_eq!(a.balance, 35, "credits stay until the end of the paid cycle");
    assert_eq!(a.expiring_at_cycle_end(), 20);
    ok(&mut a, Op::Tick, add_months(anchor, 1));
    assert_eq!(a.balance, 15, "subscription credits expired; package and signup stay");
    ok(&mut a, Op::Signup { credits: 5 }, add_months(anchor, 1) + 1);
    assert_eq!(a.balance, 15, "no second signup grant");
    pay(&mut a, anchor, 1, add_months(anchor, 1) + 2);
    assert_eq!(a.balance, 15, "a payment after the end grants nothing");
}

#[test]
fn refund_after_half_the_package_was_spent() {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 100 }, at(0));
    ok(&mut a, debit(50, "d"), at(1));
    let r = ok(&mut a, Op::Refund { payment: "pi_1".into(), refunded: 1000, total: 1000 }, at(2));
    assert_eq!((r.credits, a.balance), (50, cr(0)));
    let sf = a.entries.iter().find(|e| e.kind == EntryKind::Shortfall).unwrap();
    assert_eq!((sf.amount, sf.shortfall), (0, cr(50)));
    assert_eq!(
        ok(&mut a, Op::Refund { payment: "pi_1".into(), refunded: 1000, total: 1000 }, at(3)).credits,
        0,
        "once"
    );
}

#[test]
fn partial_refunds_round_down_and_accumulate() {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 25 }, at(0));
    assert_eq!(
        ok(&mut a, Op::Refund { payment: "pi_1".into(), refunded: 333, total: 1000 }, at(1)).credits,
        8,
        "8.325 rounds down"
    );
    assert_eq!(
        ok(&mut a, Op::Refund { payment: "pi_1".into(), refunded: 500, total: 1000 }, at(2)).credits,
        4,
        "12 in all"
    );
    assert_eq!(a.balance, 13);
    let before = a.clone();
    assert_eq!(
        a.apply(&Op::Refund { payment: "pi_x".into(), refunded: 1, total: 1 }, at(3), "t"),
        Err(RuleError::UnknownPayment("pi_x".into()))
    );
    assert_eq!(
        a.apply(&Op::Refund { payment: "pi_1".into(), refunded: 2000, total: 1000 }, at(3), "t"),
        Err(RuleError::InvalidRefund { refunded: 2000, total: 1000 })
    );
    assert_eq!(a, before);
}

#[test]
fn adjustments_grant_and_remove_never_below_zero() {
    let mut a = Account::new("acc");
    assert_eq!(ok(&mut a, Op::Adjust { key: "k1".into(), credits: 10 }, at(0)).credits, 10);
    assert_eq!(ok(&mut a, Op::Adjust { key: "k1".into(), credits: 10 }, at(0)).credits, 0, "same key once");
    assert_eq!(ok(&mut a, Op::Adjust { key: "k2".into(), credits: -4 }, at(1)).credits, -4);
    assert_eq!(ok(&mut a, Op::Adjust { key: "k3".into(), credits: -100 }, at(2)).credits, -6);
    assert_eq!(a.balance, 0);
}

#[test]
fn holds_reserve_capture_less_release_and_expire() {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Grant { lot_id: "p".into(), source: Source::Package, credits: 10 }, at(0));
    let hold =
        |id: &str, n| Op::HoldCreate { id: id.into(), credits: n, deadline: at(100), user_id: None, operation: None };
    ok(&mut a, hold("h1", 6), at(1));
    assert_eq!((a.balance, a.held()), (cr(4), cr(6)));
    assert!(
        matches!(a.apply(&debit(5, "d"), at(2), "t"), Err(RuleError::Insufficient { .. })),
        "held credits are not spendable"
    );
    assert_eq!(ok(&mut a, Op::HoldCapture { id: "h1".into(), credits: 4 }, at(3)).credits, 4);
    assert_eq!((a.balance, a.held()), (cr(6), cr(0)), "capture of less gives the rest back");
    assert!(matches!(
        a.apply(&Op::HoldCapture { id: "h1".into(), credits: 1 }, at(4), "t"),
        Err(RuleError::HoldNotActive { .. })
    ));
    ok(&mut a, hold("h2", 3), at(5));
    assert_eq!(
        a.apply(&Op::HoldCapture { id: "h2".into(), credits: 4 }, at(6), "t"),
        Err(RuleError::CaptureTooLarge { requested: cr(4), held: cr(3) })
    );
    ok(&mut a, Op::HoldRelease { id: "h2".into() }, at(7));
    assert_eq!(a.balance, 6);
    ok(&mut a, hold("h3", 6), at(8));
    assert_eq!(a.balance, 0);
    ok(&mut a, Op::Tick, at(100));
    assert_eq!((a.balance, a.holds[2].status), (cr(6), HoldStatus::Expired), "released at its deadline");
    assert_eq!(
        a.apply(&Op::HoldRelease { id: "nope".into() }, at(101), "t"),
        Err(RuleError::UnknownHold("nope".into()))
    );
}

#[test]
fn due_work_is_the_same_however_it_is_split() {
    let anchor = t("2025-01-31T00:00:00Z");
    let mut once = subscribed(basic(), anchor, 12);
    ok(&mut once, Op::Tick, add_months(anchor, 11) + 5);
    let mut stepwise = subscribed(basic(), anchor, 12);
    for d in (0..340).step_by(3) {
        ok(&mut stepwise, Op::Tick, anchor + d * 86_400);
    }
    ok(&mut stepwise, Op::Tick, add_months(anchor, 11) + 5);
    assert_eq!(once.balance, stepwise.balance);
    assert_eq!(once.lots, stepwise.lots);
    assert_eq!(once.subscriptions, stepwise.subscriptions);
}

#[test]
fn a_trial_is_a_cycle_of_its_own_before_the_anchor() {
    let start = t("2026-01-01T00:00:00Z");
    let anchor = t("2026-01-15T00:00:00Z");
    let mut a = Account::new("acc");
    let snap =
        Snapshot { id: "sub".into(), start, anchor, terms: basic(), version: 1, at: start, ..Snapshot::default() };
    ok(&mut a, Op::Snapshot(snap), start);
    ok(&mut a, Op::Paid { subscription: "sub".into(), start, end: anchor }, start + 10);
    assert_eq!(a.balance, 20, "the paid $0 trial invoice grants the allocation");
    assert_eq!(a.cycle(), Some((start, anchor)));
    ok(&mut a, Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, 1) }, anchor);
    assert_eq!(a.balance, 40);
    assert_eq!(a.cycle(), Some((anchor, t("2026-02-15T00:00:00Z"))));
}

#[test]
fn older_snapshots_do_not_override_newer_ones() {
    let anchor = t("2026-01-01T00:00:00Z");
    let snap = |terms: PlanTerms, version: i64| {
        Op::Snapshot(Snapshot {
            id: "sub".into(),
            start: anchor,
            anchor,
            terms,
            version,
            at: anchor + version,
            ..Snapshot::default()
        })
    };
    let mut a = Account::new("acc");
    ok(&mut a, snap(pro(), 20), anchor);
    ok(&mut a, snap(basic(), 10), anchor);
    assert_eq!(a.plan(), "pro", "the older basic snapshot arrived late and changes nothing");
    assert_eq!(a.subscriptions[0].next_terms, None);
}

#[test]
fn an_upgrade_learned_late_tops_up_cycles_allocated_on_the_old_plan() {
    let anchor = t("2026-01-01T00:00:00Z");
    let mut a = subscribed(basic(), anchor, 2);
    ok(&mut a, Op::Tick, add_months(anchor, 1) + 10);
    assert_eq!(a.balance, 40, "two basic allocations");
    // The upgrade happened on day 10 of the first cycle; its snapshot and paid invoice arrive only now.
    let at = anchor + 10 * 86_400;
    let snap =
        Snapshot { id: "sub".into(), start: anchor, anchor, terms: pro(), version: 5, at, ..Snapshot::default() };
    assert_eq!(ok(&mut a, Op::Snapshot(snap), add_months(anchor, 1) + 20).credits, 30, "second cycle topped up to pro");
    assert_eq!(
        ok(&mut a, Op::Upgrade { subscription: "sub".into(), terms: pro(), at }, add_months(anchor, 1) + 30).credits,
        30
    );
    assert_eq!(a.balance, 100, "as if on time: 20 + 30 upgrade, then 50");
}

/// Every order of a subscription's plan news and payments ends with the same credits (review finding: a late
/// payment used today's plan).
#[test]
fn plan_changes_and_payments_in_any_order_end_the_same() {
    let anchor = t("2026-01-01T00:00:00Z");
    let feb15 = t("2026-02-15T00:00:00Z");
    let now = t("2026-02-20T00:00:00Z");
    let snap = |terms: PlanTerms, at: UnixTime, version: i64| {
        Op::Snapshot(Snapshot { id: "sub".into(), start: anchor, anchor, terms, version, at, ..Snapshot::default() })
    };
    let events = [
        snap(basic(), anchor, 1),
        Op::Paid { subscription: "sub".into(), start: anchor, end: add_months(anchor, 1) },
        Op::Paid { subscription: "sub".into(), start: add_months(anchor, 1), end: add_months(anchor, 2) },
        snap(pro(), feb15, 2),
        Op::Upgrade { subscription: "sub".into(), terms: pro(), at: feb15 },
    ];
    let run = |order: &[usize]| {
        let mut a = Account::new("acc");
        // The subscription must be known first (the mapping waits for it); the rest in the given order.
        a.apply(&events[0], now, "t").unwrap();
        for &i in order {
            a.apply(&events[i], now, "t").unwrap();
        }
        a.apply(&Op::Tick, now, "t").unwrap();
        (a.balance, a.plan())
    };
    let expected = run(&[1, 2, 3, 4]);
    assert_eq!(expected, (cr(20 + 20 + 30), "pro".to_string()), "Jan basic, Feb basic, the upgrade difference");
    let orders = [[4, 3, 2, 1], [3, 1, 4, 2], [2, 4, 1, 3], [1, 3, 2, 4], [4, 1, 3, 2], [3, 4, 2, 1], [2, 1, 4, 3]];
    for o in orders {
        assert_eq!(run(&o), expected, "order {o:?}");
    }
}

#[test]
fn a_refund_while_credits_are_held_does_not_hand_them_back() {
    let mut a = Account::new("acc");
    ok(&mut a, Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 100 }, at(0));
    ok(
        &mut a,
        Op::HoldCreate { id: "h".into(), credits: 60, deadline: at(100), user_id: None, operation: None },
        at(1),
    );
    ok(&mut a, Op::Refund { payment: "pi_1".into(), refunded: 10, total: 10 }, at(2));
    assert_eq!(a.balance, 0);
    ok(&mut a, Op::HoldRelease { id: "h".into() }, at(3));
    assert_eq!(a.balance, 0, "the refunded credits that were held stay refunded");
    check_invariants(&a);
    // Half refunded while 60 of 100 were held: 50 stay the customer's.
    let mut b = Account::new("b");
    ok(&mut b, Op::Grant { lot_id: "pi_2".into(), source: Source::Package, credits: 100 }, at(0));
    ok(
        &mut b,
        Op::HoldCreate { id: "h".into(), credits: 60, deadline: at(100), user_id: None, operation: None },
        at(1),
    );
    ok(&mut b, Op::Refund { payment: "pi_2".into(), refunded: 5, total: 10 }, at(2));
    assert_eq!(
        b.apply(&Op::HoldCapture { id: "h".into(), credits: 60 }, at(3), "t"),
        Err(RuleError::Insufficient { balance: cr(50), needed: cr(60) })
    );
    ok(&mut b, Op::HoldCapture { id: "h".into(), credits: 20 }, at(4));
    assert_eq!(b.balance, 30);
    check_invariants(&b);
}

#[test]
fn a_check_sees_the_account_after_its_due_work_and_a_refusal_keeps_only_that() {
    let anchor = t("2026-01-15T10:00:00Z");
    let mut a = subscribed(basic(), anchor, 2);
    let now = add_months(anchor, 1);
    let mut due_only = a.clone();
    ok(&mut due_only, Op::Tick, now);
    let seen = std::sync::Mutex::new(None);
    let refuse = |acc: &Account| {
        *seen.lock().unwrap() = Some(acc.balance);
        Err(RuleError::NotEntitled { plan: acc.plan(), operation: "chat.message".into() })
    };
    let e = a.apply_checked(&debit(1, "k"), now, "test", &refuse).unwrap_err();
    assert_eq!(e.to_string(), "the basic plan does not include chat.message");
    assert_eq!(*seen.lock().unwrap(), Some(cr(40)), "the check ran after the second month's allocation");
    assert_eq!(a, due_only, "refused: the due work stands, the debit does not");
    let done = a.apply_checked(&debit(1, "k"), now, "test", &|_| Ok(())).unwrap();
    assert_eq!(done.balance, 39);
}
