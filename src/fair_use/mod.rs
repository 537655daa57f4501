//! Fair use: no single key, and no burst of work, can take the service from everyone else.
//!
//! - **Caps** ([`caps`]): WebSocket connections, subscriptions and distinct live selections,
//!   per key and per process. Each admission is a [`Permit`] that gives its place back when
//!   dropped, so nothing leaks when a connection dies mid-operation.
//! - **Cost buckets** ([`bucket`]): every operation's cost (see `graphql::cost`) is paid from a
//!   token bucket per key, refilled at a rate set per role; what a query did not use (its
//!   actual cost below the requested one) is refunded.
//! - **Load shedding** ([`saturation`]): while the request runtime falls behind its timers,
//!   new subscriptions and expensive reads are refused first, so mutations keep their latency.
//!
//! Every refusal is an [`AppError::Throttled`] (`THROTTLED`, HTTP 429 with `Retry-After`, or the
//! protocol's `error` message on a WebSocket) and is counted in
//! `stockroom_fair_use_refusals_total{limit}`.

pub mod bucket;
pub mod caps;
pub mod saturation;

use std::sync::Arc;
use std::time::Duration;

pub use bucket::{Charge, RoleRate};
pub use caps::{Permit, Resource};
pub use saturation::Saturation;

use crate::auth::{Principal, Role};
use crate::error::AppError;

/// The fair-use settings (see `config::FairUseSettings` for the flags).
#[derive(Debug, Clone)]
pub struct FairUseLimits {
    /// WebSocket connections open at once, per process and per key (0: no cap).
    pub connections: (usize, usize),
    /// Subscriptions running at once, per process and per key (0: no cap).
    pub subscriptions: (usize, usize),
    /// Distinct live selections (shared-subscription cohorts), per process and per key that
    /// created them (0: no cap).
    pub selections: (usize, usize),
    /// Bucket rate and size for `read`, `write` and `admin` keys.
    pub rates: [RoleRate; 3],
    /// Request-runtime delay past which load is shed (`None`: never).
    pub shed_lag: Option<Duration>,
    /// Cost above which a query counts as expensive while load is shed.
    pub shed_read_cost: u64,
}

impl Default for FairUseLimits {
    fn default() -> Self {
        FairUseLimits {
            connections: (5_000, 100),
            subscriptions: (50_000, 300),
            selections: (1_000, 50),
            rates: [
                RoleRate::new(5_000, 50_000),
                RoleRate::new(0, 400_000),
                RoleRate::new(0, 400_000),
            ],
            shed_lag: Some(Duration::from_millis(100)),
            shed_read_cost: 1_000,
        }
    }
}

impl FairUseLimits {
    /// The bucket settings of `role`.
    pub fn rate(&self, role: Role) -> RoleRate {
        self.rates[role as usize]
    }
}

/// The process's fair-use state; cheap to clone.
#[derive(Clone)]
pub struct FairUse {
    limits: Arc<FairUseLimits>,
    caps: caps::Caps,
    buckets: bucket::Buckets,
    saturation: Saturation,
}

impl FairUse {
    /// Fair use under `limits`, shedding by `saturation`.
    pub fn new(limits: FairUseLimits, saturation: Saturation) -> Self {
        FairUse {
            caps: caps::Caps::default(),
            buckets: bucket::Buckets::default(),
            limits: Arc::new(limits),
            saturation,
        }
    }

    /// The settings.
    pub fn limits(&self) -> &FairUseLimits {
        &self.limits
    }

    /// A place for one more `resource` held by `principal`'s key, or `THROTTLED`.
    pub fn admit(&self, principal: Principal, resource: Resource) -> Result<Permit, AppError> {
        self.caps.admit(&self.limits, principal.key, resource)
    }

    /// `THROTTLED` when the process holds all the WebSocket connections it may: checked at the
    /// upgrade, before the key is known (the place itself is taken at `connection_init`).
    pub fn refuse_when_connections_full(&self) -> Result<(), AppError> {
        if !self.caps.full(&self.limits, Resource::Connection) {
            return Ok(());
        }
        Err(refusal(
            "connections_per_process",
            format!(
                "too many WebSocket connections on this server (at most {}; \
                 --ws-max-connections)",
                self.limits.connections.0
            ),
            Duration::from_secs(1),
        ))
    }

    /// Takes `cost` from the caller's bucket, or `THROTTLED` when it cannot pay.
    pub fn charge(&self, principal: Principal, cost: u64) -> Result<Charge, AppError> {
        let rate = self.limits.rate(principal.role);
        self.buckets.charge(principal, rate, cost)
    }

    /// Gives back `amount` the caller was charged but did not use; the bucket's state after.
    pub fn refund(&self, principal: Principal, amount: u64) -> Charge {
        let rate = self.limits.rate(principal.role);
        self.buckets.refund(principal, rate, amount)
    }

    /// `THROTTLED` when the server sheds load now; what is refused says why in `what`.
    pub fn shed(&self, what: &str) -> Result<(), AppError> {
        let Some(threshold) = self.limits.shed_lag else {
            return Ok(());
        };
        let lag = self.saturation.lag();
        if lag <= threshold {
            return Ok(());
        }
        Err(refusal(
            "shed",
            format!(
                "the server is saturated (its request runtime runs {} ms late, over \
                 --shed-lag-ms {}): {what} are refused until it catches up",
                lag.as_millis(),
                threshold.as_millis()
            ),
            Duration::from_secs(1),
        ))
    }
}

/// A `THROTTLED` error, counted under `limit`.
pub(crate) fn refusal(limit: &'static str, message: String, retry_after: Duration) -> AppError {
    metrics::counter!("stockroom_fair_use_refusals_total", "limit" => limit).increment(1);
    AppError::Throttled {
        message,
        retry_after_ms: (retry_after.as_millis() as u64).max(1),
    }
}
