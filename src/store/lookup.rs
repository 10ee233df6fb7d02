//! Small reads the operator console needs beside the API's: finding an account by its Stripe customer, and the
//! balance an account had before a period (where its balance chart starts), and usage by day and operation.

use super::{Store, StoreError};
use crate::time::UnixTime;
use sqlx::Row;

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

    /// Credits debited per UTC day and operation in `[from, to]`: (start of the day, operation, credits).
    pub async fn usage_by_day(
        &self,
        account: &str,
        from: UnixTime,
        to: UnixTime,
    ) -> Result<Vec<(UnixTime, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT (at / 86400) * 86400 AS day, COALESCE(operation, 'other') AS op, \
             CAST(-SUM(amount) AS BIGINT) AS credits FROM entries \
             WHERE account_id = $1 AND kind = 'debit' AND at >= $2 AND at <= $3 GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(account)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("day")?, r.try_get("op")?, r.try_get("credits")?))).collect()
    }
}
