//! SQLite's relay leadership: a lease row with a holder, an expiry and a term. It is taken when
//! free or expired (the term grows by one), renewed while alive, released at shutdown.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::leadership::LEASE_NAME;
use crate::db::Db;
use crate::entity::relay_lease;
use crate::error::AppResult;

/// The lease row as this process holds it.
pub(super) struct LeaseRow {
    db: Db,
    holder: String,
    ttl: Duration,
    /// Until when, and in which term, the lease is known to be ours without asking.
    held: std::sync::Mutex<Option<(Instant, i64)>>,
}

impl LeaseRow {
    /// The lease of `holder` on `db`, not taken yet.
    pub(super) fn new(db: Db, holder: String, ttl: Duration) -> Self {
        LeaseRow {
            db,
            holder,
            ttl,
            held: std::sync::Mutex::new(None),
        }
    }

    /// The term while the lease is ours for at least half its lifetime, without asking the
    /// database; otherwise takes or renews it. `None` when another live process holds it.
    pub(super) async fn term(&self) -> AppResult<Option<i64>> {
        let fresh = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|(until, _)| *until > Instant::now() + self.ttl / 2);
        if let Some((_, term)) = fresh {
            return Ok(Some(term));
        }
        let holder = self.holder.clone();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let term = self
            .db
            .write_quietly(move |txn| {
                let holder = holder.clone();
                Box::pin(async move { Ok(take_lease(txn, &holder, ttl).await?) })
            })
            .await?;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) =
            term.map(|term| (Instant::now() + self.ttl, term));
        Ok(term)
    }

    /// Forgets the lease (a fence said the term ended): the next call asks the database.
    pub(super) fn forget(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The lease row moved from term `from` to `to` (above the broker's fence).
    pub(super) fn moved(&self, from: i64, to: i64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, term)) = held.as_mut().filter(|(_, term)| *term == from) {
            *term = to;
        }
    }

    /// Gives the lease up (it expires now, and keeps its term), so another process can take it
    /// at once, in the next term.
    pub(super) async fn release(&self) {
        let released = relay_lease::Entity::update_many()
            .col_expr(
                relay_lease::Column::ExpiresAt,
                Expr::value(chrono::DateTime::<Utc>::UNIX_EPOCH),
            )
            .filter(relay_lease::Column::Name.eq(LEASE_NAME))
            .filter(relay_lease::Column::Holder.eq(self.holder.clone()))
            .exec(&self.db.conn)
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the relay lease");
        }
    }
}

/// Takes or renews the lease for `holder`: its term, or `None` when another live holder has
/// it. A takeover (no row, an expired one, or another holder's) starts the next term; a renewal
/// keeps it.
async fn take_lease(
    conn: &impl ConnectionTrait,
    holder: &str,
    ttl: chrono::Duration,
) -> Result<Option<i64>, DbErr> {
    let now = Utc::now();
    let until = now + ttl;
    let current = relay_lease::Entity::find_by_id(LEASE_NAME)
        .one(conn)
        .await?;
    match current {
        None => {
            let term = 1;
            relay_lease::Entity::insert(relay_lease::ActiveModel {
                name: Set(LEASE_NAME.to_owned()),
                holder: Set(holder.to_owned()),
                expires_at: Set(until),
                term: Set(term),
            })
            .exec_without_returning(conn)
            .await?;
            Ok(Some(term))
        }
        Some(lease) if lease.holder == holder || lease.expires_at < now => {
            let term = if lease.holder == holder {
                lease.term
            } else {
                lease.term + 1
            };
            let renewed = relay_lease::Entity::update_many()
                .col_expr(relay_lease::Column::Holder, Expr::value(holder.to_owned()))
                .col_expr(relay_lease::Column::ExpiresAt, Expr::value(until))
                .col_expr(relay_lease::Column::Term, Expr::value(term))
                .filter(relay_lease::Column::Name.eq(LEASE_NAME))
                .filter(relay_lease::Column::Holder.eq(lease.holder))
                .filter(relay_lease::Column::Term.eq(lease.term))
                .filter(relay_lease::Column::ExpiresAt.eq(lease.expires_at))
                .exec(conn)
                .await?;
            Ok((renewed.rows_affected == 1).then_some(term))
        }
        Some(_) => Ok(None),
    }
}
