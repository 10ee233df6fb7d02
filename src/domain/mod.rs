//! The values the credit rules are written in: credits, and the ids of accounts, lots and holds, each its own
//! type (instants are [`crate::time::UnixTime`]).
//!
//! Why: credits, cents and seconds were all `i64` and every id a `String`, so a call that swapped two of them
//! compiled and moved the wrong number of credits. The types keep the wire and the database as they were
//! (an integer, a string), and [`Credits`] cannot go below zero: a rule that would make a balance negative
//! stops (the batch's job fails and is taken back) instead of storing it.

mod credits;
mod ids;

pub use credits::{Credits, NegativeCredits};
pub use ids::{AccountId, HoldId, LotId};

/// Short constructors for the unit tests: `at(secs)`, `cr(credits)`.
#[cfg(test)]
pub(crate) mod test_values {
    use super::Credits;
    use crate::time::UnixTime;

    pub fn at(secs: i64) -> UnixTime {
        UnixTime::from_secs(secs)
    }

    pub fn cr(n: i64) -> Credits {
        Credits::new(n).unwrap()
    }
}
