//! PostgreSQL's form of the batch statements: lists travel as array parameters (`$1::text[]`, passed as array
//! literals), so each statement has one text whatever the batch size, is prepared once per connection and
//! planned once, and a whole batch is written by one statement.
//!
//! Why: on two cores the database's parsing and planning of a new statement text per batch cost more than the
//! writes themselves. SQLite, in process, keeps the portable forms (`IN (...)`, `VALUES (...)`).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// The type of a column passed as an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Text,
    Int,
}

/// An array literal of text values (`NULL` for `None`), every element quoted.
pub fn text_array<'a>(items: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("{");
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            None => out.push_str("NULL"),
            Some(v) => {
                out.push('"');
                for c in v.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// An array literal of integers (`NULL` for `None`).
pub fn int_array(items: impl IntoIterator<Item = Option<i64>>) -> String {
    let mut out = String::from("{");
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            None => out.push_str("NULL"),
            Some(v) => {
                let _ = write!(out, "{v}");
            }
        }
    }
    out.push('}');
    out
}

/// Lock and read account rows (`$1` the ids, in the order of their bytes, as the batch sorts them and writes
/// them, whatever the database's collation), and read the stored answers of idempotency keys
/// (`$2` accounts, `$3` keys): kind 0 an account, 1 a key.
pub const LOCK: &str = "WITH a AS MATERIALIZED (SELECT id, balance, signup_granted, next_due_at, created_at, \
     updated_at, version FROM accounts WHERE id = ANY($1::text[]) ORDER BY id COLLATE \"C\" FOR UPDATE) \
     SELECT 0 AS k, id, balance, signup_granted, next_due_at, created_at, updated_at, version, \
     NULL::text AS account_id, NULL::text AS key, NULL::text AS request, NULL::text AS response FROM a \
     UNION ALL SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, e.account_id, e.key, e.request, e.response \
     FROM unnest($2::text[], $3::text[]) AS w(a, k) CROSS JOIN LATERAL \
     (SELECT account_id, key, request, response FROM effects WHERE account_id = w.a AND key = w.k LIMIT 1) e";

/// [`LOCK`] without the lock, for reads.
pub const HEADS: &str = "WITH a AS MATERIALIZED (SELECT id, balance, signup_granted, next_due_at, created_at, \
     updated_at, version FROM accounts WHERE id = ANY($1::text[]) ORDER BY id COLLATE \"C\") \
     SELECT 0 AS k, id, balance, signup_granted, next_due_at, created_at, updated_at, version, \
     NULL::text AS account_id, NULL::text AS key, NULL::text AS request, NULL::text AS response FROM a \
     UNION ALL SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, e.account_id, e.key, e.request, e.response \
     FROM unnest($2::text[], $3::text[]) AS w(a, k) CROSS JOIN LATERAL \
     (SELECT account_id, key, request, response FROM effects WHERE account_id = w.a AND key = w.k LIMIT 1) e";

/// Everything else of the accounts `$1` (kinds: 0 lot, 1 subscription, 2 active hold, 3 member).
pub const LOAD: &str = "SELECT 0 AS k, account_id, id, source, amount, remaining, granted_at, expires_at, \
     subscription_id, cycle_start, clawed, NULL::text AS state FROM lots \
     WHERE account_id = ANY($1::text[]) AND remaining > 0 \
     UNION ALL SELECT 1, account_id, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, state FROM subscriptions \
     WHERE account_id = ANY($1::text[]) \
     UNION ALL SELECT 2, account_id, id, NULL, NULL, NULL, created_at, NULL, NULL, NULL, NULL, state FROM holds \
     WHERE status = 'active' AND account_id = ANY($1::text[]) \
     UNION ALL SELECT 3, account_id, user_id, NULL, NULL, NULL, added_at, NULL, NULL, NULL, NULL, NULL FROM members \
     WHERE account_id = ANY($1::text[]) \
     ORDER BY 1, 7, 3";

/// A table written by the batch statement: its insert (columns listed), column types, and what follows.
pub struct Table {
    pub insert: &'static str,
    pub types: &'static [Ty],
    pub tail: &'static str,
    /// Rows must get their serial ids in the order given (entries, outbox).
    pub ordered: bool,
    /// A tag and what the statement gives back for its rows, as `row_id` (bigint), `a` and `b` (text).
    pub returning: Option<(&'static str, &'static str)>,
}

