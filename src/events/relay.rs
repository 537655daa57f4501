//! The outbox relay: gives events their positions, publishes them in order, retries, dead-letters.
//!
//! One relay publishes per database at a time: it holds a lease row that it renews while alive;
//! another process takes the lease over once it expires.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as Shutdown;
use uuid::Uuid;

use super::broker::{Broker, Delivery};
use crate::db::begin_write;
use crate::entity::{event, relay_lease};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most events positioned and published per round.
    pub batch: u64,
    /// Fallback poll interval.
    pub poll: Duration,
    /// First retry delay after a broker failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Attempts before an event the broker rejects is marked dead.
    pub max_attempts: i32,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
}

const LEASE_NAME: &str = "outbox-relay";

/// Everything the relay loop works with.
struct Worker {
    /// Until when this process is known to hold the lease without asking the database.
    held_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// When the gauges were last refreshed.
    gauges_at: std::sync::Mutex<Option<std::time::Instant>>,
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    holder: String,
    wake: Arc<Notify>,
}

/// Starts the relay task; `wake` is notified by every commit that appended events. It runs
/// until `shutdown` fires, then flushes once more.
pub fn spawn(
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    wake: Arc<Notify>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let worker = Worker {
        held_until: std::sync::Mutex::new(None),
        gauges_at: std::sync::Mutex::new(None),
        db,
        broker,
        config,
        holder: Uuid::new_v4().to_string(),
        wake,
    };
    tokio::spawn(worker.run(shutdown))
}

impl Worker {
    async fn run(self, shutdown: Shutdown) {
        let mut failures: u32 = 0;
        loop {
            let delay = match self.round().await {
                Ok(true) => {
                    failures = 0;
                    continue;
                }
                Ok(false) => {
                    failures = 0;
                    self.config.poll
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("stockroom_relay_failures_total").increment(1);
                    tracing::warn!(%error, failures, "relay round failed; backing off");
                    self.backoff(failures)
                }
            };
            tokio::select! {
                _ = self.wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(error) = self.round().await {
            tracing::warn!(%error, "relay could not flush at shutdown");
        }
        self.release_lease().await;
    }

    /// Exponential backoff with full jitter, capped.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self.config.backoff_base.as_millis() as u64;
        let cap = self.config.backoff_cap.as_millis() as u64;
        let ceiling = base
            .saturating_mul(1u64 << failures.min(20))
            .min(cap)
            .max(1);
        let jittered = rand::rng().random_range(ceiling / 2..=ceiling);
        Duration::from_millis(jittered)
    }

    /// One round: position new events, publish a batch. `Ok(true)` when more work is waiting.
    async fn round(&self) -> Result<bool, RelayError> {
        self.update_gauges().await?;
        if !self.hold_lease().await? {
            return Ok(false);
        }
        let positioned = assign_positions(&self.db, self.config.batch).await?;
        let published = self.publish_batch().await?;
        Ok(positioned as u64 == self.config.batch || published as u64 == self.config.batch)
    }

    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let batch = event::Entity::find()
            .filter(event::Column::PublishedAt.is_null())
            .filter(event::Column::DeadAt.is_null())
            .filter(event::Column::Position.is_not_null())
            .order_by_asc(event::Column::Position)
            .limit(self.config.batch)
            .all(&self.db)
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let deliveries = self
            .broker
            .publish(&batch)
            .await
            .map_err(|e| RelayError::Broker(e.0))?;
        self.record(&batch, &deliveries).await?;
        if let Some(Delivery::Rejected(reason)) = deliveries
            .iter()
            .find(|d| matches!(d, Delivery::Rejected(_)))
        {
            return Err(RelayError::Broker(format!(
                "the broker rejected an event: {reason}"
            )));
        }
        Ok(batch.len())
    }

