//! Stripe test payloads built from Stripe's own example objects (`tests/fixtures/stripe-fixtures3.json`, a copy
//! of stripe/openapi's fixtures3.json, MIT), with the fields a test cares about set and every other field kept.
//! `Shape::Old` moves fields where API versions before 2025-03-31 put them.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    New,
    Old,
}

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let text = include_str!("../../fixtures/stripe-fixtures3.json");
        serde_json::from_str::<Value>(text).unwrap()["resources"].clone()
    })
}

pub fn fixture(name: &str) -> Value {
    fixtures()[name].clone()
}

/// A price object: the fixture price with this id, lookup key and metadata.
pub fn price(id: &str, lookup_key: Option<&str>, metadata: Value, interval: Option<&str>) -> Value {
    let mut p = fixture("price");
    p["id"] = json!(id);
    p["lookup_key"] = json!(lookup_key);
    p["metadata"] = metadata;
    match interval {
        Some(i) => p["recurring"]["interval"] = json!(i),
        None => {
            p["recurring"] = Value::Null;
            p["type"] = json!("one_time");
        }
    }
    p
}

pub struct Sub<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub account: Option<&'a str>,
    pub price: Value,
    pub anchor: i64,
    pub period: (i64, i64),
    pub status: &'a str,
    pub trial: Option<(i64, i64)>,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<i64>,
}

pub fn subscription(s: &Sub, shape: Shape) -> Value {
    let mut o = fixture("subscription");
    o["id"] = json!(s.id);
    o["customer"] = json!(s.customer);
    o["metadata"] = match s.account {
        Some(a) => json!({"account_id": a}),
        None => json!({}),
    };
    o["status"] = json!(s.status);
    o["billing_cycle_anchor"] = json!(s.anchor);
    o["start_date"] = json!(s.trial.map(|t| t.0).unwrap_or(s.anchor));
    o["trial_start"] = json!(s.trial.map(|t| t.0));
    o["trial_end"] = json!(s.trial.map(|t| t.1));
    o["cancel_at_period_end"] = json!(s.cancel_at_period_end);
    o["cancel_at"] = Value::Null;
    o["canceled_at"] = json!(s.ended_at);
    o["ended_at"] = json!(s.ended_at);
    let mut item = o["items"]["data"][0].clone();
    item["price"] = s.price.clone();
    match shape {
        Shape::New => {
            item["current_period_start"] = json!(s.period.0);
            item["current_period_end"] = json!(s.period.1);
            if let Some(obj) = o.as_object_mut() {
                obj.remove("current_period_start");
                obj.remove("current_period_end");
            }
        }
        Shape::Old => {
            if let Some(i) = item.as_object_mut() {
                i.remove("current_period_start");
                i.remove("current_period_end");
            }
            o["current_period_start"] = json!(s.period.0);
            o["current_period_end"] = json!(s.period.1);
        }
    }
    o["items"]["data"] = json!([item]);
    o
}

pub struct Line<'a> {
    pub price: &'a str,
    pub period: (i64, i64),
    pub proration: bool,
    pub amount: i64,
}

pub fn invoice(id: &str, sub: &str, customer: &str, reason: &str, lines: &[Line], shape: Shape) -> Value {
    let mut o = fixture("invoice");
    o["id"] = json!(id);
    o["customer"] = json!(customer);
    o["billing_reason"] = json!(reason);
    o["status"] = json!("paid");
    o["amount_paid"] = json!(lines.iter().map(|l| l.amount).sum::<i64>());
    let template = o["lines"]["data"][0].clone();
    let mut out = Vec::new();
    for l in lines {
        let mut line = template.clone();
        line["amount"] = json!(l.amount);
        line["period"] = json!({"start": l.period.0, "end": l.period.1});
        match shape {
            Shape::New => {
                line["pricing"] = json!({"type": "price_details", "price_details": {"price": l.price, "product": "prod_x"}, "unit_amount_decimal": null});
                line["parent"] = json!({
                    "type": "subscription_item_details",
                    "invoice_item_details": null,
                    "subscription_item_details": {"invoice_item": null, "proration": l.proration, "proration_details": null, "subscription": sub, "subscription_item": "si_x"}
                });
            }
            Shape::Old => {
                line["price"] = json!({"id": l.price, "object": "price"});
                line["proration"] = json!(l.proration);
                line["subscription"] = json!(sub);
                if let Some(x) = line.as_object_mut() {
                    x.remove("pricing");
                    x.remove("parent");
                }
            }
        }
        out.push(line);
    }
    o["lines"]["data"] = json!(out);
    match shape {
        Shape::New => {
            o["parent"] = json!({"type": "subscription_details", "quote_details": null, "subscription_details": {"metadata": {}, "subscription": sub}});
            if let Some(x) = o.as_object_mut() {
                x.remove("subscription");
            }
        }
        Shape::Old => {
            o["subscription"] = json!(sub);
            if let Some(x) = o.as_object_mut() {
                x.remove("parent");
            }
        }
    }
    o
}

pub fn checkout(
    id: &str,
    account: Option<&str>,
    customer: Option<&str>,
    payment_intent: &str,
    metadata: Value,
    paid: bool,
) -> Value {
    let mut o = fixture("checkout.session");
    o["id"] = json!(id);
    o["mode"] = json!("payment");
    o["payment_status"] = json!(if paid { "paid" } else { "unpaid" });
    o["payment_intent"] = json!(payment_intent);
    o["client_reference_id"] = json!(account);
    o["customer"] = json!(customer);
    o["metadata"] = metadata;
    o
}

pub fn charge(id: &str, payment_intent: &str, customer: Option<&str>, amount: i64, refunded: i64) -> Value {
    let mut o = fixture("charge");
    o["id"] = json!(id);
    o["payment_intent"] = json!(payment_intent);
    o["customer"] = json!(customer);
    o["amount"] = json!(amount);
    o["amount_captured"] = json!(amount);
    o["amount_refunded"] = json!(refunded);
    o["refunded"] = json!(refunded == amount);
    o
}

pub fn payment_intent(id: &str, customer: Option<&str>, metadata: Value) -> Value {
    let mut o = fixture("payment_intent");
    o["id"] = json!(id);
    o["customer"] = json!(customer);
    o["metadata"] = metadata;
    o["status"] = json!("succeeded");
    o
}

/// An event envelope around `object`, as JSON text.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    let mut e = fixture("event");
    e["id"] = json!(id);
    e["type"] = json!(kind);
    e["created"] = json!(created);
    e["api_version"] = json!("2025-03-31.basil");
    e["data"] = json!({"object": object});
    e["livemode"] = json!(false);
    serde_json::to_string(&e).unwrap()
}

/// A valid `Stripe-Signature` header for `body` at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", billing_worker::stripe::signature::sign(secret, t, body.as_bytes()))
}
