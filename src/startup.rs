//! The one place that builds the application from its configuration: the store (migrated, with the writer's
//! settings), the Stripe API client, the intake of Stripe events and the commander. `serve`, the command line
//! and the tests all start from here.
//!
//! Why one place: the same parts built twice drift apart (a setting honoured by the server and forgotten by
//! `replay`); and the modules that use them need not know one another.

use crate::BoxError;
use crate::commands::Commander;
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::stripe::Intake;
use crate::stripe::api::StripeApi;
use std::sync::Arc;

/// The parts that decide events and commands, over one store.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub intake: Intake,
    pub commander: Commander,
}

/// The store as the configuration wants it: migrated, with its writer's and lock settings.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open_with(&config.database_url, config.store_options()).await
}

/// The intake and the commander of `config`, over `store`.
pub fn services(config: &Config, store: Store) -> Result<Services, BoxError> {
    let api = match &config.stripe_api_key {
        Some(key) => Some(StripeApi::new(&config.stripe_api_base, key)?),
        None => None,
    };
    let catalog = Arc::new(config.catalog.clone());
    let horizon = config.wait_horizon_secs as i64;
    let intake = Intake::new(store.clone(), catalog.clone(), api, horizon);
    let commander = Commander::new(
        store.clone(),
        catalog,
        intake.clone(),
        config.webhook_secrets.clone(),
        config.queue_require_signature,
        horizon,
    );
    Ok(Services { store, intake, commander })
}

/// Open the store and build the services.
pub async fn build(config: &Config) -> Result<Services, BoxError> {
    services(config, open_store(config).await?)
}
