//! Whether writes reach storage. Two guards keep "acknowledged" meaning "committed" when the
//! disk fills or the database turns read-only: [`WriteHealth`] remembers the last storage
//! failure of a write (for `/readyz`: failing while it is recent, or until a write commits),
//! and [`reusable`] keeps a pooled connection that is still inside a transaction (a COMMIT or
//! ROLLBACK that failed) from ever being handed out again: the pool closes it and opens a fresh
//! one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::DbErr;
use sea_orm::sqlx::Connection;

use crate::error::is_storage_failure;

/// How long after its last storage failure a database still counts as failing: on a full disk
/// a small write can slip through between refused ones (SQLite reuses its log's space after a
/// checkpoint), and one lucky commit must not make `/readyz` flap.
const FAILING_FOR: Duration = Duration::from_secs(3);

/// Storage failures of writes, as `/readyz` reports them.
#[derive(Clone, Default)]
pub struct WriteHealth {
    state: Arc<Mutex<Recent>>,
}

/// The latest storage failure and the latest commit, and what was last reported of them.
#[derive(Default)]
struct Recent {
    failure: Option<(Instant, String)>,
    commit: Option<Instant>,
    /// Whether "failing" is what the log and the gauge last said.
    reported: bool,
}

impl Recent {
    /// Failing: a storage failure in the last [`FAILING_FOR`], or none since, but no commit
    /// after it either.
    fn failing(&self, now: Instant) -> Option<&str> {
        let (at, reason) = self.failure.as_ref()?;
        let committed_since = self.commit.is_some_and(|commit| commit > *at);
        (now.duration_since(*at) < FAILING_FOR || !committed_since).then_some(reason.as_str())
    }

    /// Logs and sets the gauge when failing starts or ends; returns why it is failing now.
    fn settle(&mut self, now: Instant) -> Option<String> {
        let failing = self.failing(now).map(str::to_owned);
        if failing.is_some() != self.reported {
            self.reported = failing.is_some();
            match &failing {
                Some(reason) => tracing::error!(%reason, "writes are failing: storage unavailable"),
                None => tracing::info!("writes are reaching storage again"),
            }
            metrics::gauge!("stockroom_storage_failing").set(f64::from(u8::from(self.reported)));
        }
        failing
    }
}

impl WriteHealth {
    /// A write committed.
    pub fn committed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.commit = Some(now);
        if state.reported {
            state.settle(now);
        }
    }

    /// A write failed; remembered when storage is the cause.
    pub fn failed(&self, error: &DbErr) {
        if !is_storage_failure(error) {
            return;
        }
        metrics::counter!("stockroom_storage_failures_total").increment(1);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.failure = Some((now, error.to_string()));
        state.settle(now);
    }

    /// Why writes are failing, while they are: a storage failure in the last 3 s, or one with no
    /// commit since.
    pub fn failure(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.settle(Instant::now())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_until_a_commit_and_a_quiet_spell() {
        let now = Instant::now();
        let mut recent = Recent::default();
        assert_eq!(recent.failing(now), None);
        recent.failure = Some((now, "disk full".into()));
        assert_eq!(recent.failing(now), Some("disk full"));
        recent.commit = Some(now + Duration::from_millis(10));
        assert_eq!(
            recent.failing(now + Duration::from_secs(1)),
            Some("disk full"),
            "one commit right after a failure does not clear it"
        );
        assert_eq!(
            recent.failing(now + FAILING_FOR),
            None,
            "quiet and committed"
        );
        recent.commit = None;
        assert_eq!(
            recent.failing(now + FAILING_FOR * 10),
            Some("disk full"),
            "no commit since the failure"
        );
    }

    #[test]
    fn reports_each_start_and_end_of_failing_once() {
        let now = Instant::now();
        let mut recent = Recent::default();
        assert_eq!(recent.settle(now), None);
        assert!(!recent.reported);
        recent.failure = Some((now, "disk full".into()));
        assert_eq!(recent.settle(now).as_deref(), Some("disk full"));
        assert!(recent.reported, "failing is reported");
        recent.commit = Some(now + Duration::from_millis(10));
        assert!(recent.settle(now + Duration::from_secs(1)).is_some());
        assert!(recent.reported, "still failing within the hold");
        assert_eq!(recent.settle(now + FAILING_FOR), None);
        assert!(
            !recent.reported,
            "the end is reported, even with no commit after the hold"
        );
    }
}
