//! Small reads the operator console needs beside the API's: finding an account by its Stripe customer, and the
//! balance an account had before a period (where its balance chart starts).

use super::{Store, StoreError};
use crate::time::UnixTime;

impl Store {
    /// The account a Stripe customer is linked to.
    pub async fn account_of_customer(&self, customer: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT account_id FROM stripe_customers WHERE customer_id = $1");
        Ok(q.bind(customer).fetch_optional(&self.pool).await?)
    }

    pub async fn account_exists(&self, account: &str) -> Result<bool, StoreError> {
        let q = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM accounts WHERE id = $1");
        Ok(q.bind(account).fetch_one(&self.pool).await? > 0)
    }

    /// The balance after the last entry before `t` (0 when there is none).
    pub async fn entries_before(&self, account: &str, t: UnixTime) -> Result<i64, StoreError> {
        let q = sqlx::query_scalar(
            "SELECT balance_after FROM entries WHERE account_id = $1 AND at < $2 ORDER BY id DESC LIMIT 1",
        );
        Ok(q.bind(account).bind(t).fetch_optional(&self.pool).await?.unwrap_or(0))
    }
}
