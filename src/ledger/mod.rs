//! The credit rules of SPEC §4 as pure code: no SQL, no HTTP, no clock.
//!
//! Why pure: the rules decide where real customers' credits go, so they must be testable exhaustively (unit
//! and property tests) without a database, and the two storage backends must not be able to disagree on them.
//! The store loads an [`Account`] (its open lots, subscriptions and active holds), calls [`Account::apply`] with
//! the time of the call, and writes back what changed plus the [`Entry`]s produced, in one transaction.

mod cycle;
pub mod events;
mod holds;
mod lots;
mod members;
mod plans;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rules;
mod transfer;
mod view;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::domain::{AccountId, Credits, HoldId, LotId};
pub use crate::time::UnixTime;
pub use cycle::{PlanTerms, Snapshot, TermsChange};
pub use transfer::Handover;

/// Where a lot's credits came from. Only `Subscription` credits are cut at cycle close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Signup,
    Subscription,
    Package,
    Adjustment,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Signup => "signup",
            Source::Subscription => "subscription",
            Source::Package => "package",
            Source::Adjustment => "adjustment",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "signup" => Source::Signup,
            "subscription" => Source::Subscription,
            "package" => Source::Package,
            "adjustment" => Source::Adjustment,
            _ => return None,
        })
    }
}

/// One grant of credits. Its `id` is the grant's idempotency key (unique per account), so the same cause can
/// never create two lots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub id: LotId,
    pub source: Source,
    pub amount: Credits,
    pub remaining: Credits,
    pub granted_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    /// For subscription lots: the subscription and the start of the credit cycle it was granted for.
    pub subscription_id: Option<String>,
    pub cycle_start: Option<UnixTime>,
    /// Credits already claimed back by refunds (taken plus shortfall), so a repeated refund takes nothing more.
    pub clawed: Credits,
}

/// The kinds of ledger entries. `amount` of an entry is the change of the spendable balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Grant,
    Debit,
    Expire,
    Clawback,
    /// Refunded credits that were already spent: amount 0, `shortfall` says how many.
    Shortfall,
    Adjust,
    Hold,
    Release,
    /// Credits moved between accounts (a Stripe customer's fallback account to the account it was linked to).
    Transfer,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Debit => "debit",
            EntryKind::Expire => "expire",
            EntryKind::Clawback => "clawback",
            EntryKind::Shortfall => "shortfall",
            EntryKind::Adjust => "adjust",
            EntryKind::Hold => "hold",
            EntryKind::Release => "release",
            EntryKind::Transfer => "transfer",
        }
    }
}

/// One append-only ledger line. `amount` is signed: the change of the balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at: UnixTime,
    pub kind: EntryKind,
    pub amount: i64,
    pub lot_id: Option<LotId>,
    pub balance_after: Credits,
    /// What caused it: `event:evt_..`, `command:..`, `debit:KEY`, `hold:ID`, `cycle:SUB:START`, ...
    pub cause: String,
    pub user_id: Option<String>,
    pub operation: Option<String>,
    pub shortfall: Credits,
}

/// A reservation: credits taken out of lots, to be captured (spent) or released (given back to those lots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub amount: Credits,
    /// Which lots the held credits came from, to give them back there.
    pub taken: Vec<(LotId, Credits)>,
    pub created_at: UnixTime,
    pub deadline: UnixTime,
    pub user_id: Option<String>,
    pub operation: Option<String>,
    pub status: HoldStatus,
    /// Held subscription credits a cycle close cut (rule 12): they count toward the rollover cap while held, so
    /// a release or a partial capture after the close gives back only what survived.
    #[serde(default)]
    pub cut: Vec<HeldCut>,
}

/// Credits of lot `lot`, held by a hold, that the close `cause` cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCut {
    pub lot: LotId,
    pub credits: Credits,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
}

/// A subscription as far as credits care: its plan terms, billing anchor, paid periods and cycle progress.
pub use cycle::Subscription;

