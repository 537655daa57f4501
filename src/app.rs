//! Builds the application: database, broker, relay, feed, sweeper, schema and router; runs it
//! until SIGINT/SIGTERM, then shuts down in order.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ApiKeys;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::domain::reservations;
use crate::events::broker::{AmqpBroker, Broker, MemoryBroker, RedisBroker};
use crate::events::feed::Feed;
use crate::events::relay::{self, RelayConfig};
use crate::graphql;
use crate::state::AppState;

/// How long shutdown waits for in-flight requests and connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A startup failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct StartupError {
    context: &'static str,
    message: String,
}

fn startup(context: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> StartupError {
    move |e| StartupError {
        context,
        message: e.to_string(),
    }
}

/// `stockroom migrate`.
pub async fn migrate(settings: &Settings) -> Result<(), StartupError> {
    let conn = db::connect(settings)
        .await
        .map_err(|e| startup("connecting to the database")(&e))?;
    db::migrate(&conn)
        .await
        .map_err(|e| startup("migrating")(&e))
}

/// `stockroom schema`: the SDL.
pub fn schema_sdl() -> String {
    graphql::build_schema(None, &graphql::Limits::default()).sdl()
}

/// The configured keys. Fails closed: a key option that is given but yields no key refuses to
/// start instead of starting open.
fn api_keys(settings: &Settings) -> Result<ApiKeys, StartupError> {
    let spec = settings.api_keys.as_deref().unwrap_or_default();
    let mut keys = ApiKeys::parse(spec).map_err(|e| startup("reading the API keys")(&e))?;
    if let Some(path) = &settings.api_keys_file {
        let text =
            std::fs::read_to_string(path).map_err(|e| startup("reading --api-keys-file")(&e))?;
        keys.add_file(&text, &path.display().to_string())
            .map_err(|e| startup("reading the API keys")(&e))?;
    }
    let configured = settings.api_keys.is_some() || settings.api_keys_file.is_some();
    if keys.is_open() && configured {
        return Err(startup("reading the API keys")(
            &"--api-keys / --api-keys-file was given but holds no key; refusing to start \
              without authentication (unset both for the open, loopback-only mode)",
        ));
    }
    if keys.is_open() && !settings.listen.ip().is_loopback() {
        let generated = uuid::Uuid::new_v4().simple().to_string();
        println!(
            "no API keys configured and listening beyond loopback: generated admin key {generated}"
        );
        return Ok(ApiKeys::single_admin(&generated));
    }
    if keys.is_open() {
        tracing::warn!("no API keys configured: every local caller is admin (loopback only)");
    }
    Ok(keys)
}

fn broker(settings: &Settings) -> Result<Arc<dyn Broker>, StartupError> {
    match (&settings.redis_url, &settings.amqp_url) {
        (Some(_), Some(_)) => Err(startup("choosing the broker")(
            &"both --redis-url and --amqp-url are set; Stockroom publishes to one broker at a \
              time: unset one of them",
        )),
        (Some(url), None) => {
            let broker = RedisBroker::new(url, settings.stream.clone(), settings.stream_maxlen)
                .map_err(|e| startup("reading --redis-url")(&e))?;
            Ok(Arc::new(broker))
        }
        (None, Some(url)) => {
            let broker = AmqpBroker::new(url, settings.amqp_exchange.clone())
                .map_err(|e| startup("reading --amqp-url")(&e))?;
            Ok(Arc::new(broker))
        }
        (None, None) => Ok(Arc::new(MemoryBroker::new(10_000))),
    }
}

fn relay_config(settings: &Settings) -> RelayConfig {
    RelayConfig {
        batch: settings.relay_batch.max(1),
        poll: Duration::from_millis(settings.relay_poll_ms.max(10)),
        backoff_base: Duration::from_millis(settings.relay_backoff_base_ms.max(1)),
        backoff_cap: Duration::from_millis(settings.relay_backoff_cap_ms.max(1)),
        max_attempts: settings.relay_max_attempts.max(1),
        lease_ttl: settings.relay_lease(),
        database_url: settings.database_url.clone(),
    }
}

fn limits(settings: &Settings) -> graphql::Limits {
    graphql::Limits {
        max_depth: settings.max_depth,
        max_complexity: settings.max_complexity,
        max_aliases: settings.max_aliases,
        max_fields: settings.max_fields,
        introspection: settings.introspection,
        max_page_size: settings.max_page_size,
    }
}

fn install_metrics() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok().map(|_| handle)
}

