//! Optimistic batches on PostgreSQL: a lane writes changes to accounts it holds in memory without locking them
//! first, and its write statement checks their versions. These tests run two stores (two instances) on one
//! database, so one changes an account behind the other's memory, and check that no stale memory is ever
//! written or answered from: a debit is never applied on credits already spent, never refused on credits granted
//! meanwhile, a repeated idempotency key still gets its first answer, and random interleavings over many seeds
//! leave every balance equal to its entries and lots, with every key applied once.

use crate::common::proc::unbalanced;
use crate::common::{Rng, at, fresh_url};
use billing_worker::ledger::{Op, RuleError, Source};
use billing_worker::store::{IdempotencyKey, OnMissing, Outcome, Request, Store, StoreError};

fn t0() -> i64 {
    (billing_worker::time::parse_rfc3339("2026-03-01T00:00:00Z").unwrap()).secs()
}

fn req(account: &str, op: Op, key: Option<&str>) -> Request {
    Request {
        account: account.into(),
        key: key.map(|k| IdempotencyKey { key: k.into(), fingerprint: format!("{op:?}") }),
        cause: format!("test:{}", key.unwrap_or("-")),
        op,
        on_missing: OnMissing::Create,
        now: at(t0()),
    }
}

fn debit(account: &str, key: &str, credits: i64) -> Request {
    let op = Op::Debit { key: key.into(), credits, user_id: None, operation: None };
    req(account, op, Some(key))
}

fn grant(account: &str, key: &str, credits: i64) -> Request {
    let op = Op::Grant { lot_id: key.into(), source: Source::Adjustment, credits };
    req(account, op, Some(key))
}

/// `r` without an idempotency key: refused or not, it is written (or checked) by version, so these test the
/// version check itself (a keyed refusal is run again with locks before any check).
fn unkeyed(mut r: Request) -> Request {
    r.key = None;
    r
}

async fn balance(store: &Store, account: &str) -> i64 {
    i64::from(store.account(account, at(t0())).await.unwrap().balance)
}

