//! The long-running worker: opens the store, applies due cycle work periodically, and stops cleanly on
//! Ctrl-C or SIGTERM, finishing what is in flight.

use crate::config::Config;
use crate::store::Store;
use std::time::Duration;

pub async fn run(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = Store::open(&config.database_url).await?;
    tracing::info!(database = %crate::cli::redact(&config.database_url), "billing-worker started");
    let mut interval = tokio::time::interval(Duration::from_secs(config.tick_interval_secs));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = interval.tick() => {
                match store.tick(crate::time::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(accounts = n, "due work applied"),
                    Err(e) => tracing::warn!(error = %e, "tick failed; retrying at the next interval"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    store.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
