//! Subscriptions and their monthly credit cycles (rules 3-7), and the due-work loop that applies every cycle
//! close, allocation, lot expiry and hold deadline in time order up to "now".
//!
//! Why one loop in time order: a read must reflect all work due by its time, even if nothing ran for months,
//! and the result must not depend on how the work was split across calls.

use super::{Account, Credits, Granted, HeldCut, HoldStatus, LotId, NewLot, RuleError, Source, UnixTime, Why};
use crate::time::add_months;
use serde::{Deserialize, Serialize};

/// What a plan gives each month and how much of it may roll over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlanTerms {
    pub plan: String,
    pub monthly: Credits,
    pub cap: Credits,
}

/// Terms in force from `from`, as learned from a statement made at `said_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermsChange {
    pub from: UnixTime,
    pub terms: PlanTerms,
    pub said_at: UnixTime,
}

/// A subscription as Stripe describes it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub id: String,
    /// When credits start: the start of a trial, or the anchor.
    pub start: UnixTime,
    pub anchor: UnixTime,
    pub terms: PlanTerms,
    pub status: String,
    pub interval: String,
    pub cancel_at_period_end: bool,
    /// Orders snapshots: the event's creation time (and kind); older snapshots do not override newer ones.
    pub version: i64,
    /// When the snapshot was taken (a plan change in it took effect then).
    #[serde(default)]
    pub at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// Start of the first credit cycle when it precedes the anchor (a trial); else the anchor.
    #[serde(default)]
    pub start: Option<UnixTime>,
    /// Billing anchor: cycles start here and every calendar month after it, day clamped to the month's end.
    pub anchor: UnixTime,
    /// Terms in force for the current cycle.
    pub terms: PlanTerms,
    /// A downgrade waiting for the next cycle.
    pub next_terms: Option<PlanTerms>,
    /// Plan terms by the time they took effect (rule 6), so any cycle is allocated and closed with the terms in
    /// force at its start, however late the news of a plan change arrives.
    #[serde(default)]
    pub history: Vec<TermsChange>,
    /// What each snapshot or upgrade said the plan was, and when: `history` is rebuilt from these in time
    /// order, so the order they arrive in does not matter.
    #[serde(default)]
    pub statements: Vec<(UnixTime, PlanTerms)>,
    /// Paid upgrades by the cycle they happened in, with the monthly credits they raise that cycle to: an
    /// allocation granted after the upgrade was paid includes the difference.
    #[serde(default)]
    pub paid_upgrades: Granted,
    /// Start of the current credit cycle: every boundary up to it has been closed.
    pub cursor: UnixTime,
    /// Paid billing periods `[start, end)`.
    pub paid: Vec<(UnixTime, UnixTime)>,
    pub granted: Granted,
    /// When its credits end (end of the cycle in which it was cancelled).
    pub ends_at: Option<UnixTime>,
    pub finished: bool,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub interval: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub version: i64,
}

/// The index `k` of the cycle containing `t`: `add_months(anchor, k) <= t < add_months(anchor, k + 1)`.
/// Cycles are always computed from the anchor, so clamped days do not drift (Jan 31, Feb 28, Mar 31).
fn cycle_index(anchor: UnixTime, t: UnixTime) -> i64 {
    if t <= anchor {
        return 0;
    }
    // Estimate from the average month length, then correct by stepping.
    let mut k = (t - anchor) / 2_629_746;
    while k > 0 && add_months(anchor, k) > t {
        k -= 1;
    }
    while add_months(anchor, k + 1) <= t {
        k += 1;
    }
    k
}

/// The start of the cycle containing `t` (the anchor itself for any `t` before it).
pub fn cycle_start_at(anchor: UnixTime, t: UnixTime) -> UnixTime {
    add_months(anchor, cycle_index(anchor, t))
}

/// The first cycle boundary strictly after `t`.
pub fn boundary_after(anchor: UnixTime, t: UnixTime) -> UnixTime {
    if t < anchor {
        return anchor;
    }
    add_months(anchor, cycle_index(anchor, t) + 1)
}

impl Subscription {
    pub fn new(snap: &Snapshot) -> Self {
        let start = snap.start.min(snap.anchor);
        Subscription {
            id: snap.id.clone(),
            start: (start < snap.anchor).then_some(start),
            anchor: snap.anchor,
            terms: snap.terms.clone(),
            next_terms: None,
            history: vec![TermsChange { from: start, terms: snap.terms.clone(), said_at: snap.at }],
            statements: vec![(snap.at, snap.terms.clone())],
            paid_upgrades: Granted::new(),
            cursor: start,
            paid: Vec::new(),
            granted: Granted::new(),
            ends_at: None,
            finished: false,
            status: snap.status.clone(),
            interval: snap.interval.clone(),
            cancel_at_period_end: snap.cancel_at_period_end,
            version: snap.version,
        }
    }