/// The part of an account the rules work on. `lots` holds at least every lot with credits left, every lot an
/// active hold took from, and the lot a refund names; `balance` is the sum of `remaining` over lots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub balance: Credits,
    pub signup_granted: bool,
    pub lots: Vec<Lot>,
    pub subscriptions: Vec<Subscription>,
    pub holds: Vec<Hold>,
    /// Registered team members (rule 11); empty: the account is not a team and debits are not checked.
    pub members: Vec<String>,
    /// Entries produced since the account was loaded, in order.
    pub entries: Vec<Entry>,
}

/// What the rules refuse. Each refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("insufficient credits: balance {balance}, needed {needed}")]
    Insufficient { balance: Credits, needed: Credits },
    #[error("amount must be positive, got {0}")]
    NonPositive(i64),
    #[error("unknown hold {0}")]
    UnknownHold(HoldId),
    #[error("hold {id} is {status:?}, not active")]
    HoldNotActive { id: HoldId, status: HoldStatus },
    #[error("capture of {requested} exceeds the {held} held")]
    CaptureTooLarge { requested: Credits, held: Credits },
    #[error("unknown subscription {0}")]
    UnknownSubscription(String),
    #[error("no lot was bought by payment {0}")]
    UnknownPayment(LotId),
    #[error("{0:?} is not a member of this account")]
    NotAMember(String),
    #[error("all {seats} seats of the plan are taken")]
    SeatLimit { seats: u32 },
    #[error("a user id must not be empty")]
    BadUser,
    #[error("invalid refund: refunded {refunded} of {total}")]
    InvalidRefund { refunded: i64, total: i64 },
    #[error("the {plan} plan does not include {operation}")]
    NotEntitled { plan: String, operation: String },
}

/// A precondition on an account, checked by [`Account::apply_checked`].
pub type Check<'a> = &'a (dyn Fn(&Account) -> Result<(), RuleError> + Sync);

/// A change to an account. Every variant carries what makes it idempotent or is idempotent by nature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Apply due work only.
    Tick,
    /// Free signup credits, once per account.
    Signup {
        credits: i64,
    },
    /// A package (or any non-expiring) grant keyed by `lot_id` (the payment).
    Grant {
        lot_id: LotId,
        source: Source,
        credits: i64,
    },
    Debit {
        key: String,
        credits: i64,
        user_id: Option<String>,
        operation: Option<String>,
    },
    /// Manual grant (> 0) or removal (< 0, never below zero), keyed by `key`.
    Adjust {
        key: String,
        credits: i64,
    },
    Refund {
        /// The lot the payment bought (its id is the payment's).
        payment: LotId,
        refunded: i64,
        total: i64,
    },
    HoldCreate {
        id: HoldId,
        credits: i64,
        deadline: UnixTime,
        user_id: Option<String>,
        operation: Option<String>,
    },
    HoldCapture {
        id: HoldId,
        credits: i64,
    },
    HoldRelease {
        id: HoldId,
    },
    /// Record or update a subscription (plan, anchor); upgrades take effect now, downgrades next cycle.
    Subscribe {
        id: String,
        anchor: UnixTime,
        terms: PlanTerms,
    },
    /// What a Stripe subscription object says, as of `version`; an older snapshot than the last one applied
    /// changes nothing (Stripe does not keep order).
    Snapshot(Snapshot),
    /// Record the subscription's status (`past_due` after a failed payment); no credits. With a `version`
    /// (the event's time and kind, like a snapshot's) it changes nothing when a newer fact is known already.
    SubscriptionStatus {
        subscription: String,
        status: String,
        #[serde(default)]
        version: Option<i64>,
    },
    /// Several ops applied together, all or none.
    Batch {
        ops: Vec<Op>,
    },
    /// A billing period of the subscription was paid: grant the allocation of every cycle it covers once due.
    Paid {
        subscription: String,
        start: UnixTime,
        end: UnixTime,
    },
    /// Grant the difference to `terms` for the current cycle (rule 6), switching to `terms` if higher.
    Upgrade {
        subscription: String,
        terms: PlanTerms,
        /// When the upgrade happened; the top-up goes to the cycle containing it.
        at: UnixTime,
    },
    AddMember {
        user_id: String,
        seats: Option<u32>,
    },
    RemoveMember {
        user_id: String,
    },
    /// The subscription ended at `at`: its credits expire at the end of the cycle containing `at`.
    Cancel {
        subscription: String,
        at: UnixTime,
    },
}

