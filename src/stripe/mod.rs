//! Stripe: webhook signatures, event parsing tolerant of both API shapes, the mapping of events to ledger
//! ops, the inbox flow that applies each event once, and the small API client.

pub mod api;
pub mod event;
pub mod mapping;
pub mod prices;
pub mod process;
pub mod signature;

pub use process::{Intake, StripeEvents};
