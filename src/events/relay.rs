//! The outbox relay: gives events their positions, publishes them in order, retries, dead-letters.
//!
//! One relay publishes per database at a time: it holds a lease row that it renews while alive;
//! another process takes the lease over once it expires.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as Shutdown;
use uuid::Uuid;

use super::broker::{Broker, Delivery};
use crate::db::Db;
use crate::entity::{event, relay_lease};
use crate::error::{AppError, AppResult};

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
/// Set by a `redriveEvents` in this process (after its commit): the next round reads the
/// redriven events first, before positioning new ones that would overtake them.
static REDRIVEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Batches one round publishes before the loop looks at shutdown and wake-ups again.
const ROUND_BATCHES: usize = 64;
/// Batches the final flush at shutdown publishes at most.
const SHUTDOWN_BATCHES: usize = 8;

/// Everything the relay loop works with.
struct Worker {
    /// Until when this process is known to hold the lease without asking the database.
    held_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// Whether positioned but unpublished events may be waiting: at start (another process or
    /// a crash may have left some), after a failed round, or while the lease was elsewhere.
    /// While false, a round skips looking for them, except once per poll interval (a
    /// `redriveEvents`, from any process, makes some).
    leftovers: std::sync::atomic::AtomicBool,
    /// When a round last looked for leftovers.
    leftovers_seen: std::sync::Mutex<std::time::Instant>,
    db: Db,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    holder: String,
    wake: Arc<Notify>,
}

