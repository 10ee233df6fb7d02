//! Commands (SPEC §6): JSON messages `{type, id, ...}` that arrive on the RabbitMQ queue or on
//! `POST /v1/commands`. Parsing tells a malformed message from an unknown type; applying stores the command once
//! per id in the inbox (source `queue`) with its outcome, in the transaction that applies it.

use crate::catalog::Catalog;
use crate::ledger::{Op, Source};
use crate::store::{InboxRow, InboxStatus, Request, Store, StoreError};
use crate::stripe::Intake;
use crate::stripe::event::parse_envelope;
use crate::time::{Ts, parse_rfc3339};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

pub const SOURCE: &str = "queue";
const MAX_QUANTITY: i64 = 10_000;
const MAX_CREDITS: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    AccountCreated { account_id: String, stripe_customer_id: Option<String> },
    PackagePurchased { account_id: String, package: String, quantity: i64, payment_ref: Option<String> },
    CycleEnded { account_id: String, at: Option<Ts> },
    CreditsAdjusted { account_id: String, credits: i64, reason: String },
    UsageRecorded { account_id: String, user_id: String, operation: String, quantity: i64 },
    StripeEvent { payload: String, signature: Option<String> },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::AccountCreated { .. } => "account.created",
            Kind::PackagePurchased { .. } => "package.purchased",
            Kind::CycleEnded { .. } => "cycle.ended",
            Kind::CreditsAdjusted { .. } => "credits.adjusted",
            Kind::UsageRecorded { .. } => "usage.recorded",
            Kind::StripeEvent { .. } => "stripe.event",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("unknown command type {0:?}")]
    UnknownType(String),
}

fn text(v: &Value, field: &str) -> Result<String, ParseError> {
    match v.get(field) {
        Some(Value::String(s)) if s.contains('\0') => {
            Err(ParseError::Malformed(format!("{field} must not contain NUL")))
        }
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.trim().to_owned()),
        Some(Value::String(_)) => Err(ParseError::Malformed(format!("{field} must be 1 to 256 characters"))),
        Some(_) => Err(ParseError::Malformed(format!("{field} must be a string"))),
        None => Err(ParseError::Malformed(format!("{field} is required"))),
    }
}

fn opt_text(v: &Value, field: &str) -> Result<Option<String>, ParseError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(v, field).map(Some),
    }
}

fn int(v: &Value, field: &str, default: Option<i64>, range: std::ops::RangeInclusive<i64>) -> Result<i64, ParseError> {
    let n = match v.get(field) {
        None | Some(Value::Null) => default.ok_or_else(|| ParseError::Malformed(format!("{field} is required")))?,
        Some(Value::Number(n)) => {
            n.as_i64().ok_or_else(|| ParseError::Malformed(format!("{field} must be a whole number")))?
        }
        Some(_) => return Err(ParseError::Malformed(format!("{field} must be a number"))),
    };
    if !range.contains(&n) {
        return Err(ParseError::Malformed(format!("{field} must be between {} and {}", range.start(), range.end())));
    }
    Ok(n)
}

/// Parse a command message.
pub fn parse(body: &[u8]) -> Result<Command, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Malformed(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ParseError::Malformed("a command is a JSON object".into()));
    }
    let kind_name = text(&v, "type")?;
    let id = text(&v, "id")?;
    let kind = match kind_name.as_str() {
        "account.created" => Kind::AccountCreated {
            account_id: text(&v, "account_id")?,
            stripe_customer_id: opt_text(&v, "stripe_customer_id")?,
        },
        "package.purchased" => Kind::PackagePurchased {
            account_id: text(&v, "account_id")?,
            package: text(&v, "package")?,
            quantity: int(&v, "quantity", Some(1), 1..=MAX_QUANTITY)?,
            payment_ref: match opt_text(&v, "payment_ref")? {
                Some(r) if r.contains(':') || r == "signup" => {
                    return Err(ParseError::Malformed("payment_ref must be a payment id (no ':')".into()));
                }
                other => other,
            },
        },
        "cycle.ended" => {
            let at = match opt_text(&v, "at")? {
                None => None,
                Some(t) => Some(
                    parse_rfc3339(&t)
                        .ok_or_else(|| ParseError::Malformed(format!("at {t:?} is not an RFC 3339 time")))?,
                ),
            };
            Kind::CycleEnded { account_id: text(&v, "account_id")?, at }
        }
        "credits.adjusted" => {
            let credits = int(&v, "credits", None, -MAX_CREDITS..=MAX_CREDITS)?;
            if credits == 0 {
                return Err(ParseError::Malformed("credits must not be 0".into()));
            }
            Kind::CreditsAdjusted { account_id: text(&v, "account_id")?, credits, reason: text(&v, "reason")? }
        }
        "usage.recorded" => Kind::UsageRecorded {
            account_id: text(&v, "account_id")?,
            user_id: text(&v, "user_id")?,
            operation: text(&v, "operation")?,
            quantity: int(&v, "quantity", Some(1), 1..=MAX_QUANTITY)?,
        },
        "stripe.event" => {
            let payload = match v.get("payload") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(ParseError::Malformed("payload (the event's JSON text) is required".into())),
            };
            Kind::StripeEvent { payload, signature: opt_text(&v, "signature")? }
        }
        other => return Err(ParseError::UnknownType(other.to_owned())),
    };
    Ok(Command { id, kind })
}

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub id: String,
    pub status: InboxStatus,
    /// True when the command (or the Stripe event it carries) was decided before.
    pub duplicate: bool,
    pub detail: Option<String>,
    pub credits: Option<i64>,
    pub balance: Option<i64>,
}

