//! Usage reports: credits debited per operation, user or day over a period, from the ledger entries.

use super::{Store, StoreError};
use crate::time::{UnixTime, format_rfc3339};
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Operation,
    User,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub key: String,
    pub credits: i64,
    /// Debits made (one debit may take from several lots).
    pub count: i64,
}

impl Store {
    /// Debits with `from <= at <= to` (both inclusive, at second resolution: a debit of this second is in).
    pub async fn usage(
        &self,
        account: &str,
        from: UnixTime,
        to: UnixTime,
        group: GroupBy,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let key = match group {
            GroupBy::Operation => "COALESCE(operation, '')",
            GroupBy::User => "COALESCE(user_id, '')",
            GroupBy::Day => "(at - (((at % 86400) + 86400) % 86400))",
        };
        let sql = format!(
            "SELECT CAST({key} AS TEXT) AS key, CAST(-SUM(amount) AS BIGINT) AS credits, \
             CAST(COUNT(DISTINCT cause) AS BIGINT) AS n FROM entries \
             WHERE account_id = $1 AND kind = 'debit' AND at >= $2 AND at <= $3 GROUP BY 1 ORDER BY 1"
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).bind(from).bind(to).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.try_get("key")?;
                let key = match group {
                    GroupBy::Day => raw
                        .parse::<i64>()
                        .map(|d| format_rfc3339(UnixTime::from_secs(d))[..10].to_owned())
                        .unwrap_or(raw),
                    _ => raw,
                };
                Ok(UsageRow { key, credits: r.try_get("credits")?, count: r.try_get("n")? })
            })
            .collect()
    }
}