/// What an applied op reports back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// Credits moved by the op itself (granted, debited, held, captured, clawed back; negative: removed).
    pub credits: i64,
    pub balance: Credits,
}

impl Op {
    /// This op and, for a batch, every op in it.
    pub fn flatten(&self) -> Vec<&Op> {
        match self {
            Op::Batch { ops } => ops.iter().flat_map(Op::flatten).collect(),
            op => vec![op],
        }
    }
}

impl Account {
    pub fn new(id: impl Into<AccountId>) -> Self {
        Account { id: id.into(), ..Default::default() }
    }

    /// Credits held by active holds.
    pub fn held(&self) -> Credits {
        self.holds.iter().filter(|h| h.status == HoldStatus::Active).map(|h| h.amount).sum()
    }

    /// Apply due work up to `now`, then `op`, then due work again (an op can make work due, such as a late
    /// payment for an ended cycle or credits released into an expired lot). On a refusal nothing changes.
    pub fn apply(&mut self, op: &Op, now: UnixTime, cause: &str) -> Result<Applied, RuleError> {
        self.apply_checked(op, now, cause, &|_| Ok(()))
    }

    /// [`Account::apply`] with a precondition (such as "the plan in force includes this operation") checked on
    /// the account after its due work, so the check and the change see the same state.
    pub fn apply_checked(&mut self, op: &Op, now: UnixTime, cause: &str, check: Check) -> Result<Applied, RuleError> {
        // Due work stands even when the op is refused: it was owed anyway.
        self.apply_due(now);
        check(self)?;
        let snapshot = self.clone();
        match self.apply_op(op, now, cause) {
            Ok(credits) => {
                self.apply_due(now);
                Ok(Applied { credits, balance: self.balance })
            }
            Err(e) => {
                *self = snapshot;
                Err(e)
            }
        }
    }

    fn apply_op(&mut self, op: &Op, now: UnixTime, cause: &str) -> Result<i64, RuleError> {
        let why = Why::new(now, cause);
        match op {
            Op::Tick => Ok(0),
            Op::Signup { credits } => Ok(self.signup(*credits, why)),
            Op::Grant { lot_id, source, credits } => {
                let credits = positive(*credits)?;
                let lot = NewLot { id: lot_id.clone(), source: *source, credits, subscription: None, expires_at: None };
                Ok(self.grant_once(lot, why).get())
            }
            Op::Debit { credits, user_id, operation, .. } => {
                let credits = positive(*credits)?;
                self.check_member(user_id.as_deref())?;
                let why = Why { user: user_id.as_deref(), operation: operation.as_deref(), ..why };
                self.take(credits, EntryKind::Debit, why)?;
                Ok(credits.get())
            }
            Op::Adjust { key, credits } => Ok(self.adjust(key, *credits, why)),
            Op::Refund { payment, refunded, total } => self.refund(payment, *refunded, *total, why).map(Credits::get),
            Op::HoldCreate { id, credits, deadline, user_id, operation } => {
                self.check_member(user_id.as_deref())?;
                let credits = positive(*credits)?;
                let why = Why { user: user_id.as_deref(), operation: operation.as_deref(), ..why };
                self.hold_create(id, credits, *deadline, why).map(Credits::get)
            }
            Op::HoldCapture { id, credits } => self.hold_capture(id, *credits, why).map(Credits::get),
            Op::HoldRelease { id } => self.hold_release(id, HoldStatus::Released, why),
            Op::Subscribe { id, anchor, terms } => {
                let snap = Snapshot {
                    id: id.clone(),
                    start: *anchor,
                    anchor: *anchor,
                    terms: terms.clone(),
                    at: now,
                    ..Snapshot::default()
                };
                Ok(self.subscribe(&snap, why).get())
            }
            Op::Snapshot(snap) => Ok(self.subscribe(snap, why).get()),
            Op::SubscriptionStatus { subscription, status, version } => {
                let si = self.subscriptions.iter().position(|s| &s.id == subscription);
                let si = si.ok_or_else(|| RuleError::UnknownSubscription(subscription.clone()))?;
                let s = &mut self.subscriptions[si];
                match version {
                    Some(v) if *v <= s.version => {}
                    Some(v) => {
                        s.status = status.clone();
                        s.version = *v;
                    }
                    None => s.status = status.clone(),
                }
                Ok(0)
            }
            Op::Batch { ops } => {
                let mut credits = 0;
                for op in ops {
                    credits += self.apply_op(op, now, cause)?;
                }
                Ok(credits)
            }
            Op::Paid { subscription, start, end } => self.paid(subscription, *start, *end, why).map(Credits::get),
            Op::Upgrade { subscription, terms, at } => self.upgrade(subscription, terms, *at, why).map(Credits::get),
            Op::Cancel { subscription, at } => self.cancel(subscription, *at),
            Op::AddMember { user_id, seats } => self.add_member(user_id, *seats),
            Op::RemoveMember { user_id } => self.remove_member(user_id),
        }
    }