impl Outcome {
    /// The outcome of a command decided before.
    fn seen(id: String, status: InboxStatus, detail: Option<String>) -> Self {
        Outcome { id, status, duplicate: true, detail, credits: None, balance: None }
    }
}

#[derive(Clone)]
pub struct Commander {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub intake: Intake,
    pub webhook_secrets: Vec<String>,
    /// Refuse `stripe.event` commands that carry no signature.
    pub require_signature: bool,
}

impl Commander {
    /// Apply a parsed command once. Errors only when it could not be stored (retry later).
    #[tracing::instrument(skip_all, fields(command_id = %cmd.id, command_type = cmd.kind.name()))]
    pub async fn apply(&self, cmd: &Command, raw: &str, now: Ts) -> Result<Outcome, StoreError> {
        if let Kind::StripeEvent { payload, signature } = &cmd.kind {
            return self.stripe_event(cmd, raw, payload, signature.as_deref(), now).await;
        }
        if let Some(row) = self.store.inbox_find(SOURCE, &cmd.id).await? {
            return self.seen(row, now).await;
        }
        let mut tx = self.store.begin_write().await?;
        let name = cmd.kind.name();
        let Some(row) =
            self.store.inbox_insert(&mut tx, SOURCE, &cmd.id, name, raw, now, InboxStatus::Received, None, now).await?
        else {
            // Another delivery stored it first.
            tx.rollback().await?;
            let row = self
                .store
                .inbox_find(SOURCE, &cmd.id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("inbox row vanished".into()))?;
            return self.seen(row, now).await;
        };
        self.decide(tx, row, cmd, raw, now, true).await
    }

    /// A command whose id is stored already: its first outcome, or another try when it failed or waits.
    async fn seen(&self, row: InboxRow, now: Ts) -> Result<Outcome, StoreError> {
        if matches!(row.status, InboxStatus::Failed | InboxStatus::Waiting) {
            // Sent again after it failed (requeued from the parking queue, or posted again): another try.
            return self.replay(row.id, now).await;
        }
        Ok(Outcome::seen(row.event_id, row.status, row.detail))
    }

