//! Typed settings from command-line flags and environment variables (flags win).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

mod derived;
mod fair_use;

pub use derived::WebSocketLimits;
pub use fair_use::FairUseSettings;

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
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Redis URL; when unset an in-process broker is used (single instance).
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// RabbitMQ URL (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`): the relay publishes to
    /// RabbitMQ instead; one broker at a time, so not with `--redis-url`.
    #[arg(long, env = "AMQP_URL", global = true, hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// Durable topic exchange the relay publishes to on RabbitMQ (declared at start).
    #[arg(
        long,
        env = "STOCKROOM_AMQP_EXCHANGE",
        default_value = "inventory.events",
        global = true
    )]
    pub amqp_exchange: String,

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

    /// How long relay leadership outlives its holder's silence, in milliseconds: a frozen or
    /// cut-off holder's term ends after this (SQLite: the lease row expires; PostgreSQL: the
    /// server ends the holder's idle session, and any transaction of the holder left open).
    /// A killed holder's leadership on PostgreSQL ends at once, with its connection.
    #[arg(
        long,
        env = "STOCKROOM_RELAY_LEASE_MS",
        default_value_t = 5000,
        global = true
    )]
    pub relay_lease_ms: u64,

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

    /// Rendered events each shared live subscription keeps for subscribers that read behind the
    /// newest; one further behind replays from the log by itself.
    #[arg(
        long,
        env = "STOCKROOM_LIVE_RING",
        default_value_t = 1024,
        global = true
    )]
    pub live_ring: usize,

    /// Most subscriptions open at once on one WebSocket connection; more are refused with
    /// `BAD_USER_INPUT`.
    #[arg(
        long,
        env = "STOCKROOM_WS_MAX_SUBSCRIPTIONS",
        default_value_t = 100,
        global = true
    )]
    pub ws_max_subscriptions: usize,

    /// How long a WebSocket client has to send `connection_init`, in milliseconds; then the
    /// connection is closed with 4408.
    #[arg(
        long,
        env = "STOCKROOM_WS_INIT_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub ws_init_timeout_ms: u64,

    /// Interval of the server's keepalive (`ping` on `graphql-transport-ws`, `ka` on
    /// `graphql-ws`), in milliseconds; 0 sends none.
    #[arg(
        long,
        env = "STOCKROOM_WS_KEEPALIVE_MS",
        default_value_t = 15_000,
        global = true
    )]
    pub ws_keepalive_ms: u64,

    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(
        long,
        env = "STOCKROOM_WS_MAX_MESSAGE_BYTES",
        default_value_t = 64 * 1024,
        global = true
    )]
    pub ws_max_message_bytes: usize,

    /// Approximate maximum length of the Redis stream (`XADD MAXLEN ~`); 0 keeps everything.
    #[arg(
        long,
        env = "STOCKROOM_STREAM_MAXLEN",
        default_value_t = 1_000_000,
        global = true
    )]
    pub stream_maxlen: usize,

    /// Read more `role:key` pairs (one per line or comma-separated) from this file.
    #[arg(long, env = "STOCKROOM_API_KEYS_FILE", global = true)]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Origins allowed by CORS (comma-separated, e.g. `https://dash.example.com`); `*` allows
    /// any; unset allows none (same-origin only).
    #[arg(long, env = "STOCKROOM_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,

    /// Key that `GET /metrics` requires (as `Authorization: Bearer KEY`; an admin API key is
    /// accepted too). Unset: `/metrics` is open.
    #[arg(
        long,
        env = "STOCKROOM_METRICS_KEY",
        global = true,
        hide_env_values = true
    )]
    pub metrics_key: Option<String>,

    /// Largest GraphQL response body, in bytes; a larger one is replaced by a
    /// `BAD_USER_INPUT` error asking for fewer items or fields.
    #[arg(
        long,
        env = "STOCKROOM_MAX_RESPONSE_BYTES",
        default_value_t = 4 * 1024 * 1024,
        global = true
    )]
    pub max_response_bytes: usize,

    /// Deepest GraphQL selection accepted (the playground's introspection query is 15 deep).
    #[arg(long, env = "STOCKROOM_MAX_DEPTH", default_value_t = 15, global = true)]
    pub max_depth: usize,

    /// Largest GraphQL query complexity accepted: each field counts 1, and a list field counts
    /// its selection once per item it may return (`first` of a connection, default 20; 20 for
    /// `stores` and `Product.stockLevels`), so nested lists multiply.
    #[arg(
        long,
        env = "STOCKROOM_MAX_COMPLEXITY",
        default_value_t = 20_000,
        global = true
    )]
    pub max_complexity: usize,

    /// Most fields in one GraphQL document once its fragments are expanded (each fragment
    /// counts once per place it is spread); checked before validation, in time linear in the
    /// document.
    #[arg(
        long,
        env = "STOCKROOM_MAX_FIELDS",
        default_value_t = 2_000,
        global = true
    )]
    pub max_fields: usize,

    /// Most aliased fields in one GraphQL document.
    #[arg(
        long,
        env = "STOCKROOM_MAX_ALIASES",
        default_value_t = 30,
        global = true
    )]
    pub max_aliases: usize,

    /// Largest page size (`first`) of connections; at most 100.
    #[arg(
        long,
        env = "STOCKROOM_MAX_PAGE_SIZE",
        default_value_t = 100,
        global = true
    )]
    pub max_page_size: i32,

    /// Most HTTP connections open at once (WebSockets included); never more than the
    /// open-files limit (raised to its hard limit at start) less 128.
    #[arg(
        long,
        env = "STOCKROOM_MAX_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_connections: usize,

    /// Most connections open at once from one client address; 0: no per-address cap (set 0
    /// behind a reverse proxy, where every client shares the proxy's address).
    #[arg(
        long,
        env = "STOCKROOM_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256,
        global = true
    )]
    pub max_connections_per_address: usize,

    /// Longest wait for a complete request head, in milliseconds: on a new connection
    /// (including a WebSocket handshake) and on a keep-alive connection between requests.
    #[arg(
        long,
        env = "STOCKROOM_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub header_read_timeout_ms: u64,

    /// Largest request body, in bytes.
    #[arg(long, env = "STOCKROOM_MAX_BODY_BYTES", default_value_t = 256 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Longest time a request may take, in milliseconds.
    #[arg(
        long,
        env = "STOCKROOM_REQUEST_TIMEOUT_MS",
        default_value_t = 15_000,
        global = true
    )]
    pub request_timeout_ms: u64,

    /// Most operations in one batched (JSON array) request; 0 refuses batches.
    #[arg(long, env = "STOCKROOM_MAX_BATCH", default_value_t = 0, global = true)]
    pub max_batch: usize,

    /// Answer introspection queries (the playground needs them).
    #[arg(long, env = "STOCKROOM_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,

    /// Group commit on SQLite: concurrent writes share one transaction (each in a savepoint, each
    /// with its own outcome). Ignored on PostgreSQL.
    #[arg(long, env = "STOCKROOM_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub group_commit: bool,

    /// Decide concurrent single-line reservations together: one read and one guarded update per
    /// level for the whole batch, each request keeping its own outcome.
    #[arg(long, env = "STOCKROOM_BATCH_RESERVATIONS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub batch_reservations: bool,

    /// Most writes in one group transaction (and reservations in one batch).
    #[arg(
        long,
        env = "STOCKROOM_GROUP_COMMIT_MAX",
        default_value_t = 256,
        global = true
    )]
    pub group_commit_max: usize,

    /// Log every SQL statement (target `sqlx::query`, level info); for diagnosis and tests.
    #[arg(
        long,
        env = "STOCKROOM_LOG_SQL",
        default_value_t = false,
        global = true
    )]
    pub log_sql: bool,

    /// Caps, cost buckets and load shedding.
    #[command(flatten)]
    pub fair_use: FairUseSettings,

    /// Log as JSON lines instead of text.
    #[arg(
        long,
        env = "STOCKROOM_LOG_JSON",
        default_value_t = false,
        global = true
    )]
    pub log_json: bool,
}