    /// Marks delivered events published; counts attempts on rejected ones and buries them at the
    /// limit.
    async fn record(&self, batch: &[event::Model], deliveries: &[Delivery]) -> Result<(), DbErr> {
        let now = crate::domain::now();
        let mut published = Vec::new();
        let txn = begin_write(&self.db).await?;
        for (e, delivery) in batch.iter().zip(deliveries) {
            match delivery {
                Delivery::Published => published.push(e.seq),
                Delivery::Rejected(reason) => {
                    let attempts = e.attempts + 1;
                    let dead = attempts >= self.config.max_attempts;
                    tracing::warn!(event_id = %e.id, attempts, dead, %reason, "broker rejected event");
                    event::Entity::update_many()
                        .col_expr(event::Column::Attempts, Expr::value(attempts))
                        .col_expr(event::Column::LastError, Expr::value(reason.clone()))
                        .col_expr(event::Column::DeadAt, Expr::value(dead.then_some(now)))
                        .filter(event::Column::Seq.eq(e.seq))
                        .exec(&txn)
                        .await?;
                }
            }
        }
        for chunk in published.chunks(500) {
            event::Entity::update_many()
                .col_expr(event::Column::PublishedAt, Expr::value(now))
                .filter(event::Column::Seq.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        metrics::counter!("stockroom_relay_published_total").increment(published.len() as u64);
        for e in batch.iter().filter(|e| published.contains(&e.seq)) {
            let lag = (now - e.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("stockroom_relay_commit_to_publish_seconds").record(lag);
        }
        Ok(())
    }

    /// Refreshes the outbox gauges and the broker's health, at most twice a second.
    async fn update_gauges(&self) -> Result<(), DbErr> {
        {
            let mut at = self.gauges_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
                return Ok(());
            }
            *at = Some(std::time::Instant::now());
        }
        self.broker.ping().await;
        let figures = super::outbox::figures(&self.db).await?;
        metrics::gauge!("stockroom_outbox_pending").set(figures.pending as f64);
        metrics::gauge!("stockroom_outbox_dead").set(figures.dead as f64);
        Ok(())
    }

    /// True while the lease is ours for at least half its lifetime, without asking the database;
    /// otherwise takes or renews it. False when another live process holds it.
    async fn hold_lease(&self) -> Result<bool, DbErr> {
        let fresh = |until: &Option<std::time::Instant>| {
            until.is_some_and(|t| t > std::time::Instant::now() + self.config.lease_ttl / 2)
        };
        if fresh(&self.held_until.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(true);
        }
        let held = self.renew_lease().await?;
        let until = held.then(|| std::time::Instant::now() + self.config.lease_ttl);
        *self.held_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
        Ok(held)
    }

    async fn renew_lease(&self) -> Result<bool, DbErr> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
        let txn = begin_write(&self.db).await?;
        let current = relay_lease::Entity::find_by_id(LEASE_NAME)
            .one(&txn)
            .await?;
        let held = match current {
            None => {
                relay_lease::Entity::insert(relay_lease::ActiveModel {
                    name: Set(LEASE_NAME.to_owned()),
                    holder: Set(self.holder.clone()),
                    expires_at: Set(until),
                })
                .exec_without_returning(&txn)
                .await?;
                true
            }
            Some(lease) if lease.holder == self.holder || lease.expires_at < now => {
                let renewed = relay_lease::Entity::update_many()
                    .col_expr(
                        relay_lease::Column::Holder,
                        Expr::value(self.holder.clone()),
                    )
                    .col_expr(relay_lease::Column::ExpiresAt, Expr::value(until))
                    .filter(relay_lease::Column::Name.eq(LEASE_NAME))
                    .filter(relay_lease::Column::Holder.eq(lease.holder))
                    .filter(relay_lease::Column::ExpiresAt.eq(lease.expires_at))
                    .exec(&txn)
                    .await?;
                renewed.rows_affected == 1
            }
            Some(_) => false,
        };
        txn.commit().await?;
        Ok(held)
    }

    async fn release_lease(&self) {
        let released = relay_lease::Entity::delete_many()
            .filter(relay_lease::Column::Name.eq(LEASE_NAME))
            .filter(relay_lease::Column::Holder.eq(self.holder.clone()))
            .exec(&self.db)
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the relay lease");
        }
    }
}

/// Gives the next positions to unpositioned events, in the order they became visible.
/// Returns how many were positioned.
pub async fn assign_positions(db: &DatabaseConnection, batch: u64) -> Result<usize, DbErr> {
    let txn = begin_write(db).await?;
    let top: Option<i64> = event::Entity::find()
        .select_only()
        .expr(Func::max(Expr::col(event::Column::Position)))
        .into_tuple::<Option<i64>>()
        .one(&txn)
        .await?
        .flatten();
    let waiting: Vec<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .filter(event::Column::Position.is_null())
        .order_by_asc(event::Column::Seq)
        .limit(batch)
        .into_tuple()
        .all(&txn)
        .await?;
    let mut next = top.unwrap_or(0);
    for seq in &waiting {
        next += 1;
        position_one(&txn, *seq, next).await?;
    }
    txn.commit().await?;
    Ok(waiting.len())
}

async fn position_one(conn: &impl ConnectionTrait, seq: i64, position: i64) -> Result<(), DbErr> {
    event::Entity::update_many()
        .col_expr(event::Column::Position, Expr::value(position))
        .filter(event::Column::Seq.eq(seq))
        .exec(conn)
        .await?;
    Ok(())
}

/// Puts dead events back to pending (all when `ids` is `None`); returns how many.
pub async fn redrive(conn: &impl ConnectionTrait, ids: Option<Vec<Uuid>>) -> Result<u64, DbErr> {
    let mut update = event::Entity::update_many()
        .col_expr(
            event::Column::DeadAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(event::Column::Attempts, Expr::value(0))
        .filter(event::Column::DeadAt.is_not_null());
    if let Some(ids) = ids {
        update = update.filter(event::Column::Id.is_in(ids));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("broker: {0}")]
    Broker(String),
}
