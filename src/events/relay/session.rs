//! PostgreSQL's relay leadership: a session-level advisory lock on a connection of its own.
//! Leadership lasts as long as that session: a killed holder's connection closes and the lock
//! goes with it at once; a frozen or cut-off holder stops its heartbeat and the server ends the
//! idle session after the lease (`idle_session_timeout`). Each new holder starts the next term
//! in the lease row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, Connection};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::leadership::LEASE_NAME;

/// The advisory lock's key (the bytes of "stockrel"): one relay per database.
const LOCK_KEY: i64 = 0x73746f636b72656c;

/// Starts the next term for `$2`: the lease row's term plus one.
const CLAIM_TERM: &str = "INSERT INTO relay_leases (name, holder, expires_at, term) \
     VALUES ($1, $2, now(), 1) \
     ON CONFLICT (name) DO UPDATE \
     SET holder = EXCLUDED.holder, expires_at = now(), term = relay_leases.term + 1 \
     RETURNING term";

/// This process's side of the session lock: the term it holds, if any, kept current by a task.
pub(super) struct SessionLock {
    term: Arc<watch::Sender<Option<i64>>>,
    /// Set when a fence refused the current term: the task ends that session.
    ended: Arc<(AtomicBool, Notify)>,
    stop: CancellationToken,
}

impl SessionLock {
    /// Starts the task that waits for the lock, holds it with a heartbeat every quarter of
    /// `lease`, and waits again after losing it; `wake` hears of every new term.
    pub(super) fn start(
        url: &str,
        holder: String,
        lease: Duration,
        wake: Arc<Notify>,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Result<Self, sqlx::Error> {
        let idle = format!("{}ms", lease.as_millis());
        let options = url.parse::<PgConnectOptions>()?.options([
            ("idle_session_timeout", idle.as_str()),
            ("idle_in_transaction_session_timeout", idle.as_str()),
        ]);
        let term = Arc::new(watch::Sender::new(None));
        let lock = SessionLock {
            term: term.clone(),
            ended: Arc::new((AtomicBool::new(false), Notify::new())),
            stop: CancellationToken::new(),
        };
        let session = Session {
            options,
            holder,
            lease,
            term,
            wake,
            ended: lock.ended.clone(),
            stop: lock.stop.clone(),
        };
        tasks.spawn(session.run());
        Ok(lock)
    }

    /// The term this process holds, if any.
    pub(super) fn term(&self) -> Option<i64> {
        *self.term.borrow()
    }

    /// A fence refused `term`: end its session, if it is still the current one (another holder
    /// took over).
    pub(super) fn forget(&self, term: i64) {
        if self.term() == Some(term) {
            self.ended.0.store(true, Ordering::Release);
            self.ended.1.notify_one();
        }
    }

    /// The lease row moved from term `from` to `to` while this session held it.
    pub(super) fn moved(&self, from: i64, to: i64) {
        self.term.send_if_modified(|term| {
            let current = *term == Some(from);
            if current {
                *term = Some(to);
            }
            current
        });
    }

    /// Ends the session, and with it the lock.
    pub(super) fn release(&self) {
        self.stop.cancel();
    }
}

/// The task's side.
struct Session {
    options: PgConnectOptions,
    holder: String,
    lease: Duration,
    term: Arc<watch::Sender<Option<i64>>>,
    wake: Arc<Notify>,
    ended: Arc<(AtomicBool, Notify)>,
    stop: CancellationToken,
}

impl Session {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            match self.lead_once().await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "relay leadership session failed; trying again");
                }
            }
            self.term.send_replace(None);
            tokio::select! {
                _ = tokio::time::sleep(self.lease / 5) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Connects, waits for the lock, starts a term and holds it until the session fails, a
    /// fence ends the term, or the process stops. The connection closes on return.
    async fn lead_once(&self) -> Result<(), sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let locked = tokio::select! {
            locked = sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_KEY).execute(&mut conn) => locked,
            _ = self.stop.cancelled() => return Ok(()),
        };
        locked?;
        let term: i64 = sqlx::query_scalar(CLAIM_TERM)
            .bind(LEASE_NAME)
            .bind(&self.holder)
            .fetch_one(&mut conn)
            .await?;
        tracing::info!(term, "this process now runs the relay");
        self.ended.0.store(false, Ordering::Release);
        self.term.send_replace(Some(term));
        self.wake.notify_one();
        let result = self.heartbeat(&mut conn).await;
        self.term.send_replace(None);
        tracing::info!("this process no longer runs the relay");
        let _ = conn.close().await;
        result
    }

    /// Keeps the session busy enough that the server does not end it, until it fails or the
    /// term ends.
    async fn heartbeat(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.lease / 4) => {}
                _ = self.ended.1.notified() => {
                    if self.ended.0.swap(false, Ordering::AcqRel) {
                        return Ok(());
                    }
                    continue;
                }
                _ = self.stop.cancelled() => return Ok(()),
            }
            let beat = sqlx::query("SELECT 1").execute(&mut *conn);
            match tokio::time::timeout(self.lease / 2, beat).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    let late = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the leadership heartbeat got no answer",
                    );
                    return Err(sqlx::Error::Io(late));
                }
            }
        }
    }
}
