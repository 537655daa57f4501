//! Reservation counters: how many reservations each store has in each state, and their units,
//! kept by the writes that create or move reservations, in the same transaction
//! (`domain::reservations::counts`). `reservationStats` sums a few rows instead of aggregating
//! every reservation.
//!
//! `slot` spreads one store's counters over several rows on PostgreSQL (by the writing
//! session), so concurrent transactions in one store do not queue on one row lock; SQLite
//! writes one transaction at a time and uses slot 0 only. The counters start from a count of
//! the existing reservations: stop writers of an older release before upgrading, or what they
//! write between this count and their stop is not counted.

use sea_orm_migration::prelude::*;

use crate::m20261201_000008_list_indexes::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE TABLE reservation_counts ( \
       store_id varchar NOT NULL, \
       status varchar(16) NOT NULL, \
       slot integer NOT NULL, \
       reservations bigint NOT NULL, \
       units bigint NOT NULL, \
       PRIMARY KEY (store_id, status, slot) )",
    "INSERT INTO reservation_counts (store_id, status, slot, reservations, units) \
     SELECT store_id, status, 0, COUNT(*), SUM(quantity) FROM reservations \
     GROUP BY store_id, status",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too: the count and the table appear together.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE reservation_counts"]).await
    }
}
