//! A count of credits: never negative, and arithmetic that cannot wrap.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// A number of credits (a balance, what a lot has left, what a hold took), never below zero.
///
/// `+` and `-` panic where the result would overflow or go below zero: the rules check a balance before they
/// take from it, so either is a bug, and a panic in a write job fails that job alone (its changes are taken
/// back). Signed changes (a ledger entry's amount, an adjustment that removes) stay `i64`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Credits(i64);

/// A negative number where a count of credits was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("credits cannot be negative, got {0}")]
pub struct NegativeCredits(pub i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    /// `n` credits, or `None` when `n` is negative.
    pub const fn new(n: i64) -> Option<Credits> {
        if n >= 0 { Some(Credits(n)) } else { None }
    }

    /// The count as a plain number (for the database, JSON and signed arithmetic).
    pub const fn get(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    /// `self - other`, or `None` when that would be negative.
    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        Credits::new(self.0 - other.0)
    }

    /// `self - other`, or zero when that would be negative.
    pub fn saturating_sub(self, other: Credits) -> Credits {
        Credits((self.0 - other.0).max(0))
    }

    /// `self - other` as a signed number (what a change from `other` to `self` moved).
    pub fn diff(self, other: Credits) -> i64 {
        self.0 - other.0
    }
}

impl TryFrom<i64> for Credits {
    type Error = NegativeCredits;
    fn try_from(n: i64) -> Result<Self, Self::Error> {
        Credits::new(n).ok_or(NegativeCredits(n))
    }
}

impl From<Credits> for i64 {
    fn from(c: Credits) -> i64 {
        c.0
    }
}

impl From<u32> for Credits {
    fn from(n: u32) -> Credits {
        Credits(n.into())
    }
}

impl Add for Credits {
    type Output = Credits;
    fn add(self, other: Credits) -> Credits {
        self.checked_add(other).expect("credits overflow")
    }
}

impl AddAssign for Credits {
    fn add_assign(&mut self, other: Credits) {
        *self = *self + other;
    }
}

impl Sub for Credits {
    type Output = Credits;
    fn sub(self, other: Credits) -> Credits {
        self.checked_sub(other).unwrap_or_else(|| panic!("{self} - {other} credits would be negative"))
    }
}

impl SubAssign for Credits {
    fn sub_assign(&mut self, other: Credits) {
        *self = *self - other;
    }
}

impl Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        iter.fold(Credits::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Credits> for Credits {
    fn sum<I: Iterator<Item = &'a Credits>>(iter: I) -> Credits {
        iter.copied().sum()
    }
}

/// A count compares with a plain number (`balance == 100`, `balance < threshold`).
impl PartialEq<i64> for Credits {
    fn eq(&self, other: &i64) -> bool {
        self.0 == *other
    }
}

impl PartialOrd<i64> for Credits {
    fn partial_cmp(&self, other: &i64) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: i64) -> Credits {
        Credits::new(n).unwrap()
    }

    #[test]
    fn never_negative() {
        assert_eq!(Credits::new(-1), None);
        assert_eq!(Credits::try_from(-5i64), Err(NegativeCredits(-5)));
        assert_eq!(c(3).checked_sub(c(4)), None);
        assert_eq!(c(3).saturating_sub(c(4)), Credits::ZERO);
        assert_eq!(c(7) - c(3), c(4));
        assert_eq!(c(3).diff(c(4)), -1);
        assert!(std::panic::catch_unwind(|| c(3) - c(4)).is_err(), "a subtraction below zero stops");
    }

    #[test]
    fn no_overflow() {
        assert_eq!(c(i64::MAX).checked_add(c(1)), None);
        assert!(std::panic::catch_unwind(|| c(i64::MAX) + c(1)).is_err());
        assert_eq!([c(1), c(2), c(3)].iter().sum::<Credits>(), c(6));
    }

    #[test]
    fn the_wire_is_a_number() {
        assert_eq!(serde_json::to_string(&c(42)).unwrap(), "42");
        assert_eq!(serde_json::from_str::<Credits>("42").unwrap(), c(42));
        let e = serde_json::from_str::<Credits>("-1").unwrap_err().to_string();
        assert!(e.contains("credits cannot be negative, got -1"), "{e}");
        assert_eq!(format!("{} {:?}", c(5), c(5)), "5 5");
    }
}
