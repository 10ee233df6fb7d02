//! Our own serde structs for the few fields of Stripe events we read, tolerant of both API shapes (SPEC §5):
//! the invoice's subscription at `parent.subscription_details.subscription` or `subscription`, the period at
//! `items.data[].current_period_*` or `current_period_*`, a line's price at `pricing.price_details.price` or
//! `price`. Everything is optional at this level; the mapping decides what it cannot do without.
//!
//! Why not whole Stripe objects: they change with every API version, and a field we don't read must never be
//! the reason an event fails.

use crate::time::UnixTime;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The event envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub created: UnixTime,
    pub data: Data,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Data {
    pub object: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a Stripe event: {0}")]
    NotAnEvent(String),
}

/// Parse an event envelope from raw bytes.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let env: Envelope = serde_json::from_value(v).map_err(|e| ParseError::NotAnEvent(e.to_string()))?;
    if env.id.is_empty() || env.kind.is_empty() || env.id.len() > 255 || env.kind.len() > 255 {
        return Err(ParseError::NotAnEvent("id and type must be 1 to 255 characters".into()));
    }
    if env.id.contains('\0') || env.kind.contains('\0') {
        return Err(ParseError::NotAnEvent("id and type must not contain NUL".into()));
    }
    Ok(env)
}

/// A field that is an id, or an expanded object with an `id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ref(pub String);

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Ref(s)),
            Value::Object(o) => match o.get("id") {
                Some(Value::String(s)) => Ok(Ref(s.clone())),
                _ => Err(serde::de::Error::custom("expanded object without an id")),
            },
            _ => Err(serde::de::Error::custom("expected an id or an object")),
        }
    }
}

pub type Metadata = HashMap<String, Value>;

