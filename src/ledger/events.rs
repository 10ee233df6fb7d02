//! The outgoing events a change makes (SPEC §6): credits granted, debited, expired, clawed back; balance low
//! and depleted; subscription changed. Pure: the store writes them to the outbox in the change's transaction.

use super::{Account, Credits, EntryKind, Subscription};
use serde_json::{Value, json};

/// One outgoing event: its type (the routing key) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct OutEvent {
    pub kind: &'static str,
    pub data: Value,
}

/// Events of a change from `before_balance` to the state of `after` (whose `entries` are the change's), with
/// `changed` the subscriptions it recorded differently. `low` is the balance under which `balance.low` is sent.
pub fn events_of(after: &Account, before_balance: Credits, changed: &[&Subscription], low: i64) -> Vec<OutEvent> {
    let mut out = Vec::new();
    let mut totals: Vec<(&'static str, i64, Vec<String>)> = Vec::new();
    for e in &after.entries {
        let kind = match e.kind {
            EntryKind::Grant => "credits.granted",
            EntryKind::Debit | EntryKind::Adjust => "credits.debited",
            EntryKind::Expire => "credits.expired",
            EntryKind::Clawback => "credits.clawed_back",
            EntryKind::Shortfall | EntryKind::Hold | EntryKind::Release | EntryKind::Transfer => continue,
        };
        let cause = e.cause.clone();
        match totals.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(t) => {
                t.1 += e.amount.abs();
                if !t.2.contains(&cause) {
                    t.2.push(cause);
                }
            }
            None => totals.push((kind, e.amount.abs(), vec![cause])),
        }
    }
    for (kind, credits, causes) in totals {
        out.push(OutEvent { kind, data: json!({"credits": credits, "balance": after.balance, "causes": causes}) });
    }
    for s in changed {
        out.push(OutEvent {
            kind: "subscription.changed",
            data: json!({"subscription": s.id, "plan": s.terms.plan, "status": s.status, "ends_at": s.ends_at, "balance": after.balance}),
        });
    }
    let (balance, before) = (after.balance.get(), before_balance.get());
    if balance < low && before >= low && balance > 0 {
        out.push(OutEvent { kind: "balance.low", data: json!({"balance": after.balance, "threshold": low}) });
    }
    if balance == 0 && before > 0 {
        out.push(OutEvent { kind: "balance.depleted", data: json!({"balance": 0}) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};
    use crate::ledger::{Op, Source};

    fn kinds(v: &[OutEvent]) -> Vec<&str> {
        v.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn grants_debits_low_and_depleted() {
        let mut a = Account::new("a");
        a.apply(&Op::Grant { lot_id: "p".into(), source: Source::Package, credits: 12 }, at(0), "c1").unwrap();
        let ev = events_of(&a, cr(0), &[], 10);
        assert_eq!(kinds(&ev), vec!["credits.granted"]);
        assert_eq!(ev[0].data["credits"], 12);
        a.entries.clear();
        a.apply(&Op::Debit { key: "d".into(), credits: 4, user_id: None, operation: None }, at(1), "c2").unwrap();
        assert_eq!(kinds(&events_of(&a, cr(12), &[], 10)), vec!["credits.debited", "balance.low"]);
        a.entries.clear();
        a.apply(&Op::Debit { key: "e".into(), credits: 1, user_id: None, operation: None }, at(2), "c3").unwrap();
        assert_eq!(kinds(&events_of(&a, cr(8), &[], 10)), vec!["credits.debited"], "already low: not sent again");
        a.entries.clear();
        a.apply(&Op::Debit { key: "f".into(), credits: 7, user_id: None, operation: None }, at(3), "c4").unwrap();
        assert_eq!(kinds(&events_of(&a, cr(7), &[], 10)), vec!["credits.debited", "balance.depleted"]);
    }
}
