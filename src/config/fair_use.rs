//! The fair-use settings: caps per key and per process, cost buckets per role, load shedding.
//! Every cap takes 0 for "no cap". See `docs/OPERATIONS.md` ("Fair use").

use std::time::Duration;

use clap::Args;

use crate::fair_use::{FairUseLimits, RoleRate};

/// Caps, cost rates and load shedding.
#[derive(Debug, Clone, Args)]
pub struct FairUseSettings {
    /// Most WebSocket connections open at once on this process.
    #[arg(
        long,
        env = "STOCKROOM_WS_MAX_CONNECTIONS",
        default_value_t = 5_000,
        global = true
    )]
    pub ws_max_connections: usize,

    /// Most WebSocket connections open at once with one API key.
    #[arg(
        long,
        env = "STOCKROOM_WS_MAX_CONNECTIONS_PER_KEY",
        default_value_t = 100,
        global = true
    )]
    pub ws_max_connections_per_key: usize,

    /// Most subscriptions running at once on this process (all connections).
    #[arg(
        long,
        env = "STOCKROOM_MAX_SUBSCRIPTIONS",
        default_value_t = 50_000,
        global = true
    )]
    pub max_subscriptions: usize,

    /// Most subscriptions running at once with one API key (all its connections). Raise it for
    /// a key shared by many dashboards (each uses a few).
    #[arg(
        long,
        env = "STOCKROOM_MAX_SUBSCRIPTIONS_PER_KEY",
        default_value_t = 300,
        global = true
    )]
    pub max_subscriptions_per_key: usize,

    /// Most distinct live selections (subscriptions that differ in document, operation or
    /// variables) on this process: each is rendered once per event and keeps its own ring.
    #[arg(
        long,
        env = "STOCKROOM_MAX_LIVE_SELECTIONS",
        default_value_t = 1_000,
        global = true
    )]
    pub max_live_selections: usize,

    /// Most distinct live selections one API key may create.
    #[arg(
        long,
        env = "STOCKROOM_MAX_LIVE_SELECTIONS_PER_KEY",
        default_value_t = 50,
        global = true
    )]
    pub max_live_selections_per_key: usize,

    /// Cost points a `read` key's bucket gains per second; 0: no cost limit for `read` keys.
    #[arg(
        long,
        env = "STOCKROOM_COST_RATE_READ",
        default_value_t = 5_000,
        global = true
    )]
    pub cost_rate_read: u64,

    /// Size of a `read` key's bucket (its largest burst).
    #[arg(
        long,
        env = "STOCKROOM_COST_BURST_READ",
        default_value_t = 50_000,
        global = true
    )]
    pub cost_burst_read: u64,

    /// Cost points a `write` key's bucket gains per second; 0 (the default): no cost limit.
    /// Write keys belong to trusted services such as checkout, which a limit meant for
    /// dashboards must not slow.
    #[arg(
        long,
        env = "STOCKROOM_COST_RATE_WRITE",
        default_value_t = 0,
        global = true
    )]
    pub cost_rate_write: u64,

    /// Size of a `write` key's bucket.
    #[arg(
        long,
        env = "STOCKROOM_COST_BURST_WRITE",
        default_value_t = 400_000,
        global = true
    )]
    pub cost_burst_write: u64,

    /// Cost points an `admin` key's bucket gains per second; 0 (the default): no cost limit.
    #[arg(
        long,
        env = "STOCKROOM_COST_RATE_ADMIN",
        default_value_t = 0,
        global = true
    )]
    pub cost_rate_admin: u64,

    /// Size of an `admin` key's bucket.
    #[arg(
        long,
        env = "STOCKROOM_COST_BURST_ADMIN",
        default_value_t = 400_000,
        global = true
    )]
    pub cost_burst_admin: u64,

    /// Shed load when the request runtime runs this many milliseconds late (smoothed): new
    /// subscriptions and expensive reads are refused until it catches up; 0: never shed.
    #[arg(
        long,
        env = "STOCKROOM_SHED_LAG_MS",
        default_value_t = 100,
        global = true
    )]
    pub shed_lag_ms: u64,

    /// A read costing more than this counts as expensive while load is shed.
    #[arg(
        long,
        env = "STOCKROOM_SHED_READ_COST",
        default_value_t = 1_000,
        global = true
    )]
    pub shed_read_cost: u64,
}

impl FairUseSettings {
    /// The limits the code uses.
    pub fn limits(&self) -> FairUseLimits {
        FairUseLimits {
            connections: (self.ws_max_connections, self.ws_max_connections_per_key),
            subscriptions: (self.max_subscriptions, self.max_subscriptions_per_key),
            selections: (self.max_live_selections, self.max_live_selections_per_key),
            rates: [
                RoleRate::new(self.cost_rate_read, self.cost_burst_read),
                RoleRate::new(self.cost_rate_write, self.cost_burst_write),
                RoleRate::new(self.cost_rate_admin, self.cost_burst_admin),
            ],
            shed_lag: (self.shed_lag_ms > 0).then(|| Duration::from_millis(self.shed_lag_ms)),
            shed_read_cost: self.shed_read_cost,
        }
    }
}
