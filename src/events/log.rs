//! Reading the event log in log order, through the index that matches the filter.
//!
//! Each event's filter keys (`event_type`, `store_id`, `product_id`) sit beside its position
//! in `event_delivery`, indexed as `(product_id, position)`, `(store_id, position)`,
//! `(event_type, position)` and `(store_id, event_type, position)` (migration 9). A page first
//! takes the positions it returns from one of those indexes, then reads those events:
//!
//! - a product: its index (the other filters checked on its events);
//! - types: one range per type (with the store, if given), each at most a page long, merged by
//!   position: an index range over several values is not in position order by itself;
//! - a store: its index; no filter: the log itself, by position.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement, UnionType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::outbox::EventSelector;
use crate::domain::paging::placeholders;
use crate::entity::{event, event_delivery};

type Column = event_delivery::Column;

/// Positioned events after `after`, in log order, at most `limit`.
pub async fn read_log(
    conn: &impl ConnectionTrait,
    after: i64,
    selector: &EventSelector,
    limit: u64,
) -> Result<Vec<event::Model>, DbErr> {
    let page = event::Entity::find().order_by_asc(event::Column::Position);
    let unfiltered =
        selector.types.is_empty() && selector.store_id.is_none() && selector.product_id.is_none();
    if unfiltered {
        return page
            .filter(event::Column::Position.gt(after))
            .limit(limit)
            .all(conn)
            .await;
    }
    page.filter(Expr::col(event::Column::Seq).in_subquery(page_keys(
        conn.get_database_backend(),
        after,
        selector,
        limit,
    )))
    .all(conn)
    .await
}

/// `SELECT seq FROM event_delivery …`: the sequence numbers of the page, taken from the index
/// that matches `selector`.
fn page_keys(
    backend: DatabaseBackend,
    after: i64,
    selector: &EventSelector,
    limit: u64,
) -> SelectStatement {
    let mut types = selector.types.clone();
    types.sort();
    types.dedup();
    if let Some(product) = selector.product_id {
        // A product's events are few: its index, with the other filters checked on them. They
        // are written as expressions (`store_id || ''`) no index serves, so the planner cannot
        // walk a store's events in position order looking for the product's instead.
        let mut keys = range(after, &EventSelector::default(), limit, &[Column::Seq]);
        keys.and_where(Expr::col(Column::ProductId).eq(product));
        if let Some(store) = &selector.store_id {
            keys.and_where(unindexed(backend, Column::StoreId).eq(store.as_str()));
        }
        if !types.is_empty() {
            keys.and_where(unindexed(backend, Column::EventType).is_in(types));
        }
        return keys;
    }
    if types.is_empty() {
        return range(after, selector, limit, &[Column::Seq]);
    }
    // One range per type, each at most `limit` long, merged by position.
    let mut ranges = types.iter().map(|t| {
        let mut one = range(after, selector, limit, &[Column::Seq, Column::Position]);
        one.and_where(Expr::col(Column::EventType).eq(t.as_str()));
        wrapped(one)
    });
    let mut merged = ranges.next().expect("at least one type");
    for other in ranges {
        merged.union(UnionType::All, other);
    }
    Query::select()
        .column(Column::Seq)
        .from_subquery(merged, Alias::new("merged"))
        .order_by(Column::Position, Order::Asc)
        .limit(limit)
        .to_owned()
}

/// `column || ''`: the column's value, in a form no index serves.
fn unindexed(backend: DatabaseBackend, column: Column) -> Expr {
    Expr::cust_with_exprs(placeholders(backend, "$1 || ''"), [Expr::col(column)])
}

/// `SELECT columns FROM event_delivery WHERE position > after [AND store_id = …]
/// ORDER BY position LIMIT limit`.
fn range(after: i64, selector: &EventSelector, limit: u64, columns: &[Column]) -> SelectStatement {
    let mut query = Query::select();
    query
        .columns(columns.iter().copied())
        .from(event_delivery::Entity)
        .and_where(Expr::col(Column::Position).is_not_null())
        .and_where(Expr::col(Column::Position).gt(after));
    if let Some(store) = &selector.store_id {
        query.and_where(Expr::col(Column::StoreId).eq(store.as_str()));
    }
    query
        .order_by(Column::Position, Order::Asc)
        .limit(limit)
        .to_owned()
}

/// `SELECT seq, position FROM (range) AS r`: a range with its own order and limit, as one arm
/// of a `UNION ALL`.
fn wrapped(range: SelectStatement) -> SelectStatement {
    Query::select()
        .columns([Column::Seq, Column::Position])
        .from_subquery(range, Alias::new("r"))
        .to_owned()
}
