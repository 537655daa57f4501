//! Copies each event's filter keys (`event_type`, `store_id`, `product_id`) into its narrow
//! `event_delivery` row, beside its position, and indexes them with the position: the `events`
//! query and subscription replays then read a filter's events in log order straight from an
//! index, instead of walking the whole log by position until enough match.
//!
//! The position is given by the relay after the event is written (and on PostgreSQL it does
//! not follow the sequence number), so the keys go where the position is. The indexes are
//! partial (positioned events only): the writer's insert adds no entry to them; positioning
//! adds one to each. The insert trigger fills the keys in the writer's transaction.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261201_000008_list_indexes::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

const FILL: &str = "UPDATE event_delivery SET event_type = e.event_type, store_id = e.store_id, \
     product_id = e.product_id FROM events e WHERE e.seq = event_delivery.seq";

/// `(keys…, position)` over positioned events. On SQLite every index entry holds `seq` (the
/// rowid); PostgreSQL adds it (`INCLUDE`), so a page's keys come from the index alone.
fn indexes(postgres: bool) -> Vec<String> {
    let include = if postgres { " INCLUDE (seq)" } else { "" };
    [
        ("idx_event_delivery_type", "event_type, position"),
        ("idx_event_delivery_store", "store_id, position"),
        (
            "idx_event_delivery_store_type",
            "store_id, event_type, position",
        ),
        ("idx_event_delivery_product", "product_id, position"),
    ]
    .iter()
    .map(|(name, columns)| {
        format!(
            "CREATE INDEX {name} ON event_delivery ({columns}){include} WHERE position IS NOT NULL"
        )
    })
    .collect()
}

const SQLITE_UP: &[&str] = &[
    "ALTER TABLE event_delivery ADD COLUMN event_type varchar",
    "ALTER TABLE event_delivery ADD COLUMN store_id varchar",
    "ALTER TABLE event_delivery ADD COLUMN product_id uuid_text",
    FILL,
    "DROP TRIGGER events_track_delivery",
    "CREATE TRIGGER events_track_delivery AFTER INSERT ON events BEGIN \
     INSERT INTO event_delivery (seq, event_type, store_id, product_id) \
     VALUES (NEW.seq, NEW.event_type, NEW.store_id, NEW.product_id); END",
];

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE event_delivery ADD COLUMN event_type varchar, ADD COLUMN store_id varchar, \
     ADD COLUMN product_id uuid",
    FILL,
    "CREATE OR REPLACE FUNCTION events_track_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN INSERT INTO event_delivery (seq, event_type, store_id, product_id) \
     VALUES (NEW.seq, NEW.event_type, NEW.store_id, NEW.product_id); RETURN NULL; END $$",
    "ANALYZE event_delivery",
];

const DROP_INDEXES: &[&str] = &[
    "DROP INDEX idx_event_delivery_product",
    "DROP INDEX idx_event_delivery_store_type",
    "DROP INDEX idx_event_delivery_store",
    "DROP INDEX idx_event_delivery_type",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER events_track_delivery",
    "CREATE TRIGGER events_track_delivery AFTER INSERT ON events \
     BEGIN INSERT INTO event_delivery (seq) VALUES (NEW.seq); END",
    "ALTER TABLE event_delivery DROP COLUMN product_id",
    "ALTER TABLE event_delivery DROP COLUMN store_id",
    "ALTER TABLE event_delivery DROP COLUMN event_type",
];

const POSTGRES_DOWN: &[&str] = &[
    "CREATE OR REPLACE FUNCTION events_track_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN INSERT INTO event_delivery (seq) VALUES (NEW.seq); RETURN NULL; END $$",
    "ALTER TABLE event_delivery DROP COLUMN product_id, DROP COLUMN store_id, \
     DROP COLUMN event_type",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                run_all(manager, &POSTGRES_UP[..3]).await?;
                let indexes = indexes(true);
                run_all(
                    manager,
                    &indexes.iter().map(String::as_str).collect::<Vec<_>>(),
                )
                .await?;
                run_all(manager, &POSTGRES_UP[3..]).await
            }
            _ => {
                run_all(manager, SQLITE_UP).await?;
                let indexes = indexes(false);
                run_all(
                    manager,
                    &indexes.iter().map(String::as_str).collect::<Vec<_>>(),
                )
                .await
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, DROP_INDEXES).await?;
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => run_all(manager, POSTGRES_DOWN).await,
            _ => run_all(manager, SQLITE_DOWN).await,
        }
    }
}
