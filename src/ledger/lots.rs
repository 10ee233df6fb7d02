//! Lots: granting, spending in expiry order, manual adjustments, refunds and lot expiry.

use super::{Account, Credits, EntryBuilder, EntryKind, Lot, LotId, NewLot, RuleError, Source, Why};

impl Account {
    /// Spending order (rule 2): lots that expire soonest first; among lots with no fixed expiry, subscription
    /// credits first, because they are the ones a cycle close may cut; then the oldest.
    pub(crate) fn spending_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lots.len()).filter(|&i| !self.lots[i].remaining.is_zero()).collect();
        idx.sort_by_key(|&i| {
            let l = &self.lots[i];
            (l.expires_at.is_none(), l.expires_at, l.source != Source::Subscription, l.granted_at, l.id.clone())
        });
        idx
    }

    /// Take `credits` out of lots in spending order, one entry per lot touched. Refused whole when the balance
    /// cannot cover it. Returns what came from which lot.
    pub(crate) fn take(
        &mut self,
        credits: Credits,
        kind: EntryKind,
        why: Why,
    ) -> Result<Vec<(LotId, Credits)>, RuleError> {
        self.take_preferring(&[], credits, kind, why)
    }

    /// [`Account::take`], first from the lots of `prefer`, at most the credits given for each; returns what came
    /// from which lot.
    pub(crate) fn take_preferring(
        &mut self,
        prefer: &[(LotId, Credits)],
        credits: Credits,
        kind: EntryKind,
        why: Why,
    ) -> Result<Vec<(LotId, Credits)>, RuleError> {
        if credits > self.balance {
            return Err(RuleError::Insufficient { balance: self.balance, needed: credits });
        }
        let mut left = credits;
        let mut taken: Vec<(LotId, Credits)> = Vec::new();
        let preferred =
            prefer.iter().filter_map(|(lot, max)| self.lots.iter().position(|l| &l.id == lot).map(|i| (i, Some(*max))));
        let order: Vec<(usize, Option<Credits>)> =
            preferred.chain(self.spending_order().into_iter().map(|i| (i, None))).collect();
        for (i, max) in order {
            if left.is_zero() {
                break;
            }
            let n = left.min(self.lots[i].remaining);
            let n = max.map_or(n, |m| n.min(m));
            if n.is_zero() {
                continue;
            }
            self.lots[i].remaining -= n;
            self.balance -= n;
            left -= n;
            let id = self.lots[i].id.clone();
            self.push_entry(EntryBuilder::new(why, kind, -n.get(), Some(&id)));
            match taken.iter_mut().find(|(l, _)| *l == id) {
                Some(t) => t.1 += n,
                None => taken.push((id, n)),
            }
        }
        debug_assert!(left.is_zero(), "balance covered the take but the lots did not");
        Ok(taken)
    }

    /// Grant a lot unless a lot with this id exists. Returns the credits granted (0 for a repeat).
    pub(crate) fn grant_once(&mut self, lot: NewLot, why: Why) -> Credits {
        if lot.credits.is_zero() || self.lots.iter().any(|l| l.id == lot.id) {
            return Credits::ZERO;
        }
        let (subscription_id, cycle_start) = lot.subscription.map_or((None, None), |(s, c)| (Some(s), Some(c)));
        self.lots.push(Lot {
            id: lot.id.clone(),
            source: lot.source,
            amount: lot.credits,
            remaining: lot.credits,
            granted_at: why.at,
            expires_at: lot.expires_at,
            subscription_id,
            cycle_start,
            clawed: Credits::ZERO,
        });
        self.balance += lot.credits;
        self.push_entry(EntryBuilder::new(why, EntryKind::Grant, lot.credits.get(), Some(&lot.id)));
        lot.credits
    }

    /// Free signup credits, once per account (rule 10). A count below one grants nothing.
    pub(crate) fn signup(&mut self, credits: i64, why: Why) -> i64 {
        if self.signup_granted {
            return 0;
        }
        self.signup_granted = true;
        let Some(credits) = Credits::new(credits) else { return 0 };
        let lot = NewLot { id: "signup".into(), source: Source::Signup, credits, subscription: None, expires_at: None };
        self.grant_once(lot, why).get()
    }

    /// Manual grant (> 0) or removal (< 0). A removal takes what the balance has, never more.
    pub(crate) fn adjust(&mut self, key: &str, credits: i64, why: Why) -> i64 {
        if credits > 0 {
            let lot = NewLot {
                id: format!("adjustment:{key}").into(),
                source: Source::Adjustment,
                credits: Credits::new(credits).expect("positive"),
                subscription: None,
                expires_at: None,
            };
            return self.grant_once(lot, why).get();
        }
        let n = Credits::new(credits.saturating_neg()).unwrap_or_default().min(self.balance);
        if n.is_zero() {
            return 0;
        }
        self.take(n, EntryKind::Adjust, why).expect("removal is capped at the balance");
        -n.get()
    }

    /// Refund clawback (rule 9): `refunded` of `total` (cumulative, in the payment's currency units) was
    /// refunded, so `floor(amount * refunded / total)` credits of the lot bought are claimed back in all. What is
    /// left in the lot is taken; the rest was spent and is recorded as a shortfall. Returns credits taken.
    pub(crate) fn refund(
        &mut self,
        payment: &LotId,
        refunded: i64,
        total: i64,
        why: Why,
    ) -> Result<Credits, RuleError> {
        if total <= 0 || refunded < 0 || refunded > total {
            return Err(RuleError::InvalidRefund { refunded, total });
        }
        let i = self
            .lots
            .iter()
            .position(|l| l.id == *payment)
            .ok_or_else(|| RuleError::UnknownPayment(payment.clone()))?;
        let lot = &self.lots[i];
        let target = ((lot.amount.get() as i128 * refunded as i128) / total as i128) as i64;
        let Some(claim) = Credits::new(target - lot.clawed.get()).filter(|c| !c.is_zero()) else {
            return Ok(Credits::ZERO);
        };
        let take = claim.min(lot.remaining);
        let shortfall = claim - take;
        let id = lot.id.clone();
        self.lots[i].clawed += claim;
        self.lots[i].remaining -= take;
        self.balance -= take;
        if !take.is_zero() {
            self.push_entry(EntryBuilder::new(why, EntryKind::Clawback, -take.get(), Some(&id)));
        }
        if !shortfall.is_zero() {
            self.push_entry(EntryBuilder { shortfall, ..EntryBuilder::new(why, EntryKind::Shortfall, 0, Some(&id)) });
        }
        Ok(take)
    }

    /// Expire what is left in lot `i` at `at`.
    pub(crate) fn expire_lot(&mut self, i: usize, why: Why) {
        self.expire_from_lot(i, self.lots[i].remaining, why);
    }

    pub(crate) fn expire_from_lot(&mut self, i: usize, n: Credits, why: Why) {
        if n.is_zero() {
            return;
        }
        self.lots[i].remaining -= n;
        self.balance -= n;
        let id = self.lots[i].id.clone();
        self.push_entry(EntryBuilder::new(why, EntryKind::Expire, -n.get(), Some(&id)));
    }
}