/// A metadata value as text (Stripe sends strings; numbers are accepted too).
pub fn meta<'a>(m: &'a Option<Metadata>, key: &str) -> Option<String> {
    let v: &'a Value = m.as_ref()?.get(key)?;
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub lookup_key: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// The product id, or the expanded product (whose metadata may also name a plan or package).
    #[serde(default)]
    pub product: Option<Value>,
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Recurring {
    #[serde(default)]
    pub interval: Option<String>,
}

impl Price {
    /// Metadata of the price, then of the expanded product.
    pub fn meta(&self, key: &str) -> Option<String> {
        meta(&self.metadata, key).or_else(|| {
            let product_meta = self.product.as_ref()?.get("metadata")?.clone();
            let m: Option<Metadata> = serde_json::from_value(product_meta).ok();
            meta(&m, key)
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List { data: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionObject {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Ref>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub billing_cycle_anchor: Option<UnixTime>,
    #[serde(default)]
    pub start_date: Option<UnixTime>,
    #[serde(default)]
    pub trial_start: Option<UnixTime>,
    #[serde(default)]
    pub trial_end: Option<UnixTime>,
    #[serde(default)]
    pub cancel_at_period_end: Option<bool>,
    #[serde(default)]
    pub canceled_at: Option<UnixTime>,
    #[serde(default)]
    pub ended_at: Option<UnixTime>,
    #[serde(default)]
    pub current_period_start: Option<UnixTime>,
    #[serde(default)]
    pub current_period_end: Option<UnixTime>,
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub current_period_start: Option<UnixTime>,
    #[serde(default)]
    pub current_period_end: Option<UnixTime>,
}

impl SubscriptionObject {
    pub fn items(&self) -> &[SubscriptionItem] {
        self.items.as_ref().map(|l| l.data.as_slice()).unwrap_or_default()
    }

    /// The current billing period, from the items (new API) or the subscription (old API).
    pub fn period(&self) -> Option<(UnixTime, UnixTime)> {
        let from_items = self.items().iter().find_map(|i| Some((i.current_period_start?, i.current_period_end?)));
        from_items.or_else(|| Some((self.current_period_start?, self.current_period_end?)))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Ref>,
    #[serde(default)]
    pub billing_reason: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub subscription: Option<Ref>,
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    #[serde(default)]
    pub lines: Option<List<InvoiceLine>>,
    #[serde(default)]
    pub period_start: Option<UnixTime>,
    #[serde(default)]
    pub period_end: Option<UnixTime>,
    /// The payment that paid it (API versions before 2025-03-31).
    #[serde(default)]
    pub payment_intent: Option<Ref>,
}

/// Which payment paid which invoice (`invoice_payment.paid`, API versions from 2025-03-31).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePayment {
    pub id: String,
    #[serde(default)]
    pub invoice: Option<Ref>,
    #[serde(default)]
    pub payment: Option<InvoicePaymentOf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct InvoicePaymentOf {
    #[serde(default)]
    pub payment_intent: Option<Ref>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct SubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<Ref>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub period: Option<Period>,
    /// Old API: the price object (or id) on the line.
    #[serde(default)]
    pub price: Option<Value>,
    #[serde(default)]
    pub pricing: Option<Pricing>,
    #[serde(default)]
    pub proration: Option<bool>,
    #[serde(default)]
    pub parent: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Period {
    #[serde(default)]
    pub start: Option<UnixTime>,
    #[serde(default)]
    pub end: Option<UnixTime>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Pricing {
    #[serde(default)]
    pub price_details: Option<PriceDetails>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct PriceDetails {
    #[serde(default)]
    pub price: Option<Ref>,
}

impl Invoice {
    /// The subscription, in either API shape.
    pub fn subscription_id(&self) -> Option<String> {
        let new =
            self.parent.as_ref().and_then(|p| p.subscription_details.as_ref()).and_then(|d| d.subscription.clone());
        new.or_else(|| self.subscription.clone()).map(|r| r.0)
    }

    /// `account_id` from the invoice's metadata or the subscription metadata Stripe copies onto it.
    pub fn account_id(&self) -> Option<String> {
        let details =
            [self.parent.as_ref().and_then(|p| p.subscription_details.as_ref()), self.subscription_details.as_ref()];
        meta(&self.metadata, "account_id")
            .or_else(|| details.into_iter().flatten().find_map(|d| meta(&d.metadata, "account_id")))
    }

    pub fn lines(&self) -> &[InvoiceLine] {
        self.lines.as_ref().map(|l| l.data.as_slice()).unwrap_or_default()
    }
}

impl InvoiceLine {
    /// The line's price id, in either API shape.
    pub fn price_id(&self) -> Option<String> {
        let new =
            self.pricing.as_ref().and_then(|p| p.price_details.as_ref()).and_then(|d| d.price.clone()).map(|r| r.0);
        new.or_else(|| match self.price.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("id")?.as_str().map(str::to_owned),
            _ => None,
        })
    }

    /// The full price object, when the line carries one (old API).
    pub fn price_object(&self) -> Option<Price> {
        serde_json::from_value(self.price.clone()?).ok()
    }

    pub fn is_proration(&self) -> bool {
        if self.proration == Some(true) {
            return true;
        }
        let parent = self.parent.as_ref();
        ["subscription_item_details", "invoice_item_details"].iter().any(|k| {
            parent.and_then(|p| p.get(k)).and_then(|d| d.get("proration")).and_then(Value::as_bool) == Some(true)
        })
    }

    pub fn period(&self) -> Option<(UnixTime, UnixTime)> {
        let p = self.period.as_ref()?;
        Some((p.start?, p.end?))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<Ref>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub customer: Option<Ref>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Ref>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    #[serde(default)]
    pub payment_intent: Option<Ref>,
    #[serde(default)]
    pub customer: Option<Ref>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// The invoice it paid (API versions before 2025-03-31).
    #[serde(default)]
    pub invoice: Option<Ref>,
}

/// Fields whose values name accounts, lots or Stripe objects: stored in keyed columns.
const ID_FIELDS: [&str; 8] =
    ["id", "customer", "subscription", "payment_intent", "invoice", "client_reference_id", "account_id", "price"];

/// The first id-like field in `v` longer than 255 characters: PostgreSQL cannot index a key that long (SQLite
/// can), so such an event is refused on both backends alike.
pub fn long_id(v: &Value) -> Option<String> {
    match v {
        Value::Array(a) => a.iter().find_map(long_id),
        Value::Object(o) => o.iter().find_map(|(k, v)| match v {
            Value::String(s) if s.len() > 255 && ID_FIELDS.contains(&k.as_str()) => Some(k.clone()),
            other => long_id(other),
        }),
        _ => None,
    }
}

/// Whether any string in `v` (keys too) holds a NUL, which PostgreSQL cannot store in text.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};
    use proptest::prelude::*;

    #[test]
    fn reads_both_invoice_shapes() {
        let new: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_1",
            "parent": {"subscription_details": {"subscription": "sub_new", "metadata": {"account_id": "acc_1"}}},
            "lines": {"data": [{"period": {"start": 1, "end": 2}, "pricing": {"price_details": {"price": "price_a"}}}]}
        }))
        .unwrap();
        assert_eq!(new.subscription_id().as_deref(), Some("sub_new"));
        assert_eq!(new.account_id().as_deref(), Some("acc_1"));
        assert_eq!(new.lines()[0].price_id().as_deref(), Some("price_a"));
        let old: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_2", "subscription": "sub_old", "subscription_details": {"metadata": {"account_id": "acc_2"}},
            "lines": {"data": [{"period": {"start": 1, "end": 2}, "price": {"id": "price_b", "lookup_key": "basic_monthly"}, "proration": true}]}
        }))
        .unwrap();
        assert_eq!(old.subscription_id().as_deref(), Some("sub_old"));
        assert_eq!(old.account_id().as_deref(), Some("acc_2"));
        assert_eq!(old.lines()[0].price_id().as_deref(), Some("price_b"));
        assert_eq!(old.lines()[0].price_object().unwrap().lookup_key.as_deref(), Some("basic_monthly"));
        assert!(old.lines()[0].is_proration());
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(parse_envelope(b"not json"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_envelope(b"{\"id\": 1}"), Err(ParseError::NotAnEvent(_))));
        assert!(matches!(parse_envelope(b"[]"), Err(ParseError::NotAnEvent(_))));
        let ok = parse_envelope(br#"{"id":"evt_1","type":"invoice.paid","created":5,"data":{"object":{}}}"#).unwrap();
        assert_eq!((ok.id.as_str(), ok.kind.as_str(), ok.created), ("evt_1", "invoice.paid", at(5)));
    }

    proptest! {
        #[test]
        fn event_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(env) = parse_envelope(&bytes) {
                let _ = serde_json::from_value::<Invoice>(env.data.object.clone());
                let _ = serde_json::from_value::<SubscriptionObject>(env.data.object);
            }
        }

        #[test]
        fn event_parser_never_panics_on_json(s in r#"\{"id":"[a-z_0-9]{0,8}","type":"[a-z.]{0,20}","created":[0-9]{0,12},"data":\{"object":\{("[a-z_]{1,12}":("[a-z0-9_]{0,8}"|[0-9]{1,5}|null|\{\}|\[\]),?){0,6}\}\}\}"#) {
            if let Ok(env) = parse_envelope(s.as_bytes()) {
                let _ = serde_json::from_value::<Invoice>(env.data.object.clone());
                let _ = serde_json::from_value::<CheckoutSession>(env.data.object.clone());
                let _ = serde_json::from_value::<Charge>(env.data.object);
            }
        }
    }
}
