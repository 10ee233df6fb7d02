//! The integration tests, in one binary (linking the crate once, not once per file): the store on SQLite and
//! PostgreSQL, the HTTP API, Stripe webhooks and their orders, commands, RabbitMQ, and the write path under
//! concurrency. The broker restart test is a binary of its own (it stops the shared broker).

mod common;

mod amqp_tls;
mod api;
mod commands_http;
mod console;
mod console_browser;
mod deploy_files;
mod ledger_metrics;
mod logs;
mod middleware;
mod money_orders;
mod money_rules;
mod optimistic;
mod parallel;
mod queue;
mod shutdown;
mod store;
mod stripe_api;
mod structure;
mod tls;
mod webhook_input;
mod webhook_order;
mod webhooks;
