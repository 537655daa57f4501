//! Which process relays, and in which term. Leadership is a lease row on SQLite (`lease`) and a
//! session-bound advisory lock on PostgreSQL (`session`); either way each new holder starts a
//! term, a number that only grows, kept in the `relay_leases` row.
//!
//! The term fences everything a relay changes: positioning commits only if the row still holds
//! the relay's term (read in the same transaction, under a row lock on PostgreSQL, so a takeover
//! waits for it or it sees the takeover), and the broker appends only for a term at or above the
//! latest that published (see `Broker::publish`). A term starts above the broker's fence too,
//! so a database restored from a backup (its term back in the past) cannot be fenced out
//! forever.

use std::sync::atomic::Ordering;

use sea_orm::{ConnectionTrait, DbErr, Statement};

use super::lease::LeaseRow;
use super::session::SessionLock;
use super::{RelayError, Worker};

/// The lease row's name.
pub(super) const LEASE_NAME: &str = "outbox-relay";

/// How this process takes part in relay leadership.
pub(super) enum Leadership {
    /// SQLite: a lease row with an expiry.
    Lease(LeaseRow),
    /// PostgreSQL: a session-level advisory lock.
    Session(SessionLock),
}

impl Leadership {
    async fn term(&self) -> Result<Option<i64>, RelayError> {
        match self {
            Leadership::Lease(lease) => Ok(lease.term().await?),
            Leadership::Session(session) => Ok(session.term()),
        }
    }

    fn forget(&self, term: i64) {
        match self {
            Leadership::Lease(lease) => lease.forget(),
            Leadership::Session(session) => session.forget(term),
        }
    }

    /// The lease row moved from term `from` to `to` while this process held it.
    fn moved(&self, from: i64, to: i64) {
        match self {
            Leadership::Lease(lease) => lease.moved(from, to),
            Leadership::Session(session) => session.moved(from, to),
        }
    }

    /// Gives leadership up at shutdown.
    pub(super) async fn release(&self) {
        match self {
            Leadership::Lease(lease) => lease.release().await,
            Leadership::Session(session) => session.release(),
        }
    }
}

impl Worker {
    /// The term this process relays in, or `None` while another process relays. A new term is
    /// moved above the broker's fence first.
    pub(super) async fn current_term(&self) -> Result<Option<i64>, RelayError> {
        let Some(started) = self.leadership.term().await? else {
            self.set_active(None);
            return Ok(None);
        };
        if self.known_term() == Some(started) {
            return Ok(Some(started));
        }
        let fence = self
            .broker
            .fence()
            .await
            .map_err(|e| RelayError::Broker(e.0))?;
        let term = if fence >= started {
            let raised = fence + 1;
            let moved = self
                .db
                .write_quietly(move |txn| {
                    Box::pin(async move { Ok(move_term(txn, started, raised).await?) })
                })
                .await?;
            if !moved {
                return Err(RelayError::fenced(
                    started,
                    "position",
                    "the term ended before it could move above the stream's fence",
                ));
            }
            tracing::info!(
                started,
                raised,
                "the stream was fenced at a later term than the database's (restored from a \
                 backup?); this relay continues in a term above it"
            );
            self.leadership.moved(started, raised);
            raised
        } else {
            started
        };
        self.set_active(Some(term));
        Ok(Some(term))
    }

    /// True while this process still relays in `term`.
    pub(super) async fn still_leading(&self, term: i64) -> Result<bool, RelayError> {
        Ok(self.current_term().await? == Some(term))
    }

    /// A fence refused `term` (another relay took over): stop relaying in it.
    pub(super) fn step_down(&self, term: i64, stage: &'static str, reason: &str) {
        metrics::counter!("stockroom_relay_fenced_total", "stage" => stage).increment(1);
        tracing::warn!(
            term,
            stage,
            %reason,
            "this relay's term has ended: another process relays now; nothing was positioned or \
             published in the old term"
        );
        self.leftovers.store(true, Ordering::Relaxed);
        self.leadership.forget(term);
        self.set_active(None);
    }

    /// The term this process last knew it relays in.
    pub(super) fn known_term(&self) -> Option<i64> {
        match self.term.load(Ordering::Acquire) {
            0 => None,
            term => Some(term),
        }
    }

    fn set_active(&self, term: Option<i64>) {
        let before = self.term.swap(term.unwrap_or(0), Ordering::AcqRel);
        if (before != 0) != term.is_some() {
            metrics::gauge!("stockroom_relay_active").set(if term.is_some() { 1.0 } else { 0.0 });
        }
    }
}

/// A statement on the lease row, written with PostgreSQL's `$n` placeholders (SQLite gets
/// `?n`, which it reads the same way).
fn on_lease(
    conn: &impl ConnectionTrait,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Statement {
    let backend = conn.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => sql.to_owned(),
        _ => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The lease row's term, locked against a takeover until the transaction ends (PostgreSQL;
/// SQLite's write transaction already excludes one). A positioning that does not find its term
/// here must not commit.
pub(super) async fn holds_term(conn: &impl ConnectionTrait, term: i64) -> Result<bool, DbErr> {
    let lock = match conn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => " FOR SHARE",
        _ => "",
    };
    let sql = format!("SELECT term FROM relay_leases WHERE name = $1{lock}");
    let row = conn
        .query_one_raw(on_lease(conn, &sql, [LEASE_NAME.into()]))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "term")? == term,
        None => false,
    })
}

/// Moves the lease row from `term` to `to`; false when `term` had already ended.
async fn move_term(conn: &impl ConnectionTrait, term: i64, to: i64) -> Result<bool, DbErr> {
    let sql = "UPDATE relay_leases SET term = $1 WHERE name = $2 AND term = $3";
    let values = [to.into(), LEASE_NAME.into(), term.into()];
    let moved = conn.execute_raw(on_lease(conn, sql, values)).await?;
    Ok(moved.rows_affected() == 1)
}

/// Rewrites the lease row as it is: a real write (a new row version, pages to journal) that
/// changes nothing, to find out whether writes reach storage again.
pub(super) async fn touch(conn: &impl ConnectionTrait) -> Result<(), DbErr> {
    let sql = "UPDATE relay_leases SET expires_at = expires_at WHERE name = $1";
    conn.execute_raw(on_lease(conn, sql, [LEASE_NAME.into()]))
        .await?;
    Ok(())
}
