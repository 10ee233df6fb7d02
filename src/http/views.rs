//! Response and request bodies of the HTTP API, with their OpenAPI schemas. Instants are RFC 3339 strings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct LotView {
    pub source: String,
    pub remaining: i64,
    /// RFC 3339; null: never.
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CycleView {
    pub start: String,
    pub end: String,
}

#[derive(Serialize, ToSchema)]
pub struct Balance {
    pub account: String,
    pub plan: String,
    /// Spendable credits (held credits are not included).
    pub balance: i64,
    pub held: i64,
    pub lots: Vec<LotView>,
    pub cycle: Option<CycleView>,
    pub expiring_at_cycle_end: i64,
    /// How many of each operation the balance affords.
    pub affordable: BTreeMap<String, i64>,
}

#[derive(Deserialize, ToSchema)]
pub struct QuoteRequest {
    pub operation: String,
    /// Default 1.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Quote {
    pub operation: String,
    pub quantity: i64,
    pub credits: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct DebitRequest {
    pub operation: String,
    /// Default 1.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: Option<i64>,
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: String,
    /// Required: a repeat with the same key gets the first answer; with another body, 409.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Debit {
    pub debit_id: String,
    pub credits: i64,
    pub balance: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct HoldRequest {
    pub operation: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: Option<i64>,
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: String,
    /// Optional: a repeat with the same key returns the same hold.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Seconds until an uncaptured hold is released by itself; default 900, at most 86400.
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HoldView {
    pub hold_id: String,
    pub account: String,
    /// `active`, `captured`, `released` or `expired`.
    pub status: String,
    pub credits: i64,
    pub expires_at: String,
    pub balance: i64,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct CaptureRequest {
    /// Credits to spend, at most the amount held; default: all of it.
    #[schema(minimum = 0)]
    pub credits: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub amount: i64,
    pub lot_id: Option<String>,
    pub balance_after: i64,
    pub cause: String,
    pub user_id: Option<String>,
    pub operation: Option<String>,
    pub shortfall: i64,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    pub account: String,
    pub entries: Vec<EntryView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub account: String,
    pub from: String,
    pub to: String,
    pub group_by: String,
    pub rows: Vec<crate::store::UsageRow>,
}

#[derive(Serialize, ToSchema)]
pub struct Entitlements {
    pub account: String,
    pub plan: String,
    /// null: unlimited.
    pub seats: Option<u32>,
    /// null: unlimited.
    pub storage_days: Option<u32>,
    pub max_resolution: String,
    pub priority: String,
    pub analytics: bool,
    pub api_access: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct MemberRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Members {
    pub account: String,
    pub members: Vec<String>,
    pub seats: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
pub struct AdjustmentRequest {
    /// Grant (> 0) or removal (< 0, never below zero); not 0.
    #[schema(minimum = -1000000000, maximum = 1000000000)]
    pub credits: i64,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Adjustment {
    /// Credits actually granted (> 0) or removed (< 0).
    pub credits: i64,
    pub balance: i64,
}

#[derive(Serialize, ToSchema)]
pub struct FailedEvent {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `failed`, or `waiting` for a fact.
    pub status: String,
    pub error: Option<String>,
    pub attempts: i64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Serialize, ToSchema)]
pub struct FailedEvents {
    pub items: Vec<FailedEvent>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Replay {
    /// `applied`, `already_applied`, `waiting` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CommandResult {
    pub id: String,
    /// `applied`, `ignored`, `waiting` or `failed`.
    pub status: String,
    pub duplicate: bool,
    pub detail: Option<String>,
    pub credits: Option<i64>,
    pub balance: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct OutEvent {
    /// The outbox position: pass the last one as `after` for the next page.
    pub cursor: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub account: Option<String>,
    pub published: bool,
    /// The event as published: `{id, type, account, at, ...}`.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<OutEvent>,
    pub next_cursor: Option<String>,
}
