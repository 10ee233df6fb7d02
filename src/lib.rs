//! billing-worker: the prepaid credit ledger of an AI product.
//!
//! `ledger` holds the credit rules as pure code; `store` keeps them in SQLite or PostgreSQL; `config` reads the
//! environment and the catalog; `cli` is the command line. `main` only calls [`cli::run`].

/// The error of the outermost layers (start, command line), where any cause ends the same way: printed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub mod catalog;
pub mod cli;
pub mod cli_ops;
pub mod clock;
pub mod commands;
pub mod config;
pub mod console;
pub mod domain;
pub mod http;
pub mod inbox;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod serve;
pub mod startup;
pub mod store;
pub mod stripe;
pub mod time;