/// Two stores (instances) on one fresh PostgreSQL database.
async fn two_instances() -> (Store, Store, String) {
    let url = fresh_url("postgres").await;
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    (a, b, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debit_is_never_applied_on_credits_another_instance_spent() {
    let (a, b, url) = two_instances().await;
    a.execute(grant("x", "g1", 10)).await.unwrap();
    a.execute(debit("x", "a1", 1)).await.unwrap();
    let (tried, _) = a.optimistic_stats();
    assert!(tried >= 1, "a second change of an account the lane holds is written optimistically");
    // The other instance spends 8 of the 9 left; a's memory still says 9.
    b.execute(debit("x", "b1", 8)).await.unwrap();
    let (_, stale_before) = a.optimistic_stats();
    match a.execute(unkeyed(debit("x", "a2", 5))).await {
        Err(StoreError::Rule(RuleError::Insufficient { .. })) => {}
        other => panic!("5 credits on a balance of 1 must be refused, got {other:?}"),
    }
    assert_eq!(a.optimistic_stats().1, stale_before + 1, "the stale memory was found out and not used");
    // And the account as a now holds it is right: one credit debits, the next is refused.
    assert!(a.execute(debit("x", "a3", 1)).await.is_ok());
    assert!(a.execute(debit("x", "a4", 1)).await.is_err());
    assert_eq!(balance(&a, "x").await, 0);
    assert_eq!(unbalanced(&url).await, Vec::<String>::new());
    // Operators see both outcomes in /metrics.
    let text = billing_worker::metrics::global().render(&[]);
    for outcome in ["written", "stale"] {
        let line = format!("billing_write_optimistic_batches_total{{outcome=\"{outcome}\"}} ");
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debit_is_not_refused_for_credits_another_instance_granted() {
    let (a, b, url) = two_instances().await;
    a.execute(grant("x", "g1", 2)).await.unwrap();
    a.execute(debit("x", "a1", 1)).await.unwrap();
    // b grants 100; a still holds a balance of 1, on which 50 would be refused.
    b.execute(grant("x", "g2", 100)).await.unwrap();
    let (_, stale_before) = a.optimistic_stats();
    let out = a.execute(unkeyed(debit("x", "a2", 50))).await.expect("the 100 granted meanwhile cover it");
    assert_eq!(out.applied().balance, 51);
    assert_eq!(a.optimistic_stats().1, stale_before + 1, "a's memory was found stale and not answered from");
    assert_eq!(balance(&b, "x").await, 51);
    assert_eq!(unbalanced(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_key_in_an_optimistic_batch_gets_its_first_answer_and_fails_no_other() {
    let (a, _b, url) = two_instances().await;
    a.execute(grant("x", "g1", 100)).await.unwrap();
    let first = a.execute(debit("x", "k1", 3)).await.unwrap();
    assert!(matches!(first, Outcome::Applied(_)));
    // Queued together: the repeat of k1 and fresh keys, in one batch on the lane that holds x.
    let pending: Vec<_> = std::iter::once(a.execute(debit("x", "k1", 3)))
        .chain((0..8).map(|i| a.execute(debit("x", &format!("n{i}"), 1))))
        .collect();
    let mut outcomes = Vec::new();
    for p in pending {
        outcomes.push(p.await.unwrap());
    }
    assert_eq!(outcomes[0], Outcome::Duplicate(first.applied().clone()), "the first answer, not a second debit");
    assert!(outcomes[1..].iter().all(|o| matches!(o, Outcome::Applied(_))), "the fresh keys are applied");
    assert_eq!(balance(&a, "x").await, 100 - 3 - 8);
    // Another request under a used key is a conflict, whichever path finds it.
    match a.execute(debit("x", "k1", 4)).await {
        Err(StoreError::KeyConflict(k)) => assert_eq!(k, "k1"),
        other => panic!("a key reused for another request is a conflict, got {other:?}"),
    }
    assert_eq!(balance(&a, "x").await, 89);
    assert_eq!(unbalanced(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_refused_now_still_gets_its_first_answer() {
    let (a, _b, url) = two_instances().await;
    a.execute(grant("x", "g1", 5)).await.unwrap();
    let first = a.execute(debit("x", "k1", 3)).await.unwrap();
    a.execute(debit("x", "k2", 2)).await.unwrap();
    // The balance is 0: k1 again would be refused if it were applied, but it was applied already.
    let again = a.execute(debit("x", "k1", 3)).await.unwrap();
    assert_eq!(again, Outcome::Duplicate(first.applied().clone()));
    // Another request under k1 is a conflict, though it would be refused too.
    match a.execute(debit("x", "k1", 4)).await {
        Err(StoreError::KeyConflict(k)) => assert_eq!(k, "k1"),
        other => panic!("a used key with another request is a conflict, got {other:?}"),
    }
    // A fresh key on the empty balance is refused, and leaves no answer under its key.
    assert!(matches!(a.execute(debit("x", "k3", 1)).await, Err(StoreError::Rule(RuleError::Insufficient { .. }))));
    a.execute(grant("x", "g2", 1)).await.unwrap();
    assert!(a.execute(debit("x", "k3", 1)).await.is_ok(), "a refused key can be used once credits arrive");
    assert_eq!(balance(&a, "x").await, 0);
    let text = billing_worker::metrics::global().render(&[]);
    assert!(text.contains("billing_write_optimistic_batches_total{outcome=\"retried\"} "), "{text}");
    assert_eq!(unbalanced(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_taken_on_another_instance_are_not_spent_again() {
    let (a, b, url) = two_instances().await;
    a.execute(grant("x", "g1", 10)).await.unwrap();
    a.execute(debit("x", "a1", 1)).await.unwrap();
    // b holds 5 of the 9; a's memory still has 9 spendable.
    let hold =
        Op::HoldCreate { id: "h1".into(), credits: 5, deadline: at(t0() + 3600), user_id: None, operation: None };
    b.execute(req("x", hold, Some("h1"))).await.unwrap();
    let (_, stale_before) = a.optimistic_stats();
    assert!(
        matches!(a.execute(unkeyed(debit("x", "a2", 6))).await, Err(StoreError::Rule(RuleError::Insufficient { .. }))),
        "4 are spendable"
    );
    assert_eq!(a.optimistic_stats().1, stale_before + 1, "a's memory was found stale");
    // a's memory is now the account as it is: it captures 3 of b's hold (unkeyed, without locks), 2 come back.
    let out = a.execute(unkeyed(req("x", Op::HoldCapture { id: "h1".into(), credits: 3 }, None))).await.unwrap();
    assert_eq!(out.applied().balance, 6);
    assert_eq!(a.optimistic_stats().1, stale_before + 1, "nobody changed x meanwhile");
    assert!(a.execute(debit("x", "a3", 6)).await.is_ok());
    assert_eq!(balance(&b, "x").await, 0);
    assert_eq!(unbalanced(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_locked_path_alone_gives_the_same_ledger() {
    // BILLING_WRITE_OPTIMISTIC=off: every batch locks; the same changes give the same answers.
    let url = fresh_url("postgres").await;
    let opts = billing_worker::store::StoreOptions { optimistic: false, ..Default::default() };
    let s = Store::open_with(&url, opts).await.unwrap();
    s.execute(grant("x", "g1", 3)).await.unwrap();
    for k in ["d1", "d2", "d3"] {
        s.execute(debit("x", k, 1)).await.unwrap();
    }
    assert!(s.execute(debit("x", "d4", 1)).await.is_err());
    assert_eq!(s.optimistic_stats(), (0, 0), "no batch went without locks");
    assert_eq!(balance(&s, "x").await, 0);
}

/// Two instances change three accounts at once, in a random mix of grants and debits, some keys sent to both.
/// Afterwards every key is applied at most once, each answer matches the ledger, and every balance equals the
/// sum of its entries and lots, never below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_on_two_instances_lose_and_double_nothing() {
    for seed in 1..=8u64 {
        let (a, b, url) = two_instances().await;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let accounts = ["p", "q", "r"];
        for acc in accounts {
            a.execute(grant(acc, &format!("seed-{acc}"), 20)).await.unwrap();
        }
        let mut applied: std::collections::HashMap<(String, String), i64> = Default::default();
        // In waves of 1 to 12 changes queued together: between waves each lane holds its accounts, which the
        // other instance may change.
        let mut i = 0;
        while i < 160 {
            // Keys applied in earlier waves: a repeat of one must get its first answer, never a refusal (within
            // a wave, a repeat may run before the first and be refused first).
            let earlier: std::collections::HashSet<(String, String)> = applied.keys().cloned().collect();
            let mut pending = Vec::new();
            for _ in 0..1 + rng.below(12) {
                i += 1;
                let acc = accounts[rng.below(3)];
                // One change in ten repeats a key (a client retrying, perhaps on the other instance); the key
                // decides the request, so a repeat is the same request.
                let n = if rng.below(10) == 0 { i / 2 } else { 1000 + i };
                let r = if n % 4 == 0 {
                    grant(acc, &format!("g-{acc}-{n}"), 1 + (n % 5) as i64)
                } else {
                    debit(acc, &format!("d-{acc}-{n}"), 1 + (n % 6) as i64)
                };
                let store = if rng.below(2) == 0 { &a } else { &b };
                pending.push((r.clone(), store.execute(r)));
            }
            for (r, p) in pending {
                let key = r.key.as_ref().unwrap().key.clone();
                match p.await {
                    Ok(o) => {
                        let credits = match r.op {
                            Op::Grant { credits, .. } => credits,
                            Op::Debit { credits, .. } => -credits,
                            _ => unreachable!(),
                        };
                        let prev = applied.insert((r.account.clone(), key.clone()), credits);
                        assert!(prev.is_none() || prev == Some(credits), "seed {seed}: {key} answered two ways: {o:?}");
                    }
                    Err(StoreError::Rule(RuleError::Insufficient { .. })) => {
                        assert!(
                            !earlier.contains(&(r.account.clone(), key.clone())),
                            "seed {seed}: {key} was applied in an earlier wave, and its repeat was refused"
                        );
                    }
                    Err(e) => panic!("seed {seed}: {key}: {e}"),
                }
            }
        }
        for acc in accounts {
            let expected: i64 = 20 + applied.iter().filter(|((a, _), _)| a == acc).map(|(_, c)| c).sum::<i64>();
            let got = balance(&a, acc).await;
            assert_eq!(got, expected, "seed {seed}: {acc} is what its acknowledged changes made it");
            assert!(got >= 0);
            let entries = a.entries(acc, 0, 10_000).await.unwrap();
            let changes: std::collections::HashSet<&str> =
                entries.iter().filter(|e| e.cause.starts_with("test:")).map(|e| e.cause.as_str()).collect();
            let changes = changes.len();
            let acknowledged = applied.keys().filter(|(a, _)| a == acc).count() + 1;
            assert_eq!(changes, acknowledged, "seed {seed}: {acc}: one entry per acknowledged change");
        }
        assert_eq!(unbalanced(&url).await, Vec::<String>::new(), "seed {seed}");
        let ((ta, sa), (tb, sb)) = (a.optimistic_stats(), b.optimistic_stats());
        assert!(ta + tb > 0, "seed {seed}: some batches went without locks");
        assert!(sa + sb > 0, "seed {seed}: some found an account changed by the other instance");
        eprintln!("seed {seed}: optimistic batches {ta} + {tb}, found stale {sa} + {sb}");
    }
}
