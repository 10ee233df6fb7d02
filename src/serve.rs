//! The long-running worker: the HTTP server, and in the background the periodic tick that applies due cycle
//! work and retries events waiting for a fact. Stops on Ctrl-C or SIGTERM, finishing requests in flight.

use crate::BoxError;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{AppState, router};
use crate::queue::{Broker, Names};
use crate::startup::Services;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A running server (for tests and `main`).
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The broker side, when configured (tests reach its fault hook through it).
    pub broker: Option<Broker>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// Stop accepting, finish requests in flight, stop the background work.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub fn state(config: Config, store: Store, clock: Clock) -> Result<AppState, BoxError> {
    let Services { store, intake, commander } = crate::startup::services(&config, store)?;
    Ok(AppState {
        store,
        intake,
        commander,
        config: Arc::new(config),
        clock,
        metrics: crate::metrics::global(),
        broker: crate::queue::BrokerState::default(),
    })
}

/// Open the store, bind `config.listen` (port 0 picks one) and serve until [`Running::shutdown`].
pub async fn start(config: Config, clock: Clock) -> Result<Running, BoxError> {
    let store = crate::startup::open_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let tick_every = Duration::from_secs(config.tick_interval_secs);
    let state = state(config, store, clock)?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(background(state.clone(), tick_every, stopped.clone()));
    let broker = broker(&state);
    if let Some(b) = broker.clone() {
        tokio::spawn(b.run(stopped.clone()));
    }
    let app = router(state.clone());
    let mut stopped_http = stopped;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped_http.changed().await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(Running { addr, state, stop, task, broker })
}

/// The RabbitMQ side, when `AMQP_URL` is set.
fn broker(state: &AppState) -> Option<Broker> {
    let url = state.config.amqp_url.clone()?;
    state.broker.set_down();
    Some(Broker {
        url,
        names: Names::new(&state.config.amqp_prefix, &state.config.retry_delays_ms),
        prefetch: state.config.amqp_prefetch,
        commander: state.commander.clone(),
        clock: state.clock.clone(),
        state: state.broker.clone(),
        crash_before_ack: Default::default(),
    })
}

async fn background(state: AppState, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = interval.tick() => {
                let now = state.clock.now();
                match state.store.tick(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(accounts = n, "due work applied"),
                    Err(e) => tracing::warn!(error = %e, "tick failed; retrying at the next interval"),
                }
                if let Err(e) = crate::retry::due(&state.intake, &state.commander, now).await {
                    tracing::warn!(error = %e, "retry of waiting events failed");
                }
            }
        }
    }
}

pub async fn run(config: Config) -> Result<(), BoxError> {
    tracing::info!(database = %crate::config::redact(&config.database_url), "billing-worker starting");
    let running = start(config, Clock::system()).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    let store = running.state.store.clone();
    running.shutdown().await;
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