    /// Decide a stored command again (replay of a failed one). An applied one changes nothing.
    pub async fn replay(&self, row_id: i64, now: Ts) -> Result<Outcome, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let row = self
            .store
            .inbox_lock(&mut tx, row_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no inbox row {row_id}")))?;
        let dup = |status, detail| Outcome::seen(row.event_id.clone(), status, detail);
        if matches!(row.status, InboxStatus::Applied | InboxStatus::Ignored) {
            return Ok(dup(row.status, row.detail.clone()));
        }
        let cmd = match parse(row.payload.as_bytes()) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.store
                    .inbox_set(&mut tx, row_id, InboxStatus::Failed, Some(&e.to_string()), None, None, now, true)
                    .await?;
                tx.commit().await?;
                return Ok(Outcome { duplicate: false, ..dup(InboxStatus::Failed, Some(e.to_string())) });
            }
        };
        if let Kind::StripeEvent { payload, signature } = &cmd.kind {
            drop(tx);
            let o = self.stripe_event_checked(payload, signature.as_deref(), now).await?;
            let (status, detail) = match o {
                Ok(d) => (d.status, d.detail),
                Err(reason) => (InboxStatus::Failed, Some(reason)),
            };
            let mut tx = self.store.begin_write().await?;
            self.store.inbox_set(&mut tx, row_id, status, detail.as_deref(), None, None, now, true).await?;
            tx.commit().await?;
            return Ok(Outcome { duplicate: false, ..dup(status, detail) });
        }
        self.decide(tx, row_id, &cmd, &row.payload, now, false).await
    }

    async fn decide(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        row: i64,
        cmd: &Command,
        raw: &str,
        now: Ts,
        first: bool,
    ) -> Result<Outcome, StoreError> {
        let result = match self.request(cmd, now) {
            Ok((mut req, customer)) => {
                if let Op::Grant { lot_id, .. } = &req.op
                    && let Some(owner) = self.store.payment_account(&mut tx, lot_id).await?
                {
                    // The payment was granted already (maybe to another account): no second grant anywhere.
                    req.account = owner;
                }
                let account = req.account.clone();
                if let Some(c) = customer {
                    self.store.link_customer(&mut tx, &c, &account, now).await?;
                }
                self.store.execute_in(&mut tx, req).await.map(|o| (account, o))
            }
            Err(reason) => Err(StoreError::Corrupt(reason)),
        };
        match result {
            Ok((account, o)) => {
                self.store
                    .inbox_set(&mut tx, row, InboxStatus::Applied, None, None, Some(&account), now, !first)
                    .await?;
                tx.commit().await?;
                let a = o.applied();
                Ok(Outcome {
                    id: cmd.id.clone(),
                    status: InboxStatus::Applied,
                    duplicate: false,
                    detail: None,
                    credits: Some(a.credits),
                    balance: Some(a.balance),
                })
            }
            Err(StoreError::Db(e)) => Err(StoreError::Db(e)),
            Err(e) => {
                // Refused for good: undo, keep the command as a failed event for replay.
                tx.rollback().await?;
                let reason = match e {
                    StoreError::Corrupt(r) => r,
                    other => other.to_string(),
                };
                if first {
                    return self.keep_failed(&cmd.id, cmd.kind.name(), raw, &reason, now).await;
                }
                let mut tx = self.store.begin_write().await?;
                self.store.inbox_set(&mut tx, row, InboxStatus::Failed, Some(&reason), None, None, now, true).await?;
                tx.commit().await?;
                Ok(Outcome {
                    id: cmd.id.clone(),
                    status: InboxStatus::Failed,
                    duplicate: false,
                    detail: Some(reason),
                    credits: None,
                    balance: None,
                })
            }
        }
    }

    /// Count a command's outcome in the metrics.
    pub fn store_metrics(&self, o: &Outcome) {
        crate::metrics::global().command(if o.duplicate { "duplicate" } else { o.status.as_str() });
    }

    /// Store a command that will not apply (malformed, unknown type, refused) as a failed event.
    pub async fn keep_failed(
        &self,
        id: &str,
        kind: &str,
        raw: &str,
        reason: &str,
        now: Ts,
    ) -> Result<Outcome, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let inserted = self
            .store
            .inbox_insert(&mut tx, SOURCE, id, kind, raw, now, InboxStatus::Failed, Some(reason), now)
            .await?;
        if inserted.is_some() {
            let data = serde_json::json!({"source": SOURCE, "event_id": id, "event_type": kind, "error": reason});
            self.store.outbox_insert(&mut tx, "event.failed", None, data, now).await?;
        }
        tx.commit().await?;
        tracing::warn!(command_id = id, reason, "command failed; kept for replay");
        Ok(Outcome {
            id: id.into(),
            status: InboxStatus::Failed,
            duplicate: inserted.is_none(),
            detail: Some(reason.into()),
            credits: None,
            balance: None,
        })
    }

    /// The ledger request of a command, and a Stripe customer to link. `Err` is a reason it can never apply.
    fn request(&self, cmd: &Command, now: Ts) -> Result<(Request, Option<String>), String> {
        let cause = format!("command:{}", cmd.id);
        let req = |account: &str, op: Op, create: bool| Request {
            account: account.into(),
            op,
            cause: cause.clone(),
            key: None,
            create,
            now,
        };
        Ok(match &cmd.kind {
            Kind::AccountCreated { account_id, stripe_customer_id } => {
                let credits = self.catalog.plans.get("free").map(|p| p.signup_credits).unwrap_or(0);
                (req(account_id, Op::Signup { credits }, true), stripe_customer_id.clone())
            }
            Kind::PackagePurchased { account_id, package, quantity, payment_ref } => {
                let p = self.catalog.packages.get(package).ok_or_else(|| format!("unknown package {package:?}"))?;
                let lot_id = payment_ref.clone().unwrap_or_else(|| format!("command:{}", cmd.id));
                (
                    req(account_id, Op::Grant { lot_id, source: Source::Package, credits: p.credits * quantity }, true),
                    None,
                )
            }
            Kind::CycleEnded { account_id, .. } => (req(account_id, Op::Tick, false), None),
            Kind::CreditsAdjusted { account_id, credits, reason } => {
                let mut r =
                    req(account_id, Op::Adjust { key: format!("command:{}", cmd.id), credits: *credits }, false);
                r.cause = format!("command:{} ({reason})", cmd.id);
                (r, None)
            }
            Kind::UsageRecorded { account_id, user_id, operation, quantity } => {
                let cost = self.catalog.cost(operation).ok_or_else(|| format!("unknown operation {operation:?}"))?;
                let op = Op::Debit {
                    key: cmd.id.clone(),
                    credits: cost * quantity,
                    user_id: Some(user_id.clone()),
                    operation: Some(operation.clone()),
                };
                (req(account_id, op, false), None)
            }
            Kind::StripeEvent { .. } => unreachable!("handled before"),
        })
    }

    async fn stripe_event(
        &self,
        cmd: &Command,
        raw: &str,
        payload: &str,
        signature: Option<&str>,
        now: Ts,
    ) -> Result<Outcome, StoreError> {
        match self.stripe_event_checked(payload, signature, now).await? {
            Ok(d) => Ok(Outcome {
                id: cmd.id.clone(),
                status: d.status,
                duplicate: d.duplicate,
                detail: d.detail,
                credits: None,
                balance: None,
            }),
            Err(reason) => self.keep_failed(&cmd.id, "stripe.event", raw, &reason, now).await,
        }
    }

    /// Verify and hand a queued Stripe event to the intake (deduplicated with webhooks by event id).
    /// The inner `Err` is why it can never apply.
    async fn stripe_event_checked(
        &self,
        payload: &str,
        signature: Option<&str>,
        now: Ts,
    ) -> Result<Result<crate::stripe::Decision, String>, StoreError> {
        match signature {
            // Authenticity, not freshness: a queued event may wait, so the timestamp tolerance is off.
            Some(sig) => {
                if let Err(e) =
                    crate::stripe::signature::verify(Some(sig), payload.as_bytes(), &self.webhook_secrets, 0, now)
                {
                    return Ok(Err(format!("stripe.event signature: {e}")));
                }
            }
            None if self.require_signature => {
                return Ok(Err("stripe.event without a signature (BILLING_QUEUE_REQUIRE_SIGNATURE)".into()));
            }
            None => {}
        }
        let env = match parse_envelope(payload.as_bytes()) {
            Ok(env) => env,
            Err(e) => return Ok(Err(format!("stripe.event payload: {e}"))),
        };
        Ok(Ok(self.intake.receive(&env, payload, now).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_and_tells_malformed_from_unknown() {
        let ok = |s: &str| parse(s.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"type":"account.created","id":"c1","account_id":"a"}"#).kind,
            Kind::AccountCreated { account_id: "a".into(), stripe_customer_id: None }
        );
        assert_eq!(
            ok(r#"{"type":"package.purchased","id":"c2","account_id":"a","package":"credits_100"}"#).kind,
            Kind::PackagePurchased {
                account_id: "a".into(),
                package: "credits_100".into(),
                quantity: 1,
                payment_ref: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"cycle.ended","id":"c3","account_id":"a","at":"2026-01-01"}"#).kind,
            Kind::CycleEnded { account_id: "a".into(), at: Some(1_767_225_600) }
        );
        assert!(matches!(
            ok(r#"{"type":"credits.adjusted","id":"c4","account_id":"a","credits":-5,"reason":"r"}"#).kind,
            Kind::CreditsAdjusted { credits: -5, .. }
        ));
        assert!(matches!(ok(r#"{"type":"usage.recorded","id":"c5","account_id":"a","user_id":"u","operation":"chat.message","quantity":3}"#).kind, Kind::UsageRecorded { quantity: 3, .. }));
        assert!(matches!(ok(r#"{"type":"stripe.event","id":"c6","payload":"{}"}"#).kind, Kind::StripeEvent { .. }));
        assert_eq!(
            parse(br#"{"type":"account.deleted","id":"x"}"#),
            Err(ParseError::UnknownType("account.deleted".into()))
        );
        for bad in [
            "nope",
            "[]",
            r#"{"id":"x","account_id":"a"}"#,
            r#"{"type":"account.created","account_id":"a"}"#,
            r#"{"type":"account.created","id":"x"}"#,
            r#"{"type":"account.created","id":"x","account_id":""}"#,
            r#"{"type":"package.purchased","id":"x","account_id":"a","package":"p","quantity":0}"#,
            r#"{"type":"package.purchased","id":"x","account_id":"a","package":"p","quantity":1e9}"#,
            r#"{"type":"usage.recorded","id":"x","account_id":"a","user_id":"u","operation":"o","quantity":-1}"#,
            r#"{"type":"credits.adjusted","id":"x","account_id":"a","credits":0,"reason":"r"}"#,
            r#"{"type":"credits.adjusted","id":"x","account_id":"a","credits":5}"#,
            r#"{"type":"cycle.ended","id":"x","account_id":"a","at":"soon"}"#,
            r#"{"type":"stripe.event","id":"x"}"#,
        ] {
            assert!(matches!(parse(bad.as_bytes()), Err(ParseError::Malformed(_))), "{bad}");
        }
    }
}
