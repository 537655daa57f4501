//! Whether writes reach storage. Two guards keep "acknowledged" meaning "committed" when the
//! disk fills or the database turns read-only: [`WriteHealth`] remembers the last storage
//! failure of a write (for `/readyz`, until a write commits again), and [`reusable`] keeps a
//! pooled connection that is still inside a transaction (a COMMIT or ROLLBACK that failed) from
//! ever being handed out again: the pool closes it and opens a fresh one.

use std::sync::{Arc, Mutex};

use sea_orm::DbErr;
use sea_orm::sqlx::Connection;

use crate::error::is_storage_failure;

/// The outcome of the latest write transaction, as far as storage is concerned.
#[derive(Clone, Default)]
pub struct WriteHealth {
    failure: Arc<Mutex<Option<String>>>,
}

impl WriteHealth {
    /// A write committed: storage works.
    pub fn committed(&self) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.take().is_some() {
            tracing::info!("writes are reaching storage again");
            metrics::gauge!("stockroom_storage_failing").set(0.0);
        }
    }

    /// A write failed; remembered when storage is the cause.
    pub fn failed(&self, error: &DbErr) {
        if !is_storage_failure(error) {
            return;
        }
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(%error, "writes are failing: storage unavailable");
            metrics::gauge!("stockroom_storage_failing").set(1.0);
        }
        metrics::counter!("stockroom_storage_failures_total").increment(1);
        *failure = Some(error.to_string());
    }

    /// Why writes are failing, while they are.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Whether a pooled connection may be handed out: not while the driver counts it inside a
/// transaction. After a failed COMMIT on SQLite (disk full) SQLite has already rolled back, the
/// ROLLBACK queued when the transaction was dropped fails, and the count stays up; SeaORM would
/// then begin the next write on that connection with a SAVEPOINT instead of `BEGIN IMMEDIATE`,
/// and acknowledge writes that are never committed. The pool closes a connection refused here
/// and opens a fresh one. (The check reads a counter: no round trip.)
pub fn reusable<C: Connection>(conn: &C) -> bool {
    if conn.is_in_transaction() {
        tracing::warn!("discarding a pooled connection left inside a transaction");
        metrics::counter!("stockroom_db_connections_discarded_total").increment(1);
        return false;
    }
    true
}
