//! Reservation counters per store and state (`reservation_counts`), kept in the transaction of
//! every change, so `reservationStats` reads a few rows whatever the number of reservations.
//!
//! Every write that creates or moves reservations calls [`record`] once, after its other
//! writes: the changes are summed per (store, state) and applied in one statement, in key
//! order. Taking the counter rows last and in one order means they add no lock cycle to the
//! row locks a transaction already holds (PostgreSQL); on PostgreSQL each session adds into its
//! own slot of a store's counter ([`SLOTS`]), so concurrent transactions in one store rarely
//! wait on the same row. The sums stay exact: each change is an atomic `+ n` on the row
//! (`INSERT … ON CONFLICT DO UPDATE`), committed or rolled back with the change it counts.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QuerySelect,
};

use super::{Stats, Status};
use crate::entity::reservation_count::{self, Column};
use crate::error::AppResult;

/// Slots per store and state on PostgreSQL: the writing session's process id picks one.
pub const SLOTS: i32 = 16;

/// One reservation created (`from: None`) or moved from one state to another.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    /// The reservation's store.
    pub store_id: &'a str,
    /// The state it leaves; `None` for a new reservation.
    pub from: Option<Status>,
    /// The state it enters.
    pub to: Status,
    /// Its units.
    pub quantity: i32,
}

/// Adds `moves` to the counters, in the caller's transaction.
pub async fn record(conn: &impl ConnectionTrait, moves: &[Move<'_>]) -> AppResult<()> {
    let mut sums: BTreeMap<(&str, &'static str), (i64, i64)> = BTreeMap::new();
    for change in moves {
        let units = i64::from(change.quantity);
        let to = sums
            .entry((change.store_id, change.to.as_str()))
            .or_default();
        to.0 += 1;
        to.1 += units;
        if let Some(from) = change.from {
            let from = sums.entry((change.store_id, from.as_str())).or_default();
            from.0 -= 1;
            from.1 -= units;
        }
    }
    sums.retain(|_, (count, units)| *count != 0 || *units != 0);
    if sums.is_empty() {
        return Ok(());
    }
    let slot = match conn.get_database_backend() {
        DatabaseBackend::Postgres => Expr::cust(format!("pg_backend_pid() % {SLOTS}")),
        _ => Expr::val(0),
    };
    let mut insert = Query::insert();
    insert.into_table(reservation_count::Entity).columns([
        Column::StoreId,
        Column::Status,
        Column::Slot,
        Column::Reservations,
        Column::Units,
    ]);
    for ((store, status), (count, units)) in sums {
        insert.values_panic([
            store.into(),
            status.into(),
            slot.clone(),
            count.into(),
            units.into(),
        ]);
    }
    insert.on_conflict(
        OnConflict::columns([Column::StoreId, Column::Status, Column::Slot])
            .value(
                Column::Reservations,
                Expr::col((reservation_count::Entity, Column::Reservations))
                    .add(Expr::col((Excluded, Column::Reservations))),
            )
            .value(
                Column::Units,
                Expr::col((reservation_count::Entity, Column::Units))
                    .add(Expr::col((Excluded, Column::Units))),
            )
            .to_owned(),
    );
    conn.execute(&insert).await?;
    Ok(())
}

/// `excluded`, the row an upsert proposed.
#[derive(Debug, Clone, Copy)]
struct Excluded;

impl sea_orm::sea_query::Iden for Excluded {
    fn unquoted(&self) -> &str {
        "excluded"
    }
}

/// `CAST(SUM(column) AS bigint)`: PostgreSQL sums `bigint` into `numeric`.
fn total(column: Column) -> Expr {
    Func::cast_as(Func::sum(Expr::col(column)), Alias::new("bigint")).into()
}

/// Counts by state and the units held by PENDING reservations, for one store or all.
pub async fn stats(conn: &impl ConnectionTrait, store_id: Option<&str>) -> AppResult<Stats> {
    let mut select = reservation_count::Entity::find()
        .select_only()
        .column(Column::Status)
        .column_as(total(Column::Reservations), "n")
        .column_as(total(Column::Units), "units")
        .group_by(Column::Status);
    if let Some(store) = store_id {
        select = select.filter(Column::StoreId.eq(store));
    }
    let rows: Vec<(String, i64, i64)> = select.into_tuple().all(conn).await?;
    let mut stats = Stats::default();
    for (status, count, units) in rows {
        match Status::parse(&status) {
            Some(Status::Pending) => {
                stats.pending = count;
                stats.reserved_quantity = units;
            }
            Some(Status::Confirmed) => stats.confirmed = count,
            Some(Status::Cancelled) => stats.cancelled = count,
            Some(Status::Expired) => stats.expired = count,
            None => {}
        }
    }
    Ok(stats)
}
