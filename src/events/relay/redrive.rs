//! Redrive: dead events back to pending, read first by the next round.

use std::sync::atomic::Ordering;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, QueryTrait,
};
use uuid::Uuid;

use crate::db::Db;
use crate::entity::{event_delivery, event_row};
use crate::error::AppResult;

/// Puts dead events back to pending (all when `ids` is `None`), then has the relay read them
/// before it positions anything new; returns how many.
impl super::RelayHandle {
    /// Puts dead events back to pending (all when `ids` is `None`), then has this process's
    /// relay read them before it positions anything new; returns how many.
    pub async fn redrive_events(&self, db: &Db, ids: Option<Vec<Uuid>>) -> AppResult<u64> {
        let count = db
            .write_quietly(move |txn| {
                let ids = ids.clone();
                Box::pin(async move { Ok(redrive(txn, ids).await?) })
            })
            .await?;
        self.redriven.store(true, Ordering::Release);
        db.wake_relay();
        Ok(count)
    }
}

/// Puts dead events back to pending (all when `ids` is `None`); returns how many.
pub async fn redrive(conn: &impl ConnectionTrait, ids: Option<Vec<Uuid>>) -> Result<u64, DbErr> {
    let mut update = event_delivery::Entity::update_many()
        .col_expr(
            event_delivery::Column::DeadAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(event_delivery::Column::Attempts, Expr::value(0))
        .filter(event_delivery::Column::DeadAt.is_not_null());
    if let Some(ids) = ids {
        let seqs = event_row::Entity::find()
            .select_only()
            .column(event_row::Column::Seq)
            .filter(event_row::Column::Id.is_in(ids))
            .into_query();
        update = update.filter(event_delivery::Column::Seq.in_subquery(seqs));
    }
    Ok(update.exec(conn).await?.rows_affected)
}
