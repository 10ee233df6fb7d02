//! The long-running worker: the HTTP server, and in the background the periodic tick that applies due cycle
//! work and retries events waiting for a fact. Stops on Ctrl-C or SIGTERM in a fixed order within a deadline
//! (see [`run`]), so a rolling upgrade or a scale-down loses nothing and leaves no task half done.

use crate::BoxError;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{AppState, router};
use crate::queue::{Broker, Names};
use crate::startup::Services;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running server (for tests and `main`).
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The broker side, when configured (tests reach its fault hook through it).
    pub broker: Option<Broker>,
    stop: watch::Sender<bool>,
    http: JoinHandle<Result<(), std::io::Error>>,
    /// The background tasks (tick, broker), awaited at the stop.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// Stop accepting, finish requests in flight, stop the background work (the store stays open).
    pub async fn shutdown(self) {
        self.stop(Duration::ZERO).await;
    }

    /// The shutdown sequence, up to the store: `/readyz` answers 503 at once and the worker goes on serving for
    /// `delay` (so load balancers stop sending it work); then HTTP stops accepting and finishes the requests in
    /// flight, the consumer takes no new message and settles the ones it holds (the rest go back to the broker
    /// unacked when the connection closes), the tick and the publisher end; every task is awaited.
    pub async fn stop(self, delay: Duration) {
        self.state.draining.store(true, Ordering::SeqCst);
        if !delay.is_zero() {
            tracing::info!(delay_secs = delay.as_secs_f64(), "not ready; serving on while load balancers notice");
            tokio::time::sleep(delay).await;
        }
        let _ = self.stop.send(true);
        match self.http.await {
            Ok(Ok(())) => tracing::info!("HTTP drained"),
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::error!(error = %e, "HTTP server task panicked"),
        }
        for (task, handle) in self.tasks {
            match handle.await {
                Ok(()) => tracing::info!(task, "stopped"),
                Err(e) => tracing::error!(task, error = %e, "task panicked"),
            }
        }
    }
}

pub fn state(config: Config, store: Store, clock: Clock) -> Result<AppState, BoxError> {
    let Services { store, intake, commander } = crate::startup::services(&config, store)?;
    Ok(AppState::new(crate::http::Shared {
        store,
        intake,
        commander,
        config: Arc::new(config),
        clock,
        metrics: crate::metrics::global(),
        broker: crate::queue::BrokerState::default(),
        draining: Default::default(),
    }))
}

/// Open the store, bind `config.listen` (port 0 picks one) and serve until [`Running::shutdown`].
pub async fn start(config: Config, clock: Clock) -> Result<Running, BoxError> {
    let store = crate::startup::open_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let tick_every = Duration::from_secs(config.tick_interval_secs);
    let state = state(config, store, clock)?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![("tick", tokio::spawn(background(state.clone(), tick_every, stopped.clone())))];
    let broker = broker(&state);
    if let Some(b) = broker.clone() {
        tasks.push(("broker", tokio::spawn(b.run(stopped.clone()))));
    }
    let console = state.config.console.then(|| ("/console", crate::console::routes()));
    let app = router(state.clone(), console);
    let mut stopped_http = stopped;
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped_http.changed().await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(Running { addr, state, stop, http, tasks, broker })
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

/// Serve until Ctrl-C or SIGTERM, then shut down within `BILLING_SHUTDOWN_SECS`: the whole sequence of
/// [`Running::stop`], then the writer finishes what it was given and the pool closes. Past the deadline the
/// process ends anyway, with an error: nothing is lost, because nothing was acknowledged before its commit.
pub async fn run(config: Config) -> Result<(), BoxError> {
    tracing::info!(database = %crate::config::redact(&config.database_url), "billing-worker starting");
    let deadline = Duration::from_secs(config.shutdown_secs);
    let delay = Duration::from_secs(config.shutdown_delay_secs);
    if let Some(url) = &config.amqp_url {
        crate::queue::check_tls(url).await?;
    }
    let running = start(config, Clock::system()).await?;
    shutdown_signal().await;
    tracing::info!(deadline_secs = deadline.as_secs(), "shutting down");
    let store = running.state.store.clone();
    let sequence = async move {
        running.stop(delay).await;
        store.close().await;
    };
    match tokio::time::timeout(deadline, sequence).await {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => Err(format!(
            "shutdown took longer than BILLING_SHUTDOWN_SECS ({} s); exiting with work unfinished (nothing \
             unacknowledged is lost: it is retried by its sender)",
            deadline.as_secs()
        )
        .into()),
    }
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
