//! Appending events to the outbox inside the caller's transaction, which events a reader wants,
//! and the outbox figures. Reading the log is `super::log`.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{event, event_delivery, event_row};

/// An event about to be appended; the relay gives it a position later.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `stock.updated`, `reservation.created`, …
    pub event_type: &'static str,
    /// `stock_level` or `reservation`.
    pub aggregate_type: &'static str,
    /// Id of the aggregate the event is about.
    pub aggregate_id: String,
    /// Store concerned, if any.
    pub store_id: Option<String>,
    /// Product concerned, if any.
    pub product_id: Option<Uuid>,
    /// Post-change state.
    pub payload: Value,
}

/// Appends events in the caller's transaction (one statement; a trigger adds their delivery
/// rows).
pub async fn append(conn: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let now = crate::clock::now();
    let rows = events.into_iter().map(|e| event_row::ActiveModel {
        id: Set(Uuid::now_v7()),
        event_type: Set(e.event_type.to_owned()),
        aggregate_type: Set(e.aggregate_type.to_owned()),
        aggregate_id: Set(e.aggregate_id),
        store_id: Set(e.store_id),
        product_id: Set(e.product_id),
        payload: Set(e.payload),
        occurred_at: Set(now),
        ..Default::default()
    });
    event_row::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct EventSelector {
    /// Only these types (any when empty).
    pub types: Vec<String>,
    /// Only this store.
    pub store_id: Option<String>,
    /// Only this product.
    pub product_id: Option<Uuid>,
}

impl EventSelector {
    /// True when the event passes the filter.
    pub fn matches(&self, e: &event::Model) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == &e.event_type))
            && self
                .store_id
                .as_ref()
                .is_none_or(|s| e.store_id.as_ref() == Some(s))
            && self.product_id.is_none_or(|p| e.product_id == Some(p))
    }
}

/// Outbox figures: pending count, dead count, oldest pending, last publish.
#[derive(Debug, Clone)]
pub struct OutboxFigures {
    /// Events not yet published and not dead.
    pub pending: u64,
    /// Events given up on.
    pub dead: u64,
    /// When the oldest pending event occurred.
    pub oldest_pending: Option<chrono::DateTime<Utc>>,
    /// When the newest published event (in log order) was published.
    pub last_published: Option<chrono::DateTime<Utc>>,
}

/// Reads the outbox figures (every second, on every process): each query walks an index over
/// the backlog, the dead events or the newest positions, never the whole log.
pub async fn figures(conn: &impl ConnectionTrait) -> Result<OutboxFigures, DbErr> {
    let pending = event_delivery::Entity::find()
        .filter(event_delivery::Column::PublishedAt.is_null())
        .filter(event_delivery::Column::DeadAt.is_null())
        .count(conn)
        .await?;
    // The first pending sequence number from the partial index over pending events (walking
    // the log in sequence order to the first pending one would read every published event).
    let first_pending = event_delivery::Entity::find()
        .select_only()
        .expr(Func::min(Expr::col(event_delivery::Column::Seq)))
        .filter(event_delivery::Column::PublishedAt.is_null())
        .filter(event_delivery::Column::DeadAt.is_null())
        .into_query();
    let oldest_pending = event_row::Entity::find()
        .select_only()
        .column(event_row::Column::OccurredAt)
        .filter(Expr::col(event_row::Column::Seq).in_subquery(first_pending))
        .into_tuple::<chrono::DateTime<Utc>>()
        .one(conn)
        .await?;
    let dead = event_delivery::Entity::find()
        .filter(event_delivery::Column::DeadAt.is_not_null())
        .count(conn)
        .await?;
    let last_published = event_delivery::Entity::find()
        .select_only()
        .column(event_delivery::Column::PublishedAt)
        .filter(event_delivery::Column::Position.is_not_null())
        .filter(event_delivery::Column::PublishedAt.is_not_null())
        .order_by_desc(event_delivery::Column::Position)
        .into_tuple::<Option<chrono::DateTime<Utc>>>()
        .one(conn)
        .await?
        .flatten();
    Ok(OutboxFigures {
        pending,
        dead,
        oldest_pending,
        last_published,
    })
}
