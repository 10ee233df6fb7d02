//! A small client for the few Stripe API calls the worker makes: the Events API for backfill, a checkout
//! session's line items, a subscription, the invoice a payment paid. Base URL from `STRIPE_API_BASE`, so tests point it at a local fake.
//!
//! Why not async-stripe: it generates the whole Stripe API, which costs minutes of build on two cores for four
//! GET requests; reqwest is a small part of it (see docs/decisions.md).

use super::event::{Price, SubscriptionObject};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("Stripe API request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Stripe API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected Stripe API answer: {0}")]
    Shape(String),
}

#[derive(Clone)]
pub struct StripeApi {
    client: reqwest::Client,
    base: String,
    key: String,
}

/// The key is never printed.
impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi").field("base", &self.base).field("key", &"***").finish_non_exhaustive()
    }
}

/// One page of the Events API.
#[derive(Debug, Deserialize)]
pub struct EventPage {
    pub data: Vec<Value>,
    #[serde(default)]
    pub has_more: bool,
}

impl StripeApi {
    pub fn new(base: &str, key: &str) -> Result<Self, StripeApiError> {
        // One process-wide TLS provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(StripeApi { client, base: base.trim_end_matches('/').to_owned(), key: key.to_owned() })
    }

    async fn get(&self, path: &str) -> Result<Value, StripeApiError> {
        let resp = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            return Err(StripeApiError::Status { status: status.as_u16(), body: body.chars().take(500).collect() });
        }
        serde_json::from_str(&body).map_err(|e| StripeApiError::Shape(e.to_string()))
    }

    /// Events created at or after `since` that Stripe could not deliver, oldest first, one page after
    /// `starting_after`.
    pub async fn undelivered_events(
        &self,
        since: crate::time::UnixTime,
        starting_after: Option<&str>,
    ) -> Result<EventPage, StripeApiError> {
        let mut path = format!("/v1/events?delivery_success=false&limit=100&created[gte]={}", since.secs());
        if let Some(after) = starting_after {
            path.push_str(&format!("&starting_after={after}"));
        }
        serde_json::from_value(self.get(&path).await?).map_err(|e| StripeApiError::Shape(e.to_string()))
    }

    /// The prices and quantities a checkout session bought.
    pub async fn checkout_line_items(&self, session: &str) -> Result<Vec<(Price, i64)>, StripeApiError> {
        #[derive(Deserialize)]
        struct Item {
            price: Option<Price>,
            quantity: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Page {
            data: Vec<Item>,
        }
        let v = self
            .get(&format!("/v1/checkout/sessions/{session}/line_items?limit=100&expand[]=data.price.product"))
            .await?;
        let page: Page = serde_json::from_value(v).map_err(|e| StripeApiError::Shape(e.to_string()))?;
        Ok(page.data.into_iter().filter_map(|i| Some((i.price?, i.quantity.unwrap_or(1)))).collect())
    }

    /// The invoice a payment intent paid, if any (`None`: it paid no invoice).
    pub async fn invoice_of_payment(&self, payment_intent: &str) -> Result<Option<String>, StripeApiError> {
        let v = self
            .get(&format!(
                "/v1/invoice_payments?limit=1&payment[type]=payment_intent&payment[payment_intent]={payment_intent}"
            ))
            .await?;
        let first = v.get("data").and_then(|d| d.as_array()).and_then(|d| d.first()).cloned();
        Ok(first.and_then(|p| match p.get("invoice")? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("id")?.as_str().map(str::to_owned),
            _ => None,
        }))
    }

    pub async fn subscription(&self, id: &str) -> Result<SubscriptionObject, StripeApiError> {
        let v = self.get(&format!("/v1/subscriptions/{id}")).await?;
        serde_json::from_value(v).map_err(|e| StripeApiError::Shape(e.to_string()))
    }
}
