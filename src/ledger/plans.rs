//! Plan changes (rule 6): what a subscription's terms were at any time, learned from snapshots and paid
//! upgrade invoices in whatever order they arrive. An upgrade takes effect when it happened, anything else at
//! the next cycle; a cycle is allocated and closed with the terms in force at its start, and cycles allocated
//! on older terms before the news arrived are topped up.

use super::cycle::{Snapshot, Subscription, TermsChange, boundary_after};
use super::{Account, Credits, LotId, NewLot, PlanTerms, RuleError, Source, UnixTime, Why};

impl Subscription {
    /// The terms in force at `t`.
    pub fn terms_at(&self, t: UnixTime) -> &PlanTerms {
        let h = self.history.iter().rev().find(|h| h.from <= t).or(self.history.first());
        h.map(|h| &h.terms).unwrap_or(&self.terms)
    }

    /// `terms` for the current cycle, `next_terms` when the next one changes them.
    pub(crate) fn sync_terms(&mut self) {
        let end = boundary_after(self.anchor, self.cursor);
        self.terms = self.terms_at(end - 1).clone();
        let next = self.terms_at(end).clone();
        self.next_terms = (next != self.terms).then_some(next);
    }

    /// Learn that at `said_at` the plan is `terms`. Returns the earliest time whose terms changed, if any.
    fn learn(&mut self, terms: &PlanTerms, said_at: UnixTime) -> Option<UnixTime> {
        if self.statements.is_empty() {
            self.statements.push((UnixTime::MIN, self.terms.clone()));
        }
        if self.statements.iter().any(|(t, p)| *t == said_at && p == terms) {
            return None;
        }
        self.statements.push((said_at, terms.clone()));
        self.statements.sort_by(|a, b| (a.0, a.1.monthly, &a.1.plan).cmp(&(b.0, b.1.monthly, &b.1.plan)));
        let old = std::mem::take(&mut self.history);
        self.rebuild_history();
        self.sync_terms();
        let points = old.iter().chain(self.history.iter()).map(|h| h.from);
        let old_terms = |t: UnixTime| old.iter().rev().find(|h| h.from <= t).or(old.first()).map(|h| h.terms.clone());
        points.filter(|t| old_terms(*t).as_ref() != Some(self.terms_at(*t))).min()
    }

    /// Replay the statements in time order: an upgrade takes effect when said, anything else at the next cycle;
    /// a statement replaces changes that earlier ones scheduled for after it.
    fn rebuild_history(&mut self) {
        let start = self.start.unwrap_or(self.anchor);
        let mut statements = self.statements.iter();
        let Some((first_at, first)) = statements.next() else {
            self.history.clear();
            return;
        };
        let mut history = vec![TermsChange { from: start, terms: first.clone(), said_at: *first_at }];
        for (said_at, terms) in statements {
            // Changes scheduled for after this statement are superseded by it (the first entry stays).
            let keep = history.iter().position(|h| h.from > *said_at).unwrap_or(history.len()).max(1);
            history.truncate(keep);
            let current = &history.iter().rev().find(|h| h.from <= *said_at).unwrap_or(&history[0]).terms;
            if terms == current {
                continue;
            }
            let from = if terms.monthly > current.monthly { *said_at } else { boundary_after(self.anchor, *said_at) };
            if from <= start {
                history.truncate(1);
                history[0].terms = terms.clone();
                continue;
            }
            history.retain(|h| h.from != from);
            history.push(TermsChange { from, terms: terms.clone(), said_at: *said_at });
        }
        self.history = history;
    }
}

impl Account {
    /// Record a subscription, or what a later (or earlier) snapshot says of it.
    pub(crate) fn subscribe(&mut self, snap: &Snapshot, why: Why) -> Credits {
        let Some(si) = self.subscriptions.iter().position(|s| s.id == snap.id) else {
            let mut s = Subscription::new(snap);
            s.sync_terms();
            self.subscriptions.push(s);
            return Credits::ZERO;
        };
        let s = &mut self.subscriptions[si];
        if snap.version >= s.version {
            s.version = snap.version;
            s.status = snap.status.clone();
            s.interval = snap.interval.clone();
            s.cancel_at_period_end = snap.cancel_at_period_end;
            if s.anchor != snap.anchor && !s.finished {
                // Re-anchored (Stripe's billing_cycle_anchor reset): cycles after the current one follow it.
                s.anchor = snap.anchor;
            }
        }
        match s.learn(&snap.terms, snap.at) {
            // Cycles that started after the change were allocated on the old terms: top them up. The cycle in
            // which an upgrade happened gets its difference from the paid upgrade invoice.
            Some(from) => self.top_up_from(si, from, why),
            None => Credits::ZERO,
        }
    }

    /// Rule 6: the paid upgrade at `at` tops up the cycle containing it (and any later one already allocated).
    pub(crate) fn upgrade(
        &mut self,
        sub: &str,
        terms: &PlanTerms,
        at: UnixTime,
        why: Why,
    ) -> Result<Credits, RuleError> {
        let si = self.sub_index(sub)?;
        let s = &mut self.subscriptions[si];
        s.learn(terms, at);
        let c = s.cycle_start_at(at.min(s.cursor));
        let target = s.terms_at(at).clone();
        let raised = s.paid_upgrades.entry(c).or_default();
        *raised = (*raised).max(target.monthly);
        let next = boundary_after(s.anchor, c);
        Ok(self.top_up(si, c, &target, why) + self.top_up_from(si, next, why))
    }

    fn top_up_from(&mut self, si: usize, from: UnixTime, why: Why) -> Credits {
        let s = &self.subscriptions[si];
        let cycles: Vec<(UnixTime, PlanTerms)> =
            s.granted.keys().filter(|c| **c >= from).map(|c| (*c, s.terms_at(*c).clone())).collect();
        cycles.into_iter().map(|(c, t)| self.top_up(si, c, &t, why)).sum()
    }

    /// Grant cycle `c` the difference up to `target`'s monthly credits; close again what ended since.
    fn top_up(&mut self, si: usize, c: UnixTime, target: &PlanTerms, why: Why) -> Credits {
        let s = &self.subscriptions[si];
        let Some(&so_far) = s.granted.get(&c) else { return Credits::ZERO };
        let diff = target.monthly.saturating_sub(so_far);
        if diff.is_zero() || s.finished {
            return Credits::ZERO;
        }
        let (id, ends_at, cursor) = (s.id.clone(), s.ends_at, s.cursor);
        // Keyed by subscription, cycle and the allocation it tops up to: once for each.
        let lot = NewLot {
            id: LotId::new(format!("upgrade:{id}:{}:{}:{}", c.secs(), target.plan, target.monthly)),
            source: Source::Subscription,
            credits: diff,
            subscription: Some((id, c)),
            expires_at: ends_at,
        };
        let granted = self.grant_once(lot, why);
        if !granted.is_zero() {
            self.subscriptions[si].granted.insert(c, so_far + granted);
            if c < cursor {
                self.reclose_after(si, c, why);
            }
        }
        granted
    }
}
