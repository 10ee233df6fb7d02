//! Lots: granting, spending in expiry order, manual adjustments, refunds and lot expiry.

use super::{Account, EntryBuilder, EntryKind, Lot, RuleError, Source, Ts};

impl Account {
    /// Spending order (rule 2): lots that expire soonest first; among lots with no fixed expiry, subscription
    /// credits first, because they are the ones a cycle close may cut; then the oldest.
    pub(crate) fn spending_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lots.len()).filter(|&i| self.lots[i].remaining > 0).collect();
        idx.sort_by_key(|&i| {
            let l = &self.lots[i];
            (l.expires_at.unwrap_or(i64::MAX), l.source != Source::Subscription, l.granted_at, l.id.clone())
        });
        idx
    }

    /// Take `credits` out of lots in spending order, one entry per lot touched. Refused whole when the balance
    /// cannot cover it. Returns what came from which lot.
    pub(crate) fn take(
        &mut self,
        credits: i64,
        kind: EntryKind,
        now: Ts,
        cause: &str,
        user: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<(String, i64)>, RuleError> {
        self.take_preferring(&[], credits, kind, now, cause, user, operation)
    }

    /// [`Account::take`], first from the lots of `prefer`, at most the credits given for each; returns what came
    /// from which lot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn take_preferring(
        &mut self,
        prefer: &[(String, i64)],
        credits: i64,
        kind: EntryKind,
        now: Ts,
        cause: &str,
        user: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<(String, i64)>, RuleError> {
        if credits > self.balance {
            return Err(RuleError::Insufficient { balance: self.balance, needed: credits });
        }
        let mut left = credits;
        let mut taken = Vec::new();
        let preferred =
            prefer.iter().filter_map(|(lot, max)| self.lots.iter().position(|l| &l.id == lot).map(|i| (i, *max)));
        let order: Vec<(usize, i64)> =
            preferred.chain(self.spending_order().into_iter().map(|i| (i, i64::MAX))).collect();
        for (i, max) in order {
            if left == 0 {
                break;
            }
            let n = left.min(self.lots[i].remaining).min(max);
            if n <= 0 {
                continue;
            }
            self.lots[i].remaining -= n;
            self.balance -= n;
            left -= n;
            let id = self.lots[i].id.clone();
            self.push_entry(EntryBuilder { user, operation, ..EntryBuilder::new(now, kind, -n, Some(&id), cause) });
            match taken.iter_mut().find(|(l, _): &&mut (String, i64)| *l == id) {
                Some(t) => t.1 += n,
                None => taken.push((id, n)),
            }
        }
        debug_assert_eq!(left, 0, "balance covered the take but the lots did not");
        Ok(taken)
    }

    /// Grant a lot unless a lot with this id exists. Returns the credits granted (0 for a repeat).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn grant_once(
        &mut self,
        lot_id: &str,
        source: Source,
        credits: i64,
        now: Ts,
        subscription: Option<(&str, Ts)>,
        expires_at: Option<Ts>,
        cause: &str,
    ) -> i64 {
        if credits <= 0 || self.lots.iter().any(|l| l.id == lot_id) {
            return 0;
        }
        self.lots.push(Lot {
            id: lot_id.to_owned(),
            source,
            amount: credits,
            remaining: credits,
            granted_at: now,
            expires_at,
            subscription_id: subscription.map(|(s, _)| s.to_owned()),
            cycle_start: subscription.map(|(_, c)| c),
            clawed: 0,
        });
        self.balance += credits;
        self.push_entry(EntryBuilder::new(now, EntryKind::Grant, credits, Some(lot_id), cause));
        credits
    }

    /// Free signup credits, once per account (rule 10).
    pub(crate) fn signup(&mut self, credits: i64, now: Ts, cause: &str) -> i64 {
        if self.signup_granted {
            return 0;
        }
        self.signup_granted = true;
        self.grant_once("signup", Source::Signup, credits, now, None, None, cause)
    }

    /// Manual grant (> 0) or removal (< 0). A removal takes what the balance has, never more.
    pub(crate) fn adjust(&mut self, key: &str, credits: i64, now: Ts, cause: &str) -> i64 {
        if credits > 0 {
            return self.grant_once(&format!("adjustment:{key}"), Source::Adjustment, credits, now, None, None, cause);
        }
        let n = (-credits).min(self.balance);
        if n == 0 {
            return 0;
        }
        self.take(n, EntryKind::Adjust, now, cause, None, None).expect("removal is capped at the balance");
        -n
    }

    /// Refund clawback (rule 9): `refunded` of `total` (cumulative, in the payment's currency units) was
    /// refunded, so `floor(amount * refunded / total)` credits of the lot bought are claimed back in all. What is
    /// left in the lot is taken; the rest was spent and is recorded as a shortfall. Returns credits taken.
    pub(crate) fn refund(
        &mut self,
        payment: &str,
        refunded: i64,
        total: i64,
        now: Ts,
        cause: &str,
    ) -> Result<i64, RuleError> {
        if total <= 0 || refunded < 0 || refunded > total {
            return Err(RuleError::InvalidRefund { refunded, total });
        }
        let i =
            self.lots.iter().position(|l| l.id == payment).ok_or_else(|| RuleError::UnknownPayment(payment.into()))?;
        let lot = &self.lots[i];
        let target = ((lot.amount as i128 * refunded as i128) / total as i128) as i64;
        let claim = target - lot.clawed;
        if claim <= 0 {
            return Ok(0);
        }
        let take = claim.min(lot.remaining);
        let shortfall = claim - take;
        let id = lot.id.clone();
        self.lots[i].clawed += claim;
        self.lots[i].remaining -= take;
        self.balance -= take;
        if take > 0 {
            self.push_entry(EntryBuilder::new(now, EntryKind::Clawback, -take, Some(&id), cause));
        }
        if shortfall > 0 {
            self.push_entry(EntryBuilder {
                shortfall,
                ..EntryBuilder::new(now, EntryKind::Shortfall, 0, Some(&id), cause)
            });
        }
        Ok(take)
    }

    /// Expire what is left in lot `i` at `at`.
    pub(crate) fn expire_lot(&mut self, i: usize, at: Ts, cause: &str) {
        self.expire_from_lot(i, self.lots[i].remaining, at, cause);
    }

    pub(crate) fn expire_from_lot(&mut self, i: usize, n: i64, at: Ts, cause: &str) {
        if n <= 0 {
            return;
        }
        self.lots[i].remaining -= n;
        self.balance -= n;
        let id = self.lots[i].id.clone();
        self.push_entry(EntryBuilder::new(at, EntryKind::Expire, -n, Some(&id), cause));
    }
}
