//! The storage test suite, run against SQLite and PostgreSQL alike (a fresh database per test).

use crate::common::{at, cr};
use billing_worker::ledger::{Account, Op, PlanTerms, RuleError, Source, UnixTime};
use billing_worker::store::{IdempotencyKey, OnMissing, Outcome, Request, Store, StoreError};
use billing_worker::time::{add_months, parse_rfc3339};

fn t(s: &str) -> UnixTime {
    parse_rfc3339(s).unwrap()
}

fn basic() -> PlanTerms {
    PlanTerms { plan: "basic".into(), monthly: cr(20), cap: cr(40) }
}

fn req(account: &str, op: Op, now: UnixTime) -> Request {
    Request { account: account.into(), op, cause: "test".into(), key: None, on_missing: OnMissing::Create, now }
}

fn debit(account: &str, key: &str, credits: i64, now: UnixTime) -> Request {
    let op = Op::Debit { key: key.into(), credits, user_id: Some("u".into()), operation: Some("chat.message".into()) };
    Request {
        key: Some(IdempotencyKey { key: format!("debit:{key}"), fingerprint: format!("{credits}") }),
        on_missing: OnMissing::Refuse,
        cause: format!("debit:{key}"),
        ..req(account, op, now)
    }
}

async fn grant(store: &Store, account: &str, lot: &str, credits: i64, now: UnixTime) {
    let op = Op::Grant { lot_id: lot.into(), source: Source::Package, credits };
    store.execute(req(account, op, now)).await.unwrap();
}

async fn concurrent_debits_never_overspend(store: Store) {
    grant(&store, "acc", "pi_10", 10, at(0)).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.execute(debit("acc", &format!("k{i}"), 1, at(10))).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Outcome::Applied(_)) => ok += 1,
            Err(StoreError::Rule(RuleError::Insufficient { .. })) => {}
            other => panic!("only insufficient credits may fail, got {other:?}"),
        }
    }
    assert_eq!(ok, 10);
    let v = store.account("acc", at(20)).await.unwrap();
    assert_eq!(v.balance, 0);
    let entries = store.entries("acc", 0, 1000).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "debit").count(), 10);
    assert_eq!(entries.iter().map(|e| e.amount).sum::<i64>(), 0);
}

async fn a_repeated_key_returns_the_first_answer(store: Store) {
    grant(&store, "acc", "pi_1", 10, at(0)).await;
    let first = store.execute(debit("acc", "same", 3, at(1))).await.unwrap();
    assert_eq!(first, Outcome::Applied(billing_worker::ledger::Applied { credits: 3, balance: cr(7) }));
    let again = store.execute(debit("acc", "same", 3, at(2))).await.unwrap();
    assert_eq!(again, Outcome::Duplicate(first.applied().clone()));
    let other = store.execute(debit("acc", "same", 4, at(3))).await;
    assert!(matches!(other, Err(StoreError::KeyConflict(_))), "{other:?}");
    assert_eq!(store.account("acc", at(4)).await.unwrap().balance, 7);
    assert_eq!(store.entries("acc", 0, 100).await.unwrap().len(), 2, "one grant, one debit");
}

async fn unknown_accounts_are_refused_and_not_created(store: Store) {
    let r = store.execute(debit("ghost", "k", 1, at(0))).await;
    assert!(matches!(r, Err(StoreError::UnknownAccount(ref a)) if a == "ghost"), "{r:?}");
    assert!(matches!(store.account("ghost", at(0)).await, Err(StoreError::UnknownAccount(_))));
}

async fn refused_debits_change_nothing(store: Store) {
    grant(&store, "acc", "pi_1", 5, at(0)).await;
    let r = store.execute(debit("acc", "big", 6, at(1))).await;
    assert!(
        matches!(r, Err(StoreError::Rule(RuleError::Insufficient { balance, needed })) if balance == 5 && needed == 6),
        "{r:?}"
    );
    assert_eq!(store.account("acc", at(2)).await.unwrap().balance, 5);
    assert_eq!(store.entries("acc", 0, 100).await.unwrap().len(), 1);
    // The key was not used up by the refusal: the same request succeeds once it can.
    grant(&store, "acc", "pi_2", 5, at(3)).await;
    assert!(matches!(store.execute(debit("acc", "big", 6, at(4))).await, Ok(Outcome::Applied(_))));
}

async fn reads_apply_due_cycle_work(store: Store) {
    let anchor = t("2026-01-31T00:00:00Z");
    let sub = Op::Subscribe { id: "sub_1".into(), anchor, terms: basic() };
    store.execute(req("acc", sub, anchor)).await.unwrap();
    let year = Op::Paid { subscription: "sub_1".into(), start: anchor, end: add_months(anchor, 12) };
    store.execute(req("acc", year, anchor)).await.unwrap();
    let mut seen = vec![];
    for m in 0..4 {
        let v = store.account("acc", add_months(anchor, m) + 60).await.unwrap();
        if m == 1 {
            assert_eq!(v.cycle, Some((t("2026-02-28T00:00:00Z"), t("2026-03-31T00:00:00Z"))), "anchored on the 31st");
            assert_eq!(v.plan, "basic");
        }
        seen.push(v.balance);
    }
    assert_eq!(seen, vec![20, 40, 60, 60]);
    // Months later with nothing run in between: the read catches up to the end of the paid year.
    assert_eq!(store.account("acc", add_months(anchor, 30)).await.unwrap().balance, 40);
}

