//! Indexes that match each list query's filter and its keyset order, so a page reads only the
//! rows it returns, however large the tables grow:
//!
//! - `reservations` are listed by id: `(status, id)`, `(store_id, id)`, `(store_id, status,
//!   id)`, `(product_id, id)` and `(customer_id, id)` (the store's plain index, which made
//!   SQLite sort every row of the store, goes);
//! - `products` by id within a category: `(category, id)` replaces `(category)`;
//! - `stock_levels` by id within a store or product, and the low ones: a generated column
//!   `low_stock` (`quantity - reserved <= reorder_point`) and two partial indexes over the
//!   low levels only. The flag changes only when a level crosses its reorder point, so on
//!   PostgreSQL the updates of every reservation stay HOT (no index entry is written for them).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: &[&str] = &[
    "DROP INDEX IF EXISTS idx_reservations_store",
    "CREATE INDEX idx_reservations_store_id ON reservations (store_id, id)",
    "CREATE INDEX idx_reservations_store_status_id ON reservations (store_id, status, id)",
    "CREATE INDEX idx_reservations_status_id ON reservations (status, id)",
    "CREATE INDEX idx_reservations_product_id ON reservations (product_id, id)",
    "CREATE INDEX idx_reservations_customer_id ON reservations (customer_id, id) \
     WHERE customer_id IS NOT NULL",
    "DROP INDEX IF EXISTS idx_products_category",
    "CREATE INDEX idx_products_category_id ON products (category, id)",
    "DROP INDEX IF EXISTS idx_stock_levels_store",
    "CREATE INDEX idx_stock_levels_store_id ON stock_levels (store_id, id)",
    "CREATE INDEX idx_stock_levels_product_id ON stock_levels (product_id, id)",
];

/// SQLite computes the flag when it is read or indexed (a stored column cannot be added).
const SQLITE_LOW: &str = "ALTER TABLE stock_levels ADD COLUMN low_stock integer \
     GENERATED ALWAYS AS (quantity - reserved <= reorder_point) VIRTUAL";
const POSTGRES_LOW: &str = "ALTER TABLE stock_levels ADD COLUMN low_stock boolean \
     GENERATED ALWAYS AS (quantity - reserved <= reorder_point) STORED";

const LOW_INDEXES: &[&str] = &[
    "CREATE INDEX idx_stock_levels_low ON stock_levels (id) WHERE low_stock",
    "CREATE INDEX idx_stock_levels_low_store ON stock_levels (store_id, id) WHERE low_stock",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_stock_levels_low_store",
    "DROP INDEX idx_stock_levels_low",
    "ALTER TABLE stock_levels DROP COLUMN low_stock",
    "DROP INDEX idx_stock_levels_product_id",
    "DROP INDEX idx_stock_levels_store_id",
    "CREATE INDEX idx_stock_levels_store ON stock_levels (store_id)",
    "DROP INDEX idx_products_category_id",
    "CREATE INDEX idx_products_category ON products (category)",
    "DROP INDEX idx_reservations_customer_id",
    "DROP INDEX idx_reservations_product_id",
    "DROP INDEX idx_reservations_status_id",
    "DROP INDEX idx_reservations_store_status_id",
    "DROP INDEX idx_reservations_store_id",
    "CREATE INDEX idx_reservations_store ON reservations (store_id)",
];

/// Runs `statements` in order on the migration's connection.
pub(crate) async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, INDEXES).await?;
        let low = match manager.get_database_backend() {
            DatabaseBackend::Postgres => POSTGRES_LOW,
            _ => SQLITE_LOW,
        };
        run_all(manager, &[low]).await?;
        run_all(manager, LOW_INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, DOWN).await
    }
}