/// The statement that writes the tables of `tables` whose bit is set in `mask`, parameters numbered table
/// after table, column after column. One text per mask (and check), so each is prepared once per connection.
///
/// With `check` (the indexes of the tables whose rows it counts: the updated accounts first), the statement
/// first updates the accounts, then checks that every account it changed was still at the version the batch
/// read (the update's `WHERE`), that every account it only read still is (`$c1` ids, `$c2` versions), and that
/// each counted table got as many rows as it was given (`$c3`, in `check`'s order); if not, `billing_fresh`
/// raises a serialization failure and nothing of the statement stays. A batch written without locks taken
/// beforehand depends on it.
pub fn write_statement(tables: &[Table], mask: u32, check: Option<&[usize]>) -> &'static str {
    static SQL: OnceLock<Mutex<HashMap<(u32, bool), &'static str>>> = OnceLock::new();
    let mut known = SQL.get_or_init(Default::default).lock().expect("statements");
    known.entry((mask, check.is_some())).or_insert_with(|| {
        let mut parts = Vec::new();
        let mut back: Vec<String> = Vec::new();
        let mut n = 1;
        for (i, t) in tables.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0) {
            let args: Vec<String> = t
                .types
                .iter()
                .map(|ty| {
                    let s = format!("${n}::{}", if *ty == Ty::Text { "text[]" } else { "bigint[]" });
                    n += 1;
                    s
                })
                .collect();
            let cols: Vec<String> = (0..t.types.len()).map(|c| format!("c{c}")).collect();
            let select = if t.ordered {
                format!(
                    "SELECT {} FROM unnest({}) WITH ORDINALITY AS u({}, n) ORDER BY n",
                    cols.join(", "),
                    args.join(", "),
                    cols.join(", ")
                )
            } else {
                format!("SELECT * FROM unnest({})", args.join(", "))
            };
            let returning = match t.returning {
                Some((tag, cols)) => {
                    back.push(format!("SELECT CAST('{tag}' AS TEXT) AS t, row_id, a, b FROM w{i}"));
                    cols
                }
                None => "1",
            };
            parts.push(format!("w{i} AS ({} {select}{} RETURNING {returning})", t.insert, t.tail));
        }
        if let Some(counted) = check {
            let (ids, versions, counts) = (n, n + 1, n + 2);
            // The accounts' update first: its row locks are taken before any other table's, as with locks.
            let mut conds: Vec<String> = counted
                .iter()
                .enumerate()
                .filter(|(_, t)| mask & (1 << **t) != 0)
                .map(|(k, t)| format!("(SELECT count(*) FROM w{t}) = (${counts}::bigint[])[{}]", k + 1))
                .collect();
            conds.push(format!(
                "(SELECT count(*) FROM accounts x JOIN unnest(${ids}::text[], ${versions}::bigint[]) AS u(id, v) \
                 ON x.id = u.id AND x.version = u.v) = cardinality(${ids}::text[])"
            ));
            parts.push(format!("chk AS (SELECT billing_fresh({}) AS ok)", conds.join(" AND ")));
            // Scanned before the rows given back, so a stale batch fails before the rest is written.
            back.insert(
                0,
                "SELECT NULL::text AS t, ok::bigint AS row_id, NULL::text AS a, NULL::text AS b FROM chk WHERE ok <> 0"
                    .into(),
            );
        }
        if back.is_empty() {
            back.push(
                "SELECT NULL::text AS t, 0::bigint AS row_id, NULL::text AS a, NULL::text AS b WHERE false".into(),
            );
        }
        Box::leak(format!("WITH {} {}", parts.join(", "), back.join(" UNION ALL ")).into_boxed_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_what_needs_it() {
        assert_eq!(text_array([Some("a"), None, Some(r#"b"c\d,{}"#)]), r#"{"a",NULL,"b\"c\\d,{}"}"#);
        assert_eq!(text_array(std::iter::empty()), "{}");
        assert_eq!(text_array([Some("NULL")]), r#"{"NULL"}"#, "the text NULL is not a null");
        assert_eq!(int_array([Some(1), None, Some(-3)]), "{1,NULL,-3}");
    }
}