/// Expires overdue reservations every `interval`, until shutdown.
fn spawn_sweeper(db: Db, settings: &Settings, shutdown: CancellationToken, tasks: &TaskTracker) {
    let interval = settings.sweep_interval();
    let batch = settings.sweep_batch.max(1);
    tasks.spawn(async move {
        loop {
            let swept = db
                .write(move |txn| Box::pin(reservations::expire_due(txn, batch)))
                .await;
            match swept {
                Ok(n) if n as u64 == batch => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "expiry sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// A built service: the router plus its background tasks, ready to be served.
pub struct Service {
    /// Every HTTP and WebSocket route.
    pub router: axum::Router,
    /// Cancelled to stop accepting requests and end subscriptions.
    pub shutdown: CancellationToken,
    /// Cancelled after the last request, to stop the relay (after a final flush) and the sweeper.
    background: CancellationToken,
    /// Every background task: relay, broker watch, feed reader, sweeper, checkpointer, the
    /// group writer and the reservation batcher.
    tasks: TaskTracker,
    /// The WebSocket connections' runtime (lower priority; see `http::websocket`).
    connections: tokio::runtime::Runtime,
}

/// Connects, migrates and starts the relay, feed and sweeper; returns the router to serve.
pub async fn build(settings: &Settings) -> Result<Service, StartupError> {
    let metrics = install_metrics();
    let keys = api_keys(settings)?;
    let conn = db::connect(settings)
        .await
        .map_err(|e| startup("connecting to the database")(&e))?;
    db::migrate(&conn)
        .await
        .map_err(|e| startup("migrating")(&e))?;
    let broker = broker(settings)?;
    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let committed = Arc::new(Notify::new());
    let relay_config = relay_config(settings);
    let tasks = TaskTracker::new();
    let feed = Feed::start(conn.clone(), broker.clone(), shutdown.clone(), &tasks)
        .await
        .map_err(|e| startup("starting the feed")(&e))?;
    db::spawn_checkpointer(conn.clone(), background.clone(), &tasks);
    db::statistics::spawn_refresher(conn.clone(), background.clone(), &tasks);
    let mut db = Db::new(conn, committed.clone());
    if settings.group_commit && settings.is_sqlite() {
        db = db.with_group_commit(settings.group_commit_max, &tasks);
    }
    let relay_handle = relay::RelayHandle::default();
    relay::spawn(
        db.clone(),
        broker.clone(),
        relay_config,
        committed.clone(),
        &relay_handle,
        background.clone(),
        &tasks,
    )
    .map_err(|e| startup("starting the relay")(&e))?;
    spawn_sweeper(db.clone(), settings, background.clone(), &tasks);
    let websocket = settings.websocket();
    let reservations = settings.batch_reservations.then(|| {
        crate::batcher::ReservationBatcher::spawn(db.clone(), settings.group_commit_max, &tasks)
    });
    let saturation = crate::fair_use::Saturation::default();
    tasks.spawn(saturation.clone().probe(background.clone()));
    let fair_use = crate::fair_use::FairUse::new(settings.fair_use.limits(), saturation);
    let state = AppState {
        db,
        broker,
        feed,
        websocket,
        reservations,
        keys,
        fair_use,
        relay: relay_handle,
        metrics,
    };
    let limits = limits(settings);
    let schema =
        graphql::Gateway::new(graphql::build_schema(Some(state.clone()), &limits), &limits);
    let live = graphql::live::Live::start(
        schema.clone(),
        state.feed.clone(),
        state.fair_use.clone(),
        settings.live_ring,
        shutdown.clone(),
        &tasks,
    );
    let connections = crate::http::websocket::connection_runtime()
        .map_err(|e| startup("starting the WebSocket runtime")(&e))?;
    let router = crate::http::router(
        state,
        schema,
        live,
        connections.handle().clone(),
        crate::http::HttpLimits::from_settings(settings),
    );
    Ok(Service {
        router,
        shutdown,
        background,
        tasks,
        connections,
    })
}

impl Service {
    /// Stops the background work: the relay flushes once more, the sweeper and feed end; with
    /// the router gone, the group writer and the batcher end after their last writes. Waits for
    /// every task (at most the grace period).
    pub async fn stop_background(self) {
        let Service {
            router,
            shutdown,
            background,
            tasks,
            connections,
        } = self;
        shutdown.cancel();
        background.cancel();
        drop(router);
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(left = tasks.len(), "background tasks did not stop in time");
        }
        // Connections ended with the server; whatever is left there is dropped.
        connections.shutdown_background();
    }
}

/// `stockroom serve`: migrate, bind, serve until SIGINT/SIGTERM; then stop accepting, let
/// in-flight requests finish (bounded), end subscriptions, flush the relay, exit.
pub async fn serve(settings: Settings) -> Result<(), StartupError> {
    let service = build(&settings).await?;
    let limits = crate::http::server::ConnectionLimits {
        max_connections: crate::http::server::connection_cap(settings.max_connections.max(1)),
        max_per_address: settings.max_connections_per_address,
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms.max(100)),
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| startup("binding --listen")(&e))?;
    let address = listener
        .local_addr()
        .map_err(|e| startup("binding --listen")(&e))?;
    println!("listening on http://{address}");
    tracing::info!(%address, "listening on http://{address}");

    let shutdown = service.shutdown.clone();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    crate::http::server::serve(
        listener,
        service.router.clone(),
        limits,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
    service.stop_background().await;
    tracing::info!("stopped");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
