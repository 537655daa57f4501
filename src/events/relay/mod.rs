//! The outbox relay: gives events their positions, publishes them in order, retries, dead-letters.
//! This file is the loop (rounds, backoff, wake-ups, the broker watch); `leadership` says which
//! process relays and in which term (`lease` on SQLite, `session` on PostgreSQL), `identity`
//! checks that the stream holds this database's history, `positions` gives positions,
//! `outcomes` publishes batches and records what the broker said, `redrive` puts dead events
//! back.
//!
//! One relay publishes per database at a time, in a term; positioning and publishing are fenced
//! with the term, so a relay whose term ended while it was paused changes nothing.

mod identity;
mod leadership;
mod lease;
mod outcomes;
mod positions;
mod redrive;
mod session;

pub use redrive::redrive;

use leadership::Leadership;
use outcomes::{conflict, fenced, rejection};
use positions::{Waiting, position_range};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use sea_orm::DbErr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as Shutdown;
use uuid::Uuid;

use super::broker::{Broker, Outgoing};
use crate::db::Db;
use crate::error::AppError;

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
    /// How long leadership outlives its holder's silence.
    pub lease_ttl: Duration,
    /// The database, for the PostgreSQL leadership session.
    pub database_url: String,
}

/// What the rest of the process holds of the relay: a `redriveEvents` here (after its commit)
/// tells it to read the redriven events first, before positioning new ones that would overtake
/// them.
#[derive(Clone, Default)]
pub struct RelayHandle {
    redriven: Arc<std::sync::atomic::AtomicBool>,
    conflict: Arc<std::sync::Mutex<Option<String>>>,
    /// The term this process relays in (0: it stands by).
    term: Arc<std::sync::atomic::AtomicI64>,
}

impl RelayHandle {
    /// True while this process runs the relay (the others stand by).
    pub fn is_active(&self) -> bool {
        self.term.load(Ordering::Acquire) != 0
    }

