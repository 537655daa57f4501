//! Typed settings from command-line flags and environment variables (flags win).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `stockroom`: an inventory service with a GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "stockroom", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands of `stockroom`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run migrations, then serve HTTP + WebSocket, the outbox relay and the expiry sweeper.
    Serve,
    /// Print the GraphQL SDL.
    Schema,
    /// Apply pending migrations and exit.
    Migrate,
}

/// Every setting of the service; each flag has an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to bind; port 0 picks a free port.
    #[arg(
        long,
        env = "STOCKROOM_LISTEN",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub listen: SocketAddr,

    /// SeaORM database URL: `sqlite://…` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://stockroom.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// Redis URL; when unset an in-process broker is used (single instance).
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Redis stream key the relay publishes to.
    #[arg(
        long,
        env = "STOCKROOM_STREAM",
        default_value = "inventory-events",
        global = true
    )]
    pub stream: String,

    /// Comma-separated `role:key` pairs; role is `read`, `write` or `admin`.
    #[arg(
        long,
        env = "STOCKROOM_API_KEYS",
        global = true,
        hide_env_values = true
    )]
    pub api_keys: Option<String>,

    /// Largest database connection pool.
    #[arg(long, env = "STOCKROOM_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: u32,

    /// How often the expiry sweeper looks for overdue reservations, in milliseconds.
    #[arg(
        long,
        env = "STOCKROOM_SWEEP_INTERVAL_MS",
        default_value_t = 250,
        global = true
    )]
    pub sweep_interval_ms: u64,

    /// Most reservations the sweeper expires in one transaction.
    #[arg(
        long,
        env = "STOCKROOM_SWEEP_BATCH",
        default_value_t = 200,
        global = true
    )]
    pub sweep_batch: u64,

    /// Most events the relay positions and publishes in one round.
    #[arg(
        long,
        env = "STOCKROOM_RELAY_BATCH",
        default_value_t = 1000,
        global = true
    )]
    pub relay_batch: u64,

    /// Fallback poll interval of the relay, in milliseconds (commits wake it at once).
    #[arg(
        long,
        env = "STOCKROOM_RELAY_POLL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub relay_poll_ms: u64,

    /// First retry delay of the relay after a broker failure, in milliseconds.
    #[arg(
        long,
        env = "STOCKROOM_RELAY_BACKOFF_BASE_MS",
        default_value_t = 100,
        global = true
    )]
    pub relay_backoff_base_ms: u64,

    /// Longest retry delay of the relay, in milliseconds.
    #[arg(
        long,
        env = "STOCKROOM_RELAY_BACKOFF_CAP_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub relay_backoff_cap_ms: u64,

    /// Attempts before an event the broker rejects is marked dead.
    #[arg(
        long,
        env = "STOCKROOM_RELAY_MAX_ATTEMPTS",
        default_value_t = 5,
        global = true
    )]
    pub relay_max_attempts: i32,

    /// Approximate maximum length of the Redis stream (`XADD MAXLEN ~`); 0 keeps everything.
    #[arg(
        long,
        env = "STOCKROOM_STREAM_MAXLEN",
        default_value_t = 1_000_000,
        global = true
    )]
    pub stream_maxlen: usize,

    /// Log every SQL statement (target `sqlx::query`, level info); for diagnosis and tests.
    #[arg(
        long,
        env = "STOCKROOM_LOG_SQL",
        default_value_t = false,
        global = true
    )]
    pub log_sql: bool,

    /// Log as JSON lines instead of text.
    #[arg(
        long,
        env = "STOCKROOM_LOG_JSON",
        default_value_t = false,
        global = true
    )]
    pub log_json: bool,
}

impl Settings {
    /// Sweeper interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(10))
    }

    /// True when the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}