/// Starts the relay task; `wake` is notified by every commit that appended events. It runs
/// until `shutdown` fires, then flushes once more.
pub fn spawn(
    db: Db,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    wake: Arc<Notify>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let worker = Worker {
        held_until: std::sync::Mutex::new(None),
        leftovers: std::sync::atomic::AtomicBool::new(true),
        leftovers_seen: std::sync::Mutex::new(std::time::Instant::now()),
        db,
        broker,
        config,
        holder: Uuid::new_v4().to_string(),
        wake,
    };
    tokio::spawn(watch(
        worker.db.conn.clone(),
        worker.broker.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(worker.run(shutdown))
}

/// Once a second, off the relay's path: asks the broker whether it is up (for `/readyz` on every
/// process, lease holder or not) and refreshes the outbox gauges.
async fn watch(conn: sea_orm::DatabaseConnection, broker: Arc<dyn Broker>, shutdown: Shutdown) {
    loop {
        broker.ping().await;
        match super::outbox::figures(&conn).await {
            Ok(figures) => {
                metrics::gauge!("stockroom_outbox_pending").set(figures.pending as f64);
                metrics::gauge!("stockroom_outbox_dead").set(figures.dead as f64);
            }
            Err(error) => tracing::warn!(%error, "could not read the outbox figures"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

impl Worker {
    async fn run(self, shutdown: Shutdown) {
        let mut failures: u32 = 0;
        loop {
            let delay = match self.round(ROUND_BATCHES).await {
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
        if let Err(error) = self.round(SHUTDOWN_BATCHES).await {
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

    /// One round: positions new events and publishes them, batch after batch, until none are
    /// left or `max_batches` went out. `Ok(true)` when more work is waiting.
    ///
    /// While one batch is on its way to the broker (and then marked published), the next is
    /// positioned and read in the same statement, so the database and the broker work at the
    /// same time. A batch goes out only after the one before it was confirmed.
    async fn round(&self, max_batches: usize) -> Result<bool, RelayError> {
        if !self.hold_lease().await? {
            self.leftovers.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        // Events positioned by an earlier round (or process) and not yet published go first.
        // Until this round ends well, assume some may be left.
        let mut batch = Vec::new();
        let mut leftovers = false;
        if self.look_for_leftovers() {
            batch = self.positioned_after(None).await?;
            leftovers = batch.len() as u64 == self.config.batch;
        }
        if batch.is_empty() {
            batch = position_next(&self.db, self.config.batch).await?;
        }
        for _ in 0..max_batches {
            if batch.is_empty() {
                self.leftovers.store(false, Ordering::Relaxed);
                return Ok(false);
            }
            let last = batch.last().and_then(|e| e.position);
            let (sent, next) = tokio::join!(self.send(&batch), self.following(last, leftovers));
            sent?;
            let (next, more_leftovers) = next?;
            (batch, leftovers) = (next, more_leftovers);
            if !self.hold_lease().await? {
                return Ok(false);
            }
        }
        // Stopped with a batch in hand: it is positioned and will be found next round.
        Ok(!batch.is_empty())
    }

    /// Whether this round reads positioned, unpublished events first (see `leftovers`). Until
    /// the round ends well, leftovers are assumed.
    fn look_for_leftovers(&self) -> bool {
        let flagged =
            self.leftovers.swap(true, Ordering::Relaxed) | REDRIVEN.swap(false, Ordering::AcqRel);
        let mut seen = self
            .leftovers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = seen.elapsed() >= self.config.poll;
        if flagged || due {
            *seen = std::time::Instant::now();
        }
        flagged || due
    }

    /// The batch after position `last`: more leftovers while the last read of them was full,
    /// otherwise newly positioned events. Also says whether leftovers may remain.
    async fn following(
        &self,
        last: Option<i64>,
        leftovers: bool,
    ) -> Result<(Vec<event::Model>, bool), RelayError> {
        if leftovers {
            let batch = self.positioned_after(last).await?;
            if !batch.is_empty() {
                let full = batch.len() as u64 == self.config.batch;
                return Ok((batch, full));
            }
        }
        Ok((position_next(&self.db, self.config.batch).await?, false))
    }

    /// Publishes a batch and records the outcome; an event the broker rejected fails the round.
    async fn send(&self, batch: &[event::Model]) -> Result<(), RelayError> {
        let deliveries = self
            .broker
            .publish(batch)
            .await
            .map_err(|e| RelayError::Broker(e.0))?;
        self.record(batch, &deliveries).await?;
        match deliveries
            .iter()
            .find(|d| matches!(d, Delivery::Rejected(_)))
        {
            Some(Delivery::Rejected(reason)) => Err(RelayError::Broker(format!(
                "the broker rejected an event: {reason}"
            ))),
            _ => Ok(()),
        }
    }

    /// Positioned, unpublished, live events after `after` (from the start when `None`), in
    /// position order, at most one batch.
    async fn positioned_after(&self, after: Option<i64>) -> Result<Vec<event::Model>, DbErr> {
        let mut query = event::Entity::find()
            .filter(event::Column::PublishedAt.is_null())
            .filter(event::Column::DeadAt.is_null())
            .filter(event::Column::Position.is_not_null());
        if let Some(after) = after {
            query = query.filter(event::Column::Position.gt(after));
        }
        query
            .order_by_asc(event::Column::Position)
            .limit(self.config.batch)
            .all(&self.db.conn)
            .await
    }

    /// Marks delivered events published; counts attempts on rejected ones and buries them at the
    /// limit.
    async fn record(&self, batch: &[event::Model], deliveries: &[Delivery]) -> AppResult<()> {
        let now = crate::domain::now();
        let first = batch.first().and_then(|e| e.position);
        let last = batch.last().and_then(|e| e.position);
        let contiguous = match (first, last) {
            (Some(a), Some(b)) => b - a + 1 == batch.len() as i64,
            _ => false,
        };
        let positions = first.zip(last).filter(|_| contiguous);
        let mut outcome = Outcome {
            now,
            published: Vec::new(),
            rejected: Vec::new(),
            positions,
        };
        for (e, delivery) in batch.iter().zip(deliveries) {
            match delivery {
                Delivery::Published => outcome.published.push(e.seq),
                Delivery::Rejected(reason) => {
                    let attempts = e.attempts + 1;
                    let dead = attempts >= self.config.max_attempts;
                    tracing::warn!(event_id = %e.id, attempts, dead, %reason, "broker rejected event");
                    outcome
                        .rejected
                        .push((e.seq, attempts, reason.clone(), dead));
                }
            }
        }
        outcome.published.sort_unstable();
        let recorded = outcome.clone();
        self.db
            .write_quietly(move |txn| {
                let outcome = recorded.clone();
                Box::pin(async move { Ok(outcome.apply(txn).await?) })
            })
            .await?;
        metrics::counter!("stockroom_relay_published_total")
            .increment(outcome.published.len() as u64);
        for e in batch
            .iter()
            .filter(|e| outcome.published.binary_search(&e.seq).is_ok())
        {
            let lag = (now - e.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("stockroom_relay_commit_to_publish_seconds").record(lag);
        }
        Ok(())
    }

    /// True while the lease is ours for at least half its lifetime, without asking the database;
    /// otherwise takes or renews it. False when another live process holds it.
    async fn hold_lease(&self) -> AppResult<bool> {
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

    async fn renew_lease(&self) -> AppResult<bool> {
        let holder = self.holder.clone();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
        self.db
            .write_quietly(move |txn| {
                let holder = holder.clone();
                Box::pin(async move { Ok(take_lease(txn, &holder, ttl).await?) })
            })
            .await
    }

    async fn release_lease(&self) {
        let released = relay_lease::Entity::delete_many()
            .filter(relay_lease::Column::Name.eq(LEASE_NAME))
            .filter(relay_lease::Column::Holder.eq(self.holder.clone()))
            .exec(&self.db.conn)
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the relay lease");
        }
    }
}

/// What a publish round did, to be written down: published events, rejected ones.
#[derive(Debug, Clone)]
struct Outcome {
    now: chrono::DateTime<Utc>,
    /// Sequence numbers delivered, ascending.
    published: Vec<i64>,
    /// (seq, attempts so far, reason, dead now).
    rejected: Vec<(i64, i32, String, bool)>,
    /// First and last position of the round, when it published a contiguous run of the log.
    positions: Option<(i64, i64)>,
}

impl Outcome {
    async fn apply(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        for (seq, attempts, reason, dead) in &self.rejected {
            event::Entity::update_many()
                .col_expr(event::Column::Attempts, Expr::value(*attempts))
                .col_expr(event::Column::LastError, Expr::value(reason.clone()))
                .col_expr(event::Column::DeadAt, Expr::value(dead.then_some(self.now)))
                .filter(event::Column::Seq.eq(*seq))
                .exec(conn)
                .await?;
        }
        if self.rejected.is_empty()
            && let Some((first, last)) = self.positions
        {
            event::Entity::update_many()
                .col_expr(event::Column::PublishedAt, Expr::value(self.now))
                .filter(event::Column::Position.between(first, last))
                .filter(event::Column::PublishedAt.is_null())
                .exec(conn)
                .await?;
            return Ok(());
        }
        for chunk in self.published.chunks(2000) {
            event::Entity::update_many()
                .col_expr(event::Column::PublishedAt, Expr::value(self.now))
                .filter(event::Column::Seq.is_in(chunk.iter().copied()))
                .exec(conn)
                .await?;
        }
        Ok(())
    }
}

/// Takes or renews the lease for `holder`; false when another live holder has it.
async fn take_lease(
    conn: &impl ConnectionTrait,
    holder: &str,
    ttl: chrono::Duration,
) -> Result<bool, DbErr> {
    let now = Utc::now();
    let until = now + ttl;
    let current = relay_lease::Entity::find_by_id(LEASE_NAME)
        .one(conn)
        .await?;
    match current {
        None => {
            relay_lease::Entity::insert(relay_lease::ActiveModel {
                name: Set(LEASE_NAME.to_owned()),
                holder: Set(holder.to_owned()),
                expires_at: Set(until),
            })
            .exec_without_returning(conn)
            .await?;
            Ok(true)
        }
        Some(lease) if lease.holder == holder || lease.expires_at < now => {
            let renewed = relay_lease::Entity::update_many()
                .col_expr(relay_lease::Column::Holder, Expr::value(holder.to_owned()))
                .col_expr(relay_lease::Column::ExpiresAt, Expr::value(until))
                .filter(relay_lease::Column::Name.eq(LEASE_NAME))
                .filter(relay_lease::Column::Holder.eq(lease.holder))
                .filter(relay_lease::Column::ExpiresAt.eq(lease.expires_at))
                .exec(conn)
                .await?;
            Ok(renewed.rows_affected == 1)
        }
        Some(_) => Ok(false),
    }
}

/// Gives the next positions to unpositioned events, in the order they became visible, and
/// returns them in position order (one statement). Reads first, so an idle relay writes nothing.
pub async fn position_next(db: &Db, batch: u64) -> AppResult<Vec<event::Model>> {
    let waiting = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .filter(event::Column::Position.is_null())
        .limit(1)
        .into_tuple::<i64>()
        .one(&db.conn)
        .await?;
    if waiting.is_none() {
        return Ok(Vec::new());
    }
    let mut positioned = db
        .write_quietly(move |txn| {
            Box::pin(async move { Ok(position_returning(txn, batch).await?) })
        })
        .await?;
    positioned.sort_unstable_by_key(|e| e.position);
    Ok(positioned)
}

/// `UPDATE events SET position = top + row_number … RETURNING` for the next `batch`
/// unpositioned events.
async fn position_returning(
    conn: &impl ConnectionTrait,
    batch: u64,
) -> Result<Vec<event::Model>, DbErr> {
    let backend = conn.get_database_backend();
    let limit = match backend {
        sea_orm::DatabaseBackend::Postgres => "$1",
        _ => "?",
    };
    let sql = format!(
        "UPDATE events SET position = numbered.top + numbered.rn \
         FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn, \
                      (SELECT COALESCE(MAX(position), 0) FROM events) AS top \
               FROM events WHERE position IS NULL ORDER BY seq LIMIT {limit}) AS numbered \
         WHERE events.seq = numbered.seq \
         RETURNING events.seq, events.id, events.event_type, events.aggregate_type, \
                   events.aggregate_id, events.store_id, events.product_id, events.payload, \
                   events.occurred_at, events.position, events.published_at, events.attempts, \
                   events.last_error, events.dead_at"
    );
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let statement = sea_orm::Statement::from_sql_and_values(backend, sql, [limit.into()]);
    event::Entity::find()
        .from_raw_sql(statement)
        .all(conn)
        .await
}

/// Puts dead events back to pending (all when `ids` is `None`), then has the relay read them
/// before it positions anything new; returns how many.
pub async fn redrive_events(db: &Db, ids: Option<Vec<Uuid>>) -> AppResult<u64> {
    let count = db
        .write_quietly(move |txn| {
            let ids = ids.clone();
            Box::pin(async move { Ok(redrive(txn, ids).await?) })
        })
        .await?;
    REDRIVEN.store(true, Ordering::Release);
    db.wake_relay();
    Ok(count)
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
    #[error("{0}")]
    App(#[from] AppError),
    #[error("broker: {0}")]
    Broker(String),
}