async fn tick_applies_due_work_for_all_accounts(store: Store) {
    let anchor = t("2026-05-01T00:00:00Z");
    for acc in ["a1", "a2", "a3"] {
        store
            .execute(req(acc, Op::Subscribe { id: format!("sub_{acc}"), anchor, terms: basic() }, anchor))
            .await
            .unwrap();
        let paid = Op::Paid { subscription: format!("sub_{acc}"), start: anchor, end: add_months(anchor, 12) };
        store.execute(req(acc, paid, anchor)).await.unwrap();
    }
    grant(&store, "idle", "pi", 5, anchor).await;
    let touched = store.tick(add_months(anchor, 1) + 1).await.unwrap();
    assert_eq!(touched, 3, "only accounts with due work");
    assert_eq!(store.tick(add_months(anchor, 1) + 2).await.unwrap(), 0, "nothing due twice");
    let e = store.entries("a2", 0, 100).await.unwrap();
    assert_eq!(e.iter().filter(|e| e.kind == "grant").count(), 2);
}

async fn holds_and_refunds_reach_spent_lots(store: Store) {
    grant(&store, "acc", "pi_pkg", 10, at(0)).await;
    let hold = Op::HoldCreate { id: "h1".into(), credits: 10, deadline: at(1000), user_id: None, operation: None };
    store.execute(req("acc", hold, at(1))).await.unwrap();
    // The lot now has 0 left; the hold must still find it to give the credits back.
    store.execute(req("acc", Op::HoldCapture { id: "h1".into(), credits: 6 }, at(2))).await.unwrap();
    let v = store.account("acc", at(3)).await.unwrap();
    assert_eq!((v.balance, v.held), (cr(4), cr(0)));
    store.execute(req("acc", Op::Refund { payment: "pi_pkg".into(), refunded: 100, total: 100 }, at(4))).await.unwrap();
    let entries = store.entries("acc", 0, 100).await.unwrap();
    let sf = entries.iter().find(|e| e.kind == "shortfall").expect("shortfall recorded");
    assert_eq!(sf.shortfall, 6);
    assert_eq!(store.account("acc", at(5)).await.unwrap().balance, 0);
    // A package grant for a payment already granted (and spent) is not granted again.
    grant(&store, "acc", "pi_pkg", 10, at(6)).await;
    assert_eq!(store.account("acc", at(7)).await.unwrap().balance, 0);
    // A hold past its deadline is released by the next read.
    grant(&store, "acc", "pi_2", 3, at(8)).await;
    let hold = Op::HoldCreate { id: "h2".into(), credits: 3, deadline: at(50), user_id: None, operation: None };
    store.execute(req("acc", hold, at(9))).await.unwrap();
    assert_eq!(store.account("acc", at(10)).await.unwrap().held, 3);
    let v = store.account("acc", at(51)).await.unwrap();
    assert_eq!((v.balance, v.held), (cr(3), cr(0)));
}

async fn team_members_are_kept_and_checked(store: Store) {
    grant(&store, "team", "pi", 10, at(0)).await;
    for u in ["ann", "bob"] {
        store.execute(req("team", Op::AddMember { user_id: u.into(), seats: Some(2) }, at(1))).await.unwrap();
    }
    let third = store.execute(req("team", Op::AddMember { user_id: "cy".into(), seats: Some(2) }, at(2))).await;
    assert!(matches!(third, Err(StoreError::Rule(RuleError::SeatLimit { seats: 2 }))), "{third:?}");
    let op = Op::Debit { key: "k1".into(), credits: 1, user_id: Some("cy".into()), operation: None };
    let r = store
        .execute(Request {
            key: Some(IdempotencyKey { key: "k1".into(), fingerprint: "1".into() }),
            ..req("team", op, at(3))
        })
        .await;
    assert!(matches!(r, Err(StoreError::Rule(RuleError::NotAMember(_)))), "{r:?}");
    store.execute(req("team", Op::RemoveMember { user_id: "bob".into() }, at(4))).await.unwrap();
    let v = store.account("team", at(5)).await.unwrap();
    assert_eq!((v.members, v.balance), (vec!["ann".to_string()], cr(10)));
}

async fn migrate_is_idempotent(store: Store) {
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert!(store.ping().await);
}

