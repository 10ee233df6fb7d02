//! What an account looks like to a reader: its plan, current cycle and what will expire at the cycle's end.

use super::{Account, Credits, Source, Subscription, UnixTime};

impl Subscription {
    /// Whether its status gives the plan's entitlements (an unknown status, as before Stripe told one, does).
    pub fn entitles(&self) -> bool {
        matches!(self.status.as_str(), "active" | "trialing" | "past_due" | "")
    }
}

impl Account {
    /// The subscription that gives the account its plan and cycle: the running one with the largest allocation.
    pub fn current_subscription(&self) -> Option<&Subscription> {
        self.subscriptions.iter().filter(|s| !s.finished).max_by_key(|s| (s.ends_at.is_none(), s.terms.monthly))
    }

    /// The plan in force (rule 7): that of the running subscription with the largest allocation among those
    /// Stripe reports `active`, `trialing` or `past_due`; else `free` (also once a subscription was cancelled,
    /// or while it is `incomplete`, `unpaid`, `paused`, ...).
    pub fn plan(&self) -> String {
        self.subscriptions
            .iter()
            .filter(|s| !s.finished && s.ends_at.is_none() && s.entitles())
            .max_by_key(|s| s.terms.monthly)
            .map(|s| s.terms.plan.clone())
            .unwrap_or_else(|| "free".into())
    }

    /// The current credit cycle `[start, end)`, if a subscription runs.
    pub fn cycle(&self) -> Option<(UnixTime, UnixTime)> {
        self.current_subscription().map(|s| s.cycle())
    }

    /// Credits that will expire when the current cycle ends if nothing is spent: lots with an expiry by then,
    /// plus subscription credits above the rollover cap.
    pub fn expiring_at_cycle_end(&self) -> Credits {
        let Some((_, end)) = self.cycle() else {
            return self.lots.iter().filter(|l| l.expires_at.is_some()).map(|l| l.remaining).sum();
        };
        let dated: Credits =
            self.lots.iter().filter(|l| l.expires_at.is_some_and(|e| e <= end)).map(|l| l.remaining).sum();
        let over_cap: Credits = self
            .subscriptions
            .iter()
            .filter(|s| !s.finished && s.ends_at.is_none_or(|e| e > end))
            .map(|s| {
                let credits: Credits = self
                    .lots
                    .iter()
                    .filter(|l| l.source == Source::Subscription && l.subscription_id.as_deref() == Some(&s.id))
                    .filter(|l| l.expires_at.is_none_or(|e| e > end))
                    .map(|l| l.remaining)
                    .sum();
                let cap = s.next_terms.as_ref().unwrap_or(&s.terms).cap;
                credits.saturating_sub(cap)
            })
            .sum();
        dated + over_cap
    }
}
