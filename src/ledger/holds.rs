//! Holds (rule 12): credits reserved out of lots before long work, then captured (all or less) or released.
//!
//! Why take the credits out of lots at once: held credits must not be spendable by anyone else, and a
//! balance that already excludes them needs no second bookkeeping on the hot debit path. A cycle close that
//! happens while credits are held still counts them ([`Account::cut_to_cap`] records what it cut in the hold):
//! holding credits across a close must not let more of them survive it.

use super::{Account, EntryBuilder, EntryKind, Hold, HoldStatus, Lot, RuleError, Source, Ts};

impl Account {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold_create(
        &mut self,
        id: &str,
        credits: i64,
        deadline: Ts,
        user_id: Option<String>,
        operation: Option<String>,
        now: Ts,
        cause: &str,
    ) -> Result<i64, RuleError> {
        if credits <= 0 {
            return Err(RuleError::NonPositive(credits));
        }
        if let Some(h) = self.holds.iter().find(|h| h.id == id) {
            return Ok(h.amount); // the same hold asked for again
        }
        let taken = self.take(credits, EntryKind::Hold, now, cause, user_id.as_deref(), operation.as_deref())?;
        self.holds.push(Hold {
            id: id.to_owned(),
            amount: credits,
            taken,
            created_at: now,
            deadline,
            user_id,
            operation,
            status: HoldStatus::Active,
            cut: Vec::new(),
        });
        Ok(credits)
    }

    fn active_hold(&self, id: &str) -> Result<usize, RuleError> {
        let i = self.holds.iter().position(|h| h.id == id).ok_or_else(|| RuleError::UnknownHold(id.into()))?;
        match self.holds[i].status {
            HoldStatus::Active => Ok(i),
            status => Err(RuleError::HoldNotActive { id: id.into(), status }),
        }
    }

    /// Spend `credits` (at most the amount held) and give the rest back. Credits a close cut while held are
    /// spent first (the customer used them before they would have expired); what is left of them expires.
    pub(crate) fn hold_capture(&mut self, id: &str, credits: i64, now: Ts, cause: &str) -> Result<i64, RuleError> {
        let i = self.active_hold(id)?;
        let held = self.holds[i].amount;
        if credits < 0 {
            return Err(RuleError::NonPositive(credits));
        }
        if credits > held {
            return Err(RuleError::CaptureTooLarge { requested: credits, held });
        }
        self.give_back(i, now, cause);
        self.holds[i].status = HoldStatus::Captured;
        let (user, op) = (self.holds[i].user_id.clone(), self.holds[i].operation.clone());
        let cut: Vec<(String, i64)> = self.holds[i].cut.iter().map(|c| (c.lot.clone(), c.credits)).collect();
        let mut spent_from_cut: Vec<(String, i64)> = Vec::new();
        if credits > 0 {
            // Normally the credits just given back; less if a refund claimed some of them meanwhile.
            let taken =
                self.take_preferring(&cut, credits, EntryKind::Debit, now, cause, user.as_deref(), op.as_deref())?;
            spent_from_cut = taken;
        }
        self.expire_cut(i, &spent_from_cut, now);
        Ok(credits)
    }

    /// Give all held credits back (released by the caller, or expired at the deadline), but those a close cut.
    pub(crate) fn hold_release(&mut self, id: &str, status: HoldStatus, at: Ts, cause: &str) -> Result<i64, RuleError> {
        let i = self.active_hold(id)?;
        let n = self.give_back(i, at, cause);
        self.holds[i].status = status;
        let expired = self.expire_cut(i, &[], at);
        Ok(n - expired)
    }

    /// Expire what closes cut of hold `i`'s credits, less what `spent` (lot, credits) already used of each lot.
    fn expire_cut(&mut self, i: usize, spent: &[(String, i64)], at: Ts) -> i64 {
        let mut used: Vec<(String, i64)> = spent.to_vec();
        let cuts = self.holds[i].cut.clone();
        let mut expired = 0;
        for c in cuts {
            let mut n = c.credits;
            if let Some(u) = used.iter_mut().find(|(l, _)| *l == c.lot) {
                let k = u.1.min(n);
                u.1 -= k;
                n -= k;
            }
            let Some(li) = self.lots.iter().position(|l| l.id == c.lot) else { continue };
            let n = n.min(self.lots[li].remaining);
            self.expire_from_lot(li, n, at, &c.cause);
            expired += n.max(0);
        }
        expired
    }

    fn give_back(&mut self, hi: usize, at: Ts, cause: &str) -> i64 {
        let taken = std::mem::take(&mut self.holds[hi].taken);
        let mut total = 0;
        for (lot_id, n) in &taken {
            let li = match self.lots.iter().position(|l| &l.id == lot_id) {
                Some(li) => li,
                None => {
                    // The store loads every lot an active hold took from; should one be missing all the same,
                    // the credits come back as an adjustment lot rather than being lost.
                    self.lots.push(Lot {
                        id: format!("hold-return:{}:{lot_id}", self.holds[hi].id),
                        source: Source::Adjustment,
                        amount: 0,
                        remaining: 0,
                        granted_at: at,
                        expires_at: None,
                        subscription_id: None,
                        cycle_start: None,
                        clawed: 0,
                    });
                    self.lots.len() - 1
                }
            };
            // A refund may have claimed back some of what was held from this lot meanwhile: those credits do
            // not come back.
            let lot = &self.lots[li];
            let returnable = if lot.amount == 0 { *n } else { (lot.amount - lot.clawed - lot.remaining).clamp(0, *n) };
            self.lots[li].remaining += returnable;
            self.lots[li].amount = self.lots[li].amount.max(self.lots[li].remaining);
            self.balance += returnable;
            total += returnable;
            let id = self.lots[li].id.clone();
            self.push_entry(EntryBuilder::new(at, EntryKind::Release, returnable, Some(&id), cause));
        }
        self.holds[hi].taken = taken;
        total
    }
}
