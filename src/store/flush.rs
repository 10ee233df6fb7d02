//! Writing a batch: what changed in every account since it was loaded, with a few multi-row statements per
//! table (upserts for lots, subscriptions, holds and accounts; inserts for entries, outbox rows and keys).

use super::StoreError;
use super::batch::{Batch, Tx};
use super::load::params;

/// One bound value.
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// A multi-row statement: `head` + `VALUES (...), (...)` + `tail`, `cols` values a row.
struct Rows {
    head: &'static str,
    tail: &'static str,
    cols: usize,
    args: Vec<Arg>,
}

impl Rows {
    fn new(head: &'static str, cols: usize, tail: &'static str) -> Self {
        Rows { head, tail, cols, args: Vec::new() }
    }

    fn push(&mut self, row: Vec<Arg>) {
        debug_assert_eq!(row.len(), self.cols);
        self.args.extend(row);
    }

    async fn run(self, tx: &mut Tx) -> Result<(), StoreError> {
        if self.args.is_empty() {
            return Ok(());
        }
        // Well under SQLite's 32,766 and PostgreSQL's 65,535 parameters a statement.
        let per = (30_000 / self.cols).max(1);
        let mut args = self.args.into_iter().peekable();
        while args.peek().is_some() {
            let chunk: Vec<Arg> = args.by_ref().take(per * self.cols).collect();
            let n = chunk.len() / self.cols;
            let values: Vec<String> = (0..n).map(|i| format!("({})", params(i * self.cols + 1, self.cols))).collect();
            let sql = format!("{} VALUES {}{}", self.head, values.join(", "), self.tail);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for a in chunk {
                q = match a {
                    Arg::Text(v) => q.bind(v),
                    Arg::OptText(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                    Arg::OptInt(v) => q.bind(v),
                };
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

/// Write every change of `b` and start over from what is now stored.
pub(crate) async fn write(b: &mut Batch) -> Result<(), StoreError> {
    let mut lots = Rows::new(
        "INSERT INTO lots (account_id, id, source, amount, remaining, granted_at, expires_at, subscription_id, cycle_start, clawed)",
        10,
        " ON CONFLICT (account_id, id) DO UPDATE SET amount = excluded.amount, remaining = excluded.remaining, \
         expires_at = excluded.expires_at, clawed = excluded.clawed",
    );
    let mut subs = Rows::new(
        "INSERT INTO subscriptions (id, account_id, state, updated_at)",
        4,
        " ON CONFLICT (account_id, id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    );
    let mut holds = Rows::new(
        "INSERT INTO holds (id, account_id, status, amount, deadline, state, created_at, updated_at)",
        8,
        " ON CONFLICT (account_id, id) DO UPDATE SET status = excluded.status, state = excluded.state, \
         updated_at = excluded.updated_at",
    );
    let mut members = Rows::new("INSERT INTO members (account_id, user_id, added_at)", 3, "");
    let mut gone_members: Vec<(String, String)> = Vec::new();
    let mut entries = Rows::new(
        "INSERT INTO entries (account_id, at, kind, amount, lot_id, balance_after, cause, user_id, operation, shortfall, recorded_at)",
        11,
        "",
    );
    let mut accounts = Rows::new(
        "INSERT INTO accounts (id, balance, signup_granted, next_due_at, created_at, updated_at)",
        6,
        " ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, signup_granted = excluded.signup_granted, \
         next_due_at = excluded.next_due_at, updated_at = excluded.updated_at",
    );
    let mut ids: Vec<&String> = b.slots.iter().filter(|(_, s)| s.dirty).map(|(id, _)| id).collect();
    ids.sort();
    for id in ids {
        let s = &b.slots[id];
        let a = &s.account;
        let now = s.updated_at;
        for lot in a.lots.iter().filter(|l| s.base.lots.get(&l.id) != Some(*l)) {
            lots.push(vec![
                Arg::Text(id.clone()),
                Arg::Text(lot.id.clone()),
                Arg::Text(lot.source.as_str().into()),
                Arg::Int(lot.amount),
                Arg::Int(lot.remaining),
                Arg::Int(lot.granted_at),
                Arg::OptInt(lot.expires_at),
                Arg::OptText(lot.subscription_id.clone()),
                Arg::OptInt(lot.cycle_start),
                Arg::Int(lot.clawed),
            ]);
        }
        for sub in a.subscriptions.iter().filter(|x| s.base.subs.get(&x.id) != Some(*x)) {
            subs.push(vec![Arg::Text(sub.id.clone()), Arg::Text(id.clone()), Arg::Text(to_json(sub)), Arg::Int(now)]);
        }
        for h in a.holds.iter().filter(|h| s.base.holds.get(&h.id) != Some(*h)) {
            holds.push(vec![
                Arg::Text(h.id.clone()),
                Arg::Text(id.clone()),
                Arg::Text(h.status.as_str().into()),
                Arg::Int(h.amount),
                Arg::Int(h.deadline),
                Arg::Text(to_json(h)),
                Arg::Int(h.created_at),
                Arg::Int(now),
            ]);
        }
        for m in a.members.iter().filter(|m| !s.base.members.contains(m)) {
            members.push(vec![Arg::Text(id.clone()), Arg::Text(m.clone()), Arg::Int(now)]);
        }
        for m in s.base.members.iter().filter(|m| !a.members.contains(m)) {
            gone_members.push((id.clone(), m.clone()));
        }
        for (e, recorded) in &s.entries {
            entries.push(vec![
                Arg::Text(id.clone()),
                Arg::Int(e.at),
                Arg::Text(e.kind.as_str().into()),
                Arg::Int(e.amount),
                Arg::OptText(e.lot_id.clone()),
                Arg::Int(e.balance_after),
                Arg::Text(e.cause.clone()),
                Arg::OptText(e.user_id.clone()),
                Arg::OptText(e.operation.clone()),
                Arg::Int(e.shortfall),
                Arg::Int(*recorded),
            ]);
        }
        accounts.push(vec![
            Arg::Text(id.clone()),
            Arg::Int(a.balance),
            Arg::Int(a.signup_granted as i64),
            Arg::OptInt(a.next_due()),
            Arg::Int(s.created_at),
            Arg::Int(now),
        ]);
    }
    let mut outbox = Rows::new("INSERT INTO outbox (event_id, account_id, type, payload, created_at)", 5, "");
    for o in b.outbox.drain(..) {
        outbox.push(vec![
            Arg::Text(o.event_id),
            Arg::OptText(o.account),
            Arg::Text(o.kind),
            Arg::Text(o.payload),
            Arg::Int(o.created_at),
        ]);
    }
    let mut effects = Rows::new("INSERT INTO effects (account_id, key, request, response, created_at)", 5, "");
    for (account, key, e, now) in b.new_effects.drain(..) {
        effects.push(vec![
            Arg::Text(account),
            Arg::Text(key),
            Arg::OptText(e.request),
            Arg::Text(e.response),
            Arg::Int(now),
        ]);
    }
    let tx = b.tx();
    lots.run(tx).await?;
    subs.run(tx).await?;
    holds.run(tx).await?;
    members.run(tx).await?;
    for (account, user) in gone_members {
        sqlx::query("DELETE FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(account)
            .bind(user)
            .execute(&mut **tx)
            .await?;
    }
    entries.run(tx).await?;
    accounts.run(tx).await?;
    outbox.run(tx).await?;
    effects.run(tx).await?;
    for s in b.slots.values_mut().filter(|s| s.dirty) {
        s.rebase();
    }
    Ok(())
}
