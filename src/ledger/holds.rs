//! Holds (rule 12): credits reserved out of lots before long work, then captured (all or less) or released.
//!
//! Why take the credits out of lots at once: held credits must not be spendable by anyone else, and a
//! balance that already excludes them needs no second bookkeeping on the hot debit path. A cycle close that
//! happens while credits are held still counts them ([`Account::cut_to_cap`] records what it cut in the hold):
//! holding credits across a close must not let more of them survive it.

use super::{
    Account, Credits, EntryBuilder, EntryKind, Hold, HoldId, HoldStatus, Lot, LotId, RuleError, Source, UnixTime, Why,
};

impl Account {
    pub(crate) fn hold_create(
        &mut self,
        id: &HoldId,
        credits: Credits,
        deadline: UnixTime,
        why: Why,
    ) -> Result<Credits, RuleError> {
        if let Some(h) = self.holds.iter().find(|h| h.id == *id) {
            return Ok(h.amount); // the same hold asked for again
        }
        let taken = self.take(credits, EntryKind::Hold, why)?;
        self.holds.push(Hold {
            id: id.clone(),
            amount: credits,
            taken,
            created_at: why.at,
            deadline,
            user_id: why.user.map(str::to_owned),
            operation: why.operation.map(str::to_owned),
            status: HoldStatus::Active,
            cut: Vec::new(),
        });
        Ok(credits)
    }

    fn active_hold(&self, id: &HoldId) -> Result<usize, RuleError> {
        let i = self.holds.iter().position(|h| h.id == *id).ok_or_else(|| RuleError::UnknownHold(id.clone()))?;
        match self.holds[i].status {
            HoldStatus::Active => Ok(i),
            status => Err(RuleError::HoldNotActive { id: id.clone(), status }),
        }
    }

    /// Spend `credits` (at most the amount held) and give the rest back. Credits a close cut while held are
    /// spent first (the customer used them before they would have expired); what is left of them expires.
    pub(crate) fn hold_capture(&mut self, id: &HoldId, credits: i64, why: Why) -> Result<Credits, RuleError> {
        let i = self.active_hold(id)?;
        let held = self.holds[i].amount;
        let credits = Credits::new(credits).ok_or(RuleError::NonPositive(credits))?;
        if credits > held {
            return Err(RuleError::CaptureTooLarge { requested: credits, held });
        }
        self.give_back(i, why);
        self.holds[i].status = HoldStatus::Captured;
        let (user, op) = (self.holds[i].user_id.clone(), self.holds[i].operation.clone());
        let cut: Vec<(LotId, Credits)> = self.holds[i].cut.iter().map(|c| (c.lot.clone(), c.credits)).collect();
        let mut spent_from_cut: Vec<(LotId, Credits)> = Vec::new();
        if !credits.is_zero() {
            // Normally the credits just given back; less if a refund claimed some of them meanwhile.
            let why = Why { user: user.as_deref(), operation: op.as_deref(), ..why };
            spent_from_cut = self.take_preferring(&cut, credits, EntryKind::Debit, why)?;
        }
        self.expire_cut(i, &spent_from_cut, why.at);
        Ok(credits)
    }

    /// Give all held credits back (released by the caller, or expired at the deadline), but those a close cut.
    /// Returns the change of the balance (negative when a refund claimed back the held credits and the cut
    /// expires others of the same lot).
    pub(crate) fn hold_release(&mut self, id: &HoldId, status: HoldStatus, why: Why) -> Result<i64, RuleError> {
        let i = self.active_hold(id)?;
        let n = self.give_back(i, why);
        self.holds[i].status = status;
        let expired = self.expire_cut(i, &[], why.at);
        Ok(n.diff(expired))
    }

    /// Expire what closes cut of hold `i`'s credits, less what `spent` (lot, credits) already used of each lot.
    fn expire_cut(&mut self, i: usize, spent: &[(LotId, Credits)], at: UnixTime) -> Credits {
        let mut used: Vec<(LotId, Credits)> = spent.to_vec();
        let cuts = self.holds[i].cut.clone();
        let mut expired = Credits::ZERO;
        for c in cuts {
            let mut n = c.credits;
            if let Some(u) = used.iter_mut().find(|(l, _)| *l == c.lot) {
                let k = u.1.min(n);
                u.1 -= k;
                n -= k;
            }
            let Some(li) = self.lots.iter().position(|l| l.id == c.lot) else { continue };
            let n = n.min(self.lots[li].remaining);
            self.expire_from_lot(li, n, Why::new(at, &c.cause));
            expired += n;
        }
        expired
    }

    fn give_back(&mut self, hi: usize, why: Why) -> Credits {
        let taken = std::mem::take(&mut self.holds[hi].taken);
        let mut total = Credits::ZERO;
        for (lot_id, n) in &taken {
            let li = match self.lots.iter().position(|l| &l.id == lot_id) {
                Some(li) => li,
                None => {
                    // The store loads every lot an active hold took from; should one be missing all the same,
                    // the credits come back as an adjustment lot rather than being lost.
                    self.lots.push(Lot {
                        id: format!("hold-return:{}:{lot_id}", self.holds[hi].id).into(),
                        source: Source::Adjustment,
                        amount: Credits::ZERO,
                        remaining: Credits::ZERO,
                        granted_at: why.at,
                        expires_at: None,
                        subscription_id: None,
                        cycle_start: None,
                        clawed: Credits::ZERO,
                    });
                    self.lots.len() - 1
                }
            };
            // A refund may have claimed back some of what was held from this lot meanwhile: those credits do
            // not come back.
            let lot = &self.lots[li];
            let returnable = if lot.amount.is_zero() {
                *n
            } else {
                lot.amount.saturating_sub(lot.clawed).saturating_sub(lot.remaining).min(*n)
            };
            self.lots[li].remaining += returnable;
            self.lots[li].amount = self.lots[li].amount.max(self.lots[li].remaining);
            self.balance += returnable;
            total += returnable;
            let id = self.lots[li].id.clone();
            self.push_entry(EntryBuilder::new(why, EntryKind::Release, returnable.get(), Some(&id)));
        }
        self.holds[hi].taken = taken;
        total
    }
}