    /// Why this process's relay stopped publishing, when the stream holds another history.
    pub fn conflict(&self) -> Option<String> {
        self.conflict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
/// Batches one round publishes before the loop looks at shutdown and wake-ups again.
const ROUND_BATCHES: usize = 64;
/// Shortest time from the start of one round to the next when a commit wakes the relay. A commit
/// arriving later than this after the last round starts one at once; commits arriving closer
/// together wait for the rest of it and go in one batch.
const ROUND_SPACING: Duration = Duration::from_millis(5);
/// Batches the final flush at shutdown publishes at most.
const SHUTDOWN_BATCHES: usize = 8;

/// Everything the relay loop works with.
struct Worker {
    /// How this process takes part in leadership.
    leadership: Leadership,
    /// The term this process last knew it relays in (0: none); shared with `RelayHandle`.
    term: Arc<std::sync::atomic::AtomicI64>,
    /// Whether positioned but unpublished events may be waiting: at start (another process or
    /// a crash may have left some), after a failed round, after a round that stopped with
    /// positioned batches in hand, or while the lease was elsewhere. While false, a round skips
    /// looking for them, except once per poll interval (a `redriveEvents`, from any process,
    /// makes some).
    leftovers: std::sync::atomic::AtomicBool,
    /// When a round last looked for leftovers.
    leftovers_seen: std::sync::Mutex<std::time::Instant>,
    db: Db,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    wake: Arc<Notify>,
    redriven: Arc<std::sync::atomic::AtomicBool>,
    /// Set while the stream holds another history (see `identity`).
    conflict: Arc<std::sync::Mutex<Option<String>>>,
    /// Whether the stream's top was checked against the log since start or the last conflict.
    verified: std::sync::atomic::AtomicBool,
}

/// Starts the relay task (the loop and the broker watch); `wake` is notified by every commit
/// that appended events, `handle` by `redriveEvents`. It runs until `shutdown` fires, then
/// flushes once more.
pub fn spawn(
    db: Db,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    wake: Arc<Notify>,
    handle: &RelayHandle,
    shutdown: Shutdown,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), AppError> {
    let holder = Uuid::new_v4().to_string();
    let leadership = match db.conn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => Leadership::Session(
            session::SessionLock::start(
                &config.database_url,
                holder,
                config.lease_ttl,
                wake.clone(),
                tasks,
            )
            .map_err(|e| AppError::Internal(format!("relay leadership session: {e}")))?,
        ),
        _ => Leadership::Lease(lease::LeaseRow::new(db.clone(), holder, config.lease_ttl)),
    };
    metrics::gauge!("stockroom_relay_active").set(0.0);
    let worker = Worker {
        leadership,
        term: handle.term.clone(),
        leftovers: std::sync::atomic::AtomicBool::new(true),
        leftovers_seen: std::sync::Mutex::new(std::time::Instant::now()),
        db,
        broker,
        config,
        wake,
        redriven: handle.redriven.clone(),
        conflict: handle.conflict.clone(),
        verified: std::sync::atomic::AtomicBool::new(false),
    };
    let watch = watch(worker.db.clone(), worker.broker.clone(), shutdown.clone());
    tasks.spawn(watch);
    tasks.spawn(worker.run(shutdown));
    Ok(())
}

/// Once a second, off the relay's path: asks the broker whether it is up (for `/readyz` on every
/// process, relaying or not), refreshes the outbox gauges, and while writes fail for storage
/// reasons tries a small write of its own, so readiness recovers without client traffic.
async fn watch(db: Db, broker: Arc<dyn Broker>, shutdown: Shutdown) {
    loop {
        broker.ping().await;
        if db.storage_failure().is_some() {
            let probe = db
                .write_quietly(|txn| Box::pin(async move { Ok(leadership::touch(txn).await?) }))
                .await;
            if let Err(error) = probe {
                tracing::debug!(%error, "storage probe failed");
            }
        }
        match super::outbox::figures(&db.conn).await {
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
        let mut committed = Waiting::Unknown;
        loop {
            let started = tokio::time::Instant::now();
            let delay = match self.round(ROUND_BATCHES, committed).await {
                Ok(true) => {
                    failures = 0;
                    continue;
                }
                Ok(false) => {
                    failures = 0;
                    self.config.poll
                }
                Err(RelayError::Fenced {
                    term,
                    stage,
                    reason,
                }) => {
                    self.step_down(term, stage, &reason);
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
            committed = tokio::select! {
                _ = self.wake.notified(), if failures == 0 => Waiting::Known,
                _ = tokio::time::sleep(delay) => Waiting::Unknown,
                _ = shutdown.cancelled() => break,
            };
            // Under a steady stream of commits, rounds start at most every ROUND_SPACING: the
            // commits of that time share one positioning and one marking.
            if committed == Waiting::Known {
                tokio::time::sleep_until(started + ROUND_SPACING).await;
            }
        }
        if let Err(error) = self.round(SHUTDOWN_BATCHES, Waiting::Unknown).await {
            tracing::warn!(%error, "relay could not flush at shutdown");
        }
        self.leadership.release().await;
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

    /// One round: publishes positioned events left over from before (see `leftovers`), then
    /// positions new events and publishes them, batch after batch, until none are left or
    /// `max_batches` went out. `Ok(true)` when more work is waiting.
    async fn round(&self, max_batches: usize, waiting: Waiting) -> Result<bool, RelayError> {
        let Some(term) = self.current_term().await? else {
            self.leftovers.store(true, Ordering::Relaxed);
            return Ok(false);
        };
        self.verify_stream().await?;
        if self.look_for_leftovers() && !self.publish_leftovers(term, max_batches).await? {
            return Ok(true);
        }
        self.publish_new(term, max_batches, waiting).await
    }

    /// Publishes positioned, unpublished events in position order, one batch at a time. True
    /// when none are left.
    async fn publish_leftovers(&self, term: i64, max_batches: usize) -> Result<bool, RelayError> {
        let mut last = None;
        for _ in 0..max_batches {
            let batch = self.positioned_after(last).await?;
            if batch.is_empty() {
                return Ok(true);
            }
            self.send(&batch, term).await?;
            if (batch.len() as u64) < self.config.batch {
                return Ok(true);
            }
            last = batch.last().map(|e| e.position);
            if !self.still_leading(term).await? {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Positions and publishes new events as a pipeline. While batch N goes to the broker,
    /// batch N-1 is marked published, batch N+1 (positioned last time) is read, and batch N+2
    /// is positioned. A batch goes out only after the one before it was confirmed; marking
    /// published may trail, because a republish after a crash is refused as already there.
    async fn publish_new(
        &self,
        term: i64,
        max_batches: usize,
        waiting: Waiting,
    ) -> Result<bool, RelayError> {
        let batch = self.config.batch;
        let Some(first) = position_range(&self.db, batch, waiting, term).await? else {
            self.leftovers.store(false, Ordering::Relaxed);
            return Ok(false);
        };
        let mut current = self.read_range(Some(first)).await?;
        let mut ahead = position_range(&self.db, batch, Waiting::Unknown, term).await?;
        let mut previous: Option<(Vec<Outgoing>, outcomes::Sent)> = None;
        for _ in 0..max_batches {
            if current.is_empty() {
                match ahead.take() {
                    Some(range) => current = self.read_range(Some(range)).await?,
                    None => {
                        self.record_previous(previous.take()).await?;
                        self.leftovers.store(false, Ordering::Relaxed);
                        return Ok(false);
                    }
                }
            }
            let (published, recorded, next, positioned) = tokio::join!(
                self.publish(&current, term),
                self.record_previous(previous.take()),
                self.read_range(ahead.take()),
                position_range(&self.db, batch, Waiting::Unknown, term),
            );
            recorded?;
            let sent = published?;
            let deliveries = &sent.deliveries;
            if let Some(reason) = fenced(deliveries) {
                self.record_previous(previous.take()).await?;
                return Err(RelayError::fenced(term, "publish", reason));
            }
            if let Some(reason) = conflict(deliveries) {
                return Err(self.report_conflict(reason.to_owned()));
            }
            if let Some(reason) = rejection(deliveries) {
                self.record(&current, &sent).await?;
                return Err(RelayError::Broker(format!(
                    "the broker rejected an event: {reason}"
                )));
            }
            previous = Some((std::mem::take(&mut current), sent));
            (current, ahead) = (next?, positioned?);
            if !self.still_leading(term).await? {
                break;
            }
        }
        // Stopped with positioned events in hand: they are found as leftovers next round.
        self.record_previous(previous).await?;
        Ok(true)
    }

    /// Whether this round reads positioned, unpublished events first (see `leftovers`). Until
    /// the round ends well, leftovers are assumed.
    fn look_for_leftovers(&self) -> bool {
        let flagged = self.leftovers.swap(true, Ordering::Relaxed)
            | self.redriven.swap(false, Ordering::AcqRel);
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
    #[error("the stream holds another history: {0}")]
    Conflict(String),
    #[error("relay term {term} has ended ({stage}): {reason}")]
    Fenced {
        term: i64,
        stage: &'static str,
        reason: String,
    },
}

impl RelayError {
    fn fenced(term: i64, stage: &'static str, reason: &str) -> Self {
        RelayError::Fenced {
            term,
            stage,
            reason: reason.to_owned(),
        }
    }
}