    /// Record a change of the balance (already made) as an entry.
    pub(crate) fn push_entry(&mut self, e: EntryBuilder<'_>) {
        self.entries.push(Entry {
            at: e.why.at,
            kind: e.kind,
            amount: e.amount,
            lot_id: e.lot.cloned(),
            balance_after: self.balance,
            cause: e.why.cause.to_owned(),
            user_id: e.why.user.map(str::to_owned),
            operation: e.why.operation.map(str::to_owned),
            shortfall: e.shortfall,
        });
    }

    /// The earliest time at which due work is pending, for the periodic tick.
    pub fn next_due(&self) -> Option<UnixTime> {
        let holds = self.holds.iter().filter(|h| h.status == HoldStatus::Active).map(|h| h.deadline);
        let lots = self.lots.iter().filter(|l| !l.remaining.is_zero()).filter_map(|l| l.expires_at);
        let subs = self.subscriptions.iter().filter_map(|s| s.next_boundary());
        holds.chain(lots).chain(subs).min()
    }

    /// Credits granted so far per cycle start of a subscription (allocation plus upgrade top-ups).
    pub fn granted_in_cycle(&self, sub: &str, cycle: UnixTime) -> Credits {
        self.subscriptions.iter().find(|s| s.id == sub).and_then(|s| s.granted.get(&cycle).copied()).unwrap_or_default()
    }
}

/// Why credits move: when, the cause every entry records, and for spending, who spent them on what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why<'a> {
    pub at: UnixTime,
    pub cause: &'a str,
    pub user: Option<&'a str>,
    pub operation: Option<&'a str>,
}

impl<'a> Why<'a> {
    pub fn new(at: UnixTime, cause: &'a str) -> Self {
        Why { at, cause, user: None, operation: None }
    }
}

/// A lot to grant once.
#[derive(Debug, Clone)]
pub(crate) struct NewLot {
    pub id: LotId,
    pub source: Source,
    pub credits: Credits,
    /// For subscription credits: the subscription and the start of the cycle they are for.
    pub subscription: Option<(String, UnixTime)>,
    pub expires_at: Option<UnixTime>,
}

pub(crate) struct EntryBuilder<'a> {
    pub why: Why<'a>,
    pub kind: EntryKind,
    pub amount: i64,
    pub lot: Option<&'a LotId>,
    pub shortfall: Credits,
}

impl<'a> EntryBuilder<'a> {
    pub fn new(why: Why<'a>, kind: EntryKind, amount: i64, lot: Option<&'a LotId>) -> Self {
        EntryBuilder { why, kind, amount, lot, shortfall: Credits::ZERO }
    }
}

/// A count asked for that must be at least one credit.
fn positive(n: i64) -> Result<Credits, RuleError> {
    if n > 0 { Ok(Credits::new(n).expect("positive")) } else { Err(RuleError::NonPositive(n)) }
}

/// Map of cycle start to credits granted in it; kept in the subscription so that an allocation or upgrade is
/// granted once even after its lot is spent and no longer loaded.
pub type Granted = BTreeMap<UnixTime, Credits>;