    /// The start of the cycle containing `t`: before the anchor, the trial cycle that precedes it.
    pub fn cycle_start_at(&self, t: UnixTime) -> UnixTime {
        if t < self.anchor { self.start.unwrap_or(self.anchor) } else { cycle_start_at(self.anchor, t) }
    }

    /// The next boundary this subscription still has to process.
    pub fn next_boundary(&self) -> Option<UnixTime> {
        (!self.finished).then(|| boundary_after(self.anchor, self.cursor))
    }

    /// The current cycle `[start, end)`.
    pub fn cycle(&self) -> (UnixTime, UnixTime) {
        (self.cursor, boundary_after(self.anchor, self.cursor))
    }

    fn is_paid(&self, cycle: UnixTime) -> bool {
        self.paid.iter().any(|&(s, e)| s <= cycle && cycle < e)
    }
}

impl Account {
    pub(crate) fn sub_index(&self, id: &str) -> Result<usize, RuleError> {
        self.subscriptions.iter().position(|s| s.id == id).ok_or_else(|| RuleError::UnknownSubscription(id.into()))
    }

    /// Apply again, in order, every cycle close after cycle `c` up to the current cycle.
    pub(crate) fn reclose_after(&mut self, si: usize, c: UnixTime, why: Why) {
        let (anchor, cursor) = (self.subscriptions[si].anchor, self.subscriptions[si].cursor);
        let mut b = boundary_after(anchor, c);
        while b <= cursor {
            self.cut_to_cap(si, b, why);
            b = boundary_after(anchor, b);
        }
    }

    /// A billing period was paid (rule 5). Cycles it covers that were already reached get their allocation
    /// now; a cycle that has already ended is then closed again, so a late payment ends as if on time.
    pub(crate) fn paid(&mut self, sub: &str, start: UnixTime, end: UnixTime, why: Why) -> Result<Credits, RuleError> {
        let si = self.sub_index(sub)?;
        if end <= start {
            return Err(RuleError::NonPositive(end - start));
        }
        let s = &mut self.subscriptions[si];
        if !s.paid.contains(&(start, end)) {
            s.paid.push((start, end));
        }
        let (anchor, cursor) = (s.anchor, s.cursor);
        let mut granted = Credits::ZERO;
        let mut c = self.subscriptions[si].cycle_start_at(start);
        while c <= cursor {
            if c >= start && c < end {
                let g = self.allocate(si, c, why);
                if !g.is_zero() && c < cursor {
                    // That cycle has ended: apply its close and every later one again, in order.
                    self.reclose_after(si, c, why);
                }
                granted += g;
            }
            c = boundary_after(anchor, c);
        }
        Ok(granted)
    }

    /// Grant the allocation of cycle `c` if it is paid, not yet granted and the subscription still runs then.
    pub(crate) fn allocate(&mut self, si: usize, c: UnixTime, why: Why) -> Credits {
        let s = &self.subscriptions[si];
        if s.granted.contains_key(&c) || !s.is_paid(c) || s.ends_at.is_some_and(|e| e <= c) {
            return Credits::ZERO;
        }
        let monthly = s.terms_at(c).monthly.max(s.paid_upgrades.get(&c).copied().unwrap_or_default());
        let (id, ends_at) = (s.id.clone(), s.ends_at);
        self.subscriptions[si].granted.insert(c, monthly);
        let lot = NewLot {
            id: LotId::new(format!("alloc:{id}:{}", c.secs())),
            source: Source::Subscription,
            credits: monthly,
            subscription: Some((id, c)),
            expires_at: ends_at,
        };
        self.grant_once(lot, why)
    }

    /// Rule 7: the subscription ended at `at`; its credits stay until the end of that cycle, then expire.
    pub(crate) fn cancel(&mut self, sub: &str, at: UnixTime) -> Result<i64, RuleError> {
        let si = self.sub_index(sub)?;
        let s = &mut self.subscriptions[si];
        let ends = if at <= s.anchor {
            s.anchor
        } else if cycle_start_at(s.anchor, at) == at {
            at
        } else {
            boundary_after(s.anchor, at)
        };
        let ends = s.ends_at.map_or(ends, |e| e.min(ends));
        s.ends_at = Some(ends);
        if s.cursor >= ends {
            s.finished = true;
        }
        let id = s.id.clone();
        for l in self.lots.iter_mut().filter(|l| l.subscription_id.as_deref() == Some(&id)) {
            l.expires_at = Some(l.expires_at.map_or(ends, |e| e.min(ends)));
        }
        Ok(0)
    }

