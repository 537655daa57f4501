//! The lease that makes one relay per database: a row with a holder and an expiry, taken when
//! free or expired, renewed while alive, released at shutdown.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::entity::relay_lease;
use crate::error::AppResult;

/// The lease row's name.
const LEASE_NAME: &str = "outbox-relay";

impl super::Worker {
    /// True while the lease is ours for at least half its lifetime, without asking the database;
    /// otherwise takes or renews it. False when another live process holds it.
    pub(super) async fn hold_lease(&self) -> AppResult<bool> {
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

    pub(super) async fn renew_lease(&self) -> AppResult<bool> {
        let holder = self.holder.clone();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
        self.db
            .write_quietly(move |txn| {
                let holder = holder.clone();
                Box::pin(async move { Ok(take_lease(txn, &holder, ttl).await?) })
            })
            .await
    }

    pub(super) async fn release_lease(&self) {
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
