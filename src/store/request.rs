//! What a change to an account is ([`Request`]) and what it came to ([`Outcome`]).

use crate::ledger::{Account, Applied, Op, RuleError};
use crate::time::UnixTime;

/// A precondition checked on the account brought up to date, before the change (an entitlement).
pub type Guard = std::sync::Arc<dyn Fn(&Account) -> Result<(), RuleError> + Send + Sync>;

/// A change to apply to one account.
#[derive(Debug, Clone)]
pub struct Request {
    pub account: String,
    pub op: Op,
    /// Recorded on every entry the change makes: `event:..`, `command:..`, `debit:..`.
    pub cause: String,
    /// The idempotency key of the request, if it has one.
    pub key: Option<IdempotencyKey>,
    pub on_missing: OnMissing,
    pub now: UnixTime,
}

/// An idempotency key and a fingerprint of the request it belongs to: a repeat with the same fingerprint gets
/// the first answer, with another one a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// What to do when the account does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    /// Refuse with `unknown_account`.
    Refuse,
    /// Create it (`account.created`): it may get its signup credits.
    Create,
    /// Create it because a Stripe event names it: it never gets signup credits (rule 10).
    CreateFromStripe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(Applied),
    /// The key was seen before with the same request: the first answer.
    Duplicate(Applied),
}

impl Outcome {
    pub fn applied(&self) -> &Applied {
        match self {
            Outcome::Applied(a) | Outcome::Duplicate(a) => a,
        }
    }
}