/// A small deterministic generator, so each seed is one reproducible sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_op(rng: &mut Rng, now: &mut UnixTime, anchor: UnixTime, i: usize, acc: &str) -> (Op, Option<String>) {
    match rng.next(9) {
        0 => {
            *now += (1 + rng.next(20) as i64) * 86_400;
            (Op::Tick, None)
        }
        1 => (
            Op::Grant {
                lot_id: format!("pi_{acc}_{}", rng.next(3)).into(),
                source: Source::Package,
                credits: 1 + rng.next(40) as i64,
            },
            None,
        ),
        2 | 3 => {
            let key = format!("d{i}");
            (
                Op::Debit { key: key.clone(), credits: 1 + rng.next(15) as i64, user_id: None, operation: None },
                Some(key),
            )
        }
        4 => {
            let m = rng.next(8) as i64;
            (
                Op::Paid { subscription: "sub".into(), start: add_months(anchor, m), end: add_months(anchor, m + 1) },
                None,
            )
        }
        5 => (
            Op::HoldCreate {
                id: format!("h{}", rng.next(3)).into(),
                credits: 1 + rng.next(10) as i64,
                deadline: *now + 86_400,
                user_id: None,
                operation: None,
            },
            None,
        ),
        6 => (Op::HoldCapture { id: format!("h{}", rng.next(3)).into(), credits: rng.next(6) as i64 }, None),
        7 => (
            Op::Refund {
                payment: format!("pi_{acc}_{}", rng.next(3)).into(),
                refunded: rng.next(101) as i64,
                total: 100,
            },
            None,
        ),
        _ => {
            let key = format!("a{i}");
            (Op::Adjust { key: key.clone(), credits: rng.next(30) as i64 - 15 }, Some(key))
        }
    }
}

/// Many seeds: the store ends where the pure rules end, and every step applied twice changes nothing.
async fn store_matches_the_rules_and_repeats_change_nothing(store: Store) {
    let anchor = t("2026-01-01T00:00:00Z");
    for seed in 1..=12u64 {
        let acc = format!("acc{seed}");
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut model = Account::new(&acc);
        let mut now = anchor;
        let sub = Op::Subscribe { id: "sub".into(), anchor, terms: basic() };
        model.apply(&sub, now, "test").unwrap();
        store
            .execute(Request {
                account: acc.clone(),
                op: sub,
                cause: "test".into(),
                key: None,
                on_missing: OnMissing::Create,
                now,
            })
            .await
            .unwrap();
        for i in 0..30 {
            let (op, key) = random_op(&mut rng, &mut now, anchor, i, &acc);
            let expected = model.apply(&op, now, "test");
            let r = Request {
                account: acc.clone(),
                op,
                cause: "test".into(),
                key: key.map(|k| IdempotencyKey { key: k, fingerprint: "fp".into() }),
                on_missing: OnMissing::Refuse,
                now,
            };
            let r_op = r.op.clone();
            let got = store.execute(r.clone()).await;
            match (&expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(e, g.applied(), "seed {seed} step {i}"),
                (Err(e), Err(StoreError::Rule(g))) => assert_eq!(e, g),
                _ => panic!("seed {seed} step {i}: rules {expected:?}, store {got:?}"),
            }
            let before = store.account(&acc, now).await.unwrap();
            let n = store.entries(&acc, 0, 10_000).await.unwrap().len();
            let _ = store.execute(r).await;
            let after = store.account(&acc, now).await.unwrap();
            assert_eq!(before, after, "seed {seed} step {i}: a repeat of {:?} changed the account", r_op);
            assert_eq!(
                n,
                store.entries(&acc, 0, 10_000).await.unwrap().len(),
                "seed {seed} step {i}: a repeat wrote entries"
            );
        }
        let v = store.account(&acc, now).await.unwrap();
        model.apply(&Op::Tick, now, "test").unwrap();
        assert_eq!(v.balance, model.balance, "seed {seed}");
        let mut open: Vec<_> = model.lots.iter().filter(|l| l.remaining > 0).cloned().collect();
        open.sort_by(|a, b| (a.granted_at, &a.id).cmp(&(b.granted_at, &b.id)));
        assert_eq!(v.lots, open, "seed {seed}");
        let entries = store.entries(&acc, 0, 10_000).await.unwrap();
        assert_eq!(entries.len(), model.entries.len(), "seed {seed}");
        assert_eq!(
            entries.iter().map(|e| e.amount).sum::<i64>(),
            v.balance.get(),
            "seed {seed}: balance = sum of entries"
        );
    }
}

crate::on_both_backends!(
    concurrent_debits_never_overspend,
    a_repeated_key_returns_the_first_answer,
    unknown_accounts_are_refused_and_not_created,
    refused_debits_change_nothing,
    reads_apply_due_cycle_work,
    tick_applies_due_work_for_all_accounts,
    holds_and_refunds_reach_spent_lots,
    migrate_is_idempotent,
    team_members_are_kept_and_checked,
    store_matches_the_rules_and_repeats_change_nothing,
);
