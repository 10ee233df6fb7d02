//! Property tests over random sequences of grants, debits, holds, cycle closes and refunds.

use super::tests::{basic, check_invariants, pro};
use super::*;
use crate::time::add_months;
use proptest::prelude::*;

const ANCHOR: UnixTime = UnixTime::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400;

#[derive(Debug, Clone)]
enum Step {
    Wait(i64),
    Package(u8, i64),
    Debit(i64),
    Hold(u8, i64),
    Capture(u8, i64),
    Release(u8),
    Pay(i64),
    Refund(u8, i64),
    Adjust(u8, i64),
    Upgrade,
    Downgrade,
    Cancel,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1i64..40).prop_map(Step::Wait),
        2 => (0u8..4, 1i64..60).prop_map(|(i, n)| Step::Package(i, n)),
        4 => (1i64..30).prop_map(Step::Debit),
        2 => (0u8..4, 1i64..20).prop_map(|(i, n)| Step::Hold(i, n)),
        1 => (0u8..4, 0i64..20).prop_map(|(i, n)| Step::Capture(i, n)),
        1 => (0u8..4).prop_map(Step::Release),
        3 => (0i64..14).prop_map(Step::Pay),
        1 => (0u8..4, 0i64..=100).prop_map(|(i, p)| Step::Refund(i, p)),
        1 => (0u8..4, -30i64..30).prop_map(|(i, n)| Step::Adjust(i, n)),
        1 => Just(Step::Upgrade),
        1 => Just(Step::Downgrade),
        1 => Just(Step::Cancel),
    ]
}

/// Turn a step into an op at the current time; `Wait` moves the clock.
fn op_of(s: &Step, now: &mut UnixTime, n: usize) -> Op {
    match *s {
        Step::Wait(d) => {
            *now += d * DAY;
            Op::Tick
        }
        Step::Package(i, c) => Op::Grant { lot_id: format!("pi_{i}").into(), source: Source::Package, credits: c },
        Step::Debit(c) => Op::Debit { key: format!("d{n}"), credits: c, user_id: None, operation: None },
        Step::Hold(i, c) => Op::HoldCreate {
            id: format!("h{i}").into(),
            credits: c,
            deadline: *now + 3 * DAY,
            user_id: None,
            operation: None,
        },
        Step::Capture(i, c) => Op::HoldCapture { id: format!("h{i}").into(), credits: c },
        Step::Release(i) => Op::HoldRelease { id: format!("h{i}").into() },
        Step::Pay(m) => {
            Op::Paid { subscription: "sub".into(), start: add_months(ANCHOR, m), end: add_months(ANCHOR, m + 1) }
        }
        Step::Refund(i, pct) => Op::Refund { payment: format!("pi_{i}").into(), refunded: pct, total: 100 },
        Step::Adjust(i, c) => Op::Adjust { key: format!("a{i}"), credits: c },
        Step::Upgrade => Op::Upgrade { subscription: "sub".into(), terms: pro(), at: *now },
        Step::Downgrade => Op::Subscribe { id: "sub".into(), anchor: ANCHOR, terms: basic() },
        Step::Cancel => Op::Cancel { subscription: "sub".into(), at: *now },
    }
}

fn start() -> Account {
    let mut a = Account::new("acc");
    a.apply(&Op::Subscribe { id: "sub".into(), anchor: ANCHOR, terms: basic() }, ANCHOR, "t").unwrap();
    a
}

fn entries_sum(a: &Account) -> i64 {
    a.entries.iter().map(|e| e.amount).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn balance_is_never_negative_and_always_adds_up(steps in proptest::collection::vec(step(), 1..60)) {
        let mut a = start();
        let mut now = ANCHOR;
        for (n, s) in steps.iter().enumerate() {
            let op = op_of(s, &mut now, n);
            let before = a.clone();
            match a.apply(&op, now, "p") {
                Ok(_) => {}
                Err(_) => {
                    // A refusal changes nothing but the due work that was owed anyway.
                    let mut due = before.clone();
                    due.apply(&Op::Tick, now, "p").unwrap();
                    prop_assert_eq!(&a, &due);
                }
            }
            check_invariants(&a);
            prop_assert_eq!(entries_sum(&a), a.balance.get(), "balance = sum of entries");
            let held: Credits = a.holds.iter().filter(|h| h.status == HoldStatus::Active).map(|h| h.amount).sum();
            prop_assert_eq!(held, a.held());
        }
    }

    #[test]
    fn applying_a_step_twice_changes_nothing(steps in proptest::collection::vec(step(), 1..50)) {
        let mut a = start();
        let mut now = ANCHOR;
        for (n, s) in steps.iter().enumerate() {
            let op = op_of(s, &mut now, n);
            let first = a.apply(&op, now, "p");
            if matches!(op, Op::Debit { .. }) || matches!(op, Op::Adjust { credits, .. } if credits < 0) {
                continue; // debits and removals are made once by their key in the store (tested there)
            }
            let after = a.clone();
            let second = a.apply(&op, now, "p");
            prop_assert_eq!(&a, &after, "{:?} applied twice", op);
            if let Ok(first) = first {
                // The repeat moves no credits (a hold asked for again reports the amount it holds).
                if !matches!(op, Op::HoldCreate { .. }) {
                    prop_assert_eq!(second.map(|r| r.credits).unwrap_or(0), 0, "{:?} -> {:?}", op, first);
                }
            }
        }
    }

    #[test]
    fn due_work_gives_the_same_result_however_it_is_split(
        paid in proptest::collection::vec(0i64..14, 0..14),
        cuts in proptest::collection::vec(1i64..400, 0..12),
        end in 1i64..420,
        spend in 0i64..30,
    ) {
        let setup = |a: &mut Account| {
            for m in &paid {
                let op = Op::Paid { subscription: "sub".into(), start: add_months(ANCHOR, *m), end: add_months(ANCHOR, m + 1) };
                a.apply(&op, ANCHOR, "p").unwrap();
            }
            let _ = a.apply(&Op::Debit { key: "d".into(), credits: spend, user_id: None, operation: None }, ANCHOR, "p");
        };
        let end = ANCHOR + end * DAY;
        let mut once = start();
        setup(&mut once);
        once.apply(&Op::Tick, end, "p").unwrap();
        let mut split = start();
        setup(&mut split);
        let mut cuts: Vec<UnixTime> = cuts.iter().map(|d| ANCHOR + d * DAY).filter(|t| *t < end).collect();
        cuts.sort();
        for c in cuts {
            split.apply(&Op::Tick, c, "p").unwrap();
        }
        split.apply(&Op::Tick, end, "p").unwrap();
        prop_assert_eq!(once.balance, split.balance);
        prop_assert_eq!(&once.lots, &split.lots);
        prop_assert_eq!(&once.subscriptions, &split.subscriptions);
        let amounts = |a: &Account| a.entries.iter().map(|e| (e.at, e.kind, e.amount, e.lot_id.clone())).collect::<Vec<_>>();
        prop_assert_eq!(amounts(&once), amounts(&split));
    }
}
