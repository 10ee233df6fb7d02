//! Commands (SPEC §6): JSON messages `{type, id, ...}` that arrive on the RabbitMQ queue or on
//! `POST /v1/commands`. Parsing tells a malformed message from an unknown type; applying ([`apply`]) goes
//! through the inbox protocol (source `queue`), once per id.

use crate::time::{UnixTime, parse_rfc3339};
use serde_json::Value;

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
    CycleEnded { account_id: String, at: Option<UnixTime> },
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

mod apply;
pub use apply::{Commander, Commands, Outcome};

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};

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
            Kind::CycleEnded { account_id: "a".into(), at: Some(at(1_767_225_600)) }
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