    /// Cut the subscription's credits granted before boundary `b` to the rollover cap (rule 4). Credits held by
    /// active holds count too (rule 12); the excess expires from unheld credits first, oldest lots first, and
    /// what must still go is recorded in the holds, to expire when they give their credits back.
    pub(crate) fn cut_to_cap(&mut self, si: usize, b: UnixTime, why: Why) {
        let s = &self.subscriptions[si];
        let (id, cap) = (s.id.clone(), s.terms_at(b).cap);
        let cut_lot =
            |l: &super::Lot| l.subscription_id.as_deref() == Some(&id) && l.cycle_start.is_some_and(|c| c < b);
        let mut idx: Vec<usize> =
            (0..self.lots.len()).filter(|&i| !self.lots[i].remaining.is_zero() && cut_lot(&self.lots[i])).collect();
        let unheld: Credits = idx.iter().map(|&i| self.lots[i].remaining).sum();
        // Held credits of those lots, by hold and lot, less what earlier closes cut of them already.
        // (hold, lot, credits still held from it, the lot's age for the order of the cut)
        type Held = (usize, LotId, Credits, (Option<UnixTime>, UnixTime, LotId));
        let mut held: Vec<Held> = Vec::new();
        for (hi, h) in self.holds.iter().enumerate().filter(|(_, h)| h.status == HoldStatus::Active) {
            for (lot, n) in &h.taken {
                let Some(l) = self.lots.iter().find(|l| &l.id == lot && cut_lot(l)) else { continue };
                let already: Credits = h.cut.iter().filter(|c| &c.lot == lot).map(|c| c.credits).sum();
                let still = n.saturating_sub(already);
                if !still.is_zero() {
                    held.push((hi, lot.clone(), still, (l.cycle_start, l.granted_at, l.id.clone())));
                }
            }
        }
        let mut excess = (unheld + held.iter().map(|h| h.2).sum::<Credits>()).saturating_sub(cap);
        idx.sort_by_key(|&i| (self.lots[i].cycle_start, self.lots[i].granted_at, self.lots[i].id.clone()));
        for i in idx {
            if excess.is_zero() {
                break;
            }
            let n = excess.min(self.lots[i].remaining);
            self.expire_from_lot(i, n, why);
            excess -= n;
        }
        held.sort_by(|a, b| a.3.cmp(&b.3));
        for (hi, lot, n, _) in held {
            if excess.is_zero() {
                break;
            }
            let k = excess.min(n);
            self.holds[hi].cut.push(HeldCut { lot, credits: k, cause: why.cause.to_owned() });
            excess -= k;
        }
    }

    /// Close the cycle ending at `b` and open the next one (rule 4).
    fn cross_boundary(&mut self, si: usize, b: UnixTime) {
        let cause = format!("cycle:{}:{}", self.subscriptions[si].id, b.secs());
        let why = Why::new(b, &cause);
        self.cut_to_cap(si, b, why);
        let s = &mut self.subscriptions[si];
        s.cursor = b;
        if s.ends_at.is_some_and(|e| e <= b) {
            s.finished = true;
            return;
        }
        s.sync_terms();
        self.allocate(si, b, why);
    }

    /// Apply, in time order, everything due by `now`: hold deadlines, lot expiries, cycle boundaries.
    pub(crate) fn apply_due(&mut self, now: UnixTime) {
        loop {
            let hold = self
                .holds
                .iter()
                .enumerate()
                .filter(|(_, h)| h.status == HoldStatus::Active)
                .map(|(i, h)| (h.deadline, 0, i))
                .min();
            let lot = self
                .lots
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.remaining.is_zero())
                .filter_map(|(i, l)| l.expires_at.map(|e| (e, 1, i)))
                .min();
            let sub =
                self.subscriptions.iter().enumerate().filter_map(|(i, s)| s.next_boundary().map(|b| (b, 2, i))).min();
            let Some((at, class, i)) = [hold, lot, sub].into_iter().flatten().filter(|&(t, _, _)| t <= now).min()
            else {
                return;
            };
            match class {
                0 => {
                    let id = self.holds[i].id.clone();
                    let cause = format!("hold:{id}:deadline");
                    self.hold_release(&id, HoldStatus::Expired, Why::new(at, &cause)).expect("active hold");
                }
                1 => self.expire_lot(i, Why::new(at, "expiry")),
                _ => self.cross_boundary(i, at),
            }
        }
    }
}
