//! Moving everything an account holds to another account: what a Stripe customer's fallback account (named by
//! the customer id) held goes to the account the customer turned out to belong to (SPEC §5), so every order in
//! which Stripe's events arrive ends with the same balances.

use super::{Account, EntryBuilder, EntryKind, Hold, HoldStatus, Lot, Subscription, UnixTime, Why};

/// What an account handed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handover {
    pub lots: Vec<Lot>,
    pub subscriptions: Vec<Subscription>,
    pub holds: Vec<Hold>,
}

impl Account {
    /// Hand over every lot, subscription and active hold whose id `keep` does not name (the receiving account
    /// has one of that id already). A `transfer` entry takes out what each lot has left.
    pub fn hand_over(&mut self, keep: impl Fn(&str) -> bool, now: UnixTime, cause: &str) -> Handover {
        let mut out = Handover::default();
        let (lots, stay): (Vec<Lot>, Vec<Lot>) = std::mem::take(&mut self.lots).into_iter().partition(|l| !keep(&l.id));
        self.lots = stay;
        for l in &lots {
            if !l.remaining.is_zero() {
                self.balance -= l.remaining;
                self.push_entry(EntryBuilder::new(
                    Why::new(now, cause),
                    EntryKind::Transfer,
                    -l.remaining.get(),
                    Some(&l.id),
                ));
            }
        }
        out.lots = lots;
        let (subs, stay): (Vec<Subscription>, Vec<Subscription>) =
            std::mem::take(&mut self.subscriptions).into_iter().partition(|s| !keep(&s.id));
        self.subscriptions = stay;
        out.subscriptions = subs;
        let (holds, stay): (Vec<Hold>, Vec<Hold>) =
            std::mem::take(&mut self.holds).into_iter().partition(|h| h.status == HoldStatus::Active && !keep(&h.id));
        self.holds = stay;
        out.holds = holds;
        out
    }

    /// Take over what another account handed over; a `transfer` entry brings in what each lot has left.
    pub fn take_over(&mut self, h: Handover, now: UnixTime, cause: &str) {
        for l in h.lots {
            if !l.remaining.is_zero() {
                self.balance += l.remaining;
                let (id, n) = (l.id.clone(), l.remaining);
                self.lots.push(l);
                self.push_entry(EntryBuilder::new(Why::new(now, cause), EntryKind::Transfer, n.get(), Some(&id)));
            } else {
                self.lots.push(l);
            }
        }
        self.subscriptions.extend(h.subscriptions);
        self.holds.extend(h.holds);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{basic, check_invariants, t};
    use super::super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};

    #[test]
    fn everything_moves_with_entries_on_both_sides() {
        let now = t("2026-02-01T00:00:00Z");
        let mut from = Account::new("cus_1");
        from.signup_granted = true;
        from.apply(&Op::Grant { lot_id: "pi_1".into(), source: Source::Package, credits: 100 }, now, "e1").unwrap();
        from.apply(&Op::Subscribe { id: "sub".into(), anchor: now, terms: basic() }, now, "e2").unwrap();
        from.apply(&Op::Paid { subscription: "sub".into(), start: now, end: now + 40 * 86_400 }, now, "e3").unwrap();
        from.apply(&Op::Debit { key: "d".into(), credits: 30, user_id: None, operation: None }, now, "d").unwrap();
        let mut to = Account::new("acc");
        to.apply(&Op::Signup { credits: 5 }, now, "signup").unwrap();
        from.entries.clear();
        to.entries.clear();
        let total = from.balance + to.balance;
        let h = from.hand_over(|id| to.lots.iter().any(|l| l.id == id), now, "event:link");
        to.take_over(h, now, "event:link");
        assert_eq!((from.balance, from.lots.len(), from.subscriptions.len()), (cr(0), 0, 0), "the fallback ends empty");
        assert_eq!(to.balance, total);
        assert_eq!(to.subscriptions.len(), 1);
        let out: i64 = from.entries.iter().map(|e| e.amount).sum();
        let inn: i64 = to.entries.iter().map(|e| e.amount).sum();
        assert_eq!((out, inn), (-90, 90));
        assert!(
            from.entries.iter().chain(&to.entries).all(|e| e.kind == EntryKind::Transfer && e.cause == "event:link")
        );
        check_invariants(&from);
        check_invariants(&to);
    }
}
