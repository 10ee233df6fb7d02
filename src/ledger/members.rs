//! Teams (rule 11): credits belong to the account and its registered members share them, up to the plan's seats.
//! An account with no registered members is used by one person, whose debits are not checked.

use super::{Account, RuleError};

impl Account {
    /// Register `user` as a member; `seats` is the plan's limit (`None`: unlimited). Registering a member twice
    /// is a no-op.
    pub(crate) fn add_member(&mut self, user: &str, seats: Option<u32>) -> Result<i64, RuleError> {
        if user.trim().is_empty() {
            return Err(RuleError::BadUser);
        }
        if self.members.iter().any(|m| m == user) {
            return Ok(0);
        }
        if let Some(seats) = seats.filter(|s| self.members.len() as u64 >= u64::from(*s)) {
            return Err(RuleError::SeatLimit { seats });
        }
        self.members.push(user.to_owned());
        Ok(0)
    }

    pub(crate) fn remove_member(&mut self, user: &str) -> Result<i64, RuleError> {
        let before = self.members.len();
        self.members.retain(|m| m != user);
        if before == self.members.len() {
            return Err(RuleError::NotAMember(user.into()));
        }
        Ok(0)
    }

    /// Once an account has registered members, only they may spend its credits.
    pub(crate) fn check_member(&self, user: Option<&str>) -> Result<(), RuleError> {
        if self.members.is_empty() {
            return Ok(());
        }
        match user {
            Some(u) if self.members.iter().any(|m| m == u) => Ok(()),
            other => Err(RuleError::NotAMember(other.unwrap_or_default().into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Op, Source};
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};

    fn debit(user: &str) -> Op {
        Op::Debit { key: "k".into(), credits: 1, user_id: Some(user.into()), operation: None }
    }

    #[test]
    fn members_share_credits_up_to_the_seats() {
        let mut a = Account::new("team");
        a.apply(&Op::Grant { lot_id: "p".into(), source: Source::Package, credits: 10 }, at(0), "t").unwrap();
        a.apply(&debit("anyone"), at(1), "t").expect("no members registered: anyone of the account may spend");
        for u in ["ann", "bob", "cy"] {
            a.apply(&Op::AddMember { user_id: u.into(), seats: Some(3) }, at(2), "t").unwrap();
        }
        assert_eq!(
            a.apply(&Op::AddMember { user_id: "dee".into(), seats: Some(3) }, at(3), "t"),
            Err(RuleError::SeatLimit { seats: 3 })
        );
        a.apply(&Op::AddMember { user_id: "ann".into(), seats: Some(3) }, at(3), "t").expect("a repeat is fine");
        a.apply(&debit("bob"), at(4), "t").unwrap();
        assert_eq!(a.apply(&debit("anyone"), at(5), "t"), Err(RuleError::NotAMember("anyone".into())));
        let hold = Op::HoldCreate {
            id: "h".into(),
            credits: 1,
            deadline: at(9),
            user_id: Some("zed".into()),
            operation: None,
        };
        assert_eq!(a.apply(&hold, at(5), "t"), Err(RuleError::NotAMember("zed".into())));
        a.apply(&Op::RemoveMember { user_id: "cy".into() }, at(6), "t").unwrap();
        a.apply(&Op::AddMember { user_id: "dee".into(), seats: Some(3) }, at(7), "t").expect("a freed seat");
        assert_eq!(a.balance, 8, "the team's debits came out of the one account balance");
        assert_eq!(a.apply(&Op::AddMember { user_id: " ".into(), seats: None }, at(8), "t"), Err(RuleError::BadUser));
    }
}
