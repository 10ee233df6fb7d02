//! Moving what a Stripe customer's fallback account holds (the account named by the customer id, used while
//! no event had told which account the customer is) to the account it was then linked to (SPEC §5).
//!
//! Why rows move rather than being copied: a lot is keyed by its payment across all accounts, so a refund
//! arriving later must find it in the account that now holds it; and the fallback account must end empty.

use super::StoreError;
use super::Tx;

/// Move the lots, subscriptions and holds of `from` to `to` (those whose id `to` has already stay: two
/// accounts cannot hold the same lot), and link the customer to `to`.
pub(crate) async fn move_rows(tx: &mut Tx, from: &str, to: &str, customer: &str) -> Result<(), StoreError> {
    for table in ["lots", "subscriptions", "holds"] {
        let sql = format!(
            "UPDATE {table} SET account_id = $2 WHERE account_id = $1 \
             AND id NOT IN (SELECT id FROM {table} WHERE account_id = $2)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false).bind(from).bind(to).execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE stripe_invoices SET account_id = $2 WHERE account_id = $1")
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE stripe_customers SET account_id = $2 WHERE customer_id = $1")
        .bind(customer)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
