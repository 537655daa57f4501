//! Moves each event's delivery state (`position`, `published_at`, `attempts`, `last_error`,
//! `dead_at`) out of `events` into a narrow `event_delivery` table, one row per event.
//!
//! The relay writes every event's delivery state twice (its position, then its publication).
//! While those columns lived in `events`, each of those writes rewrote the whole row, payload
//! included: about six rows fit a page, so a batch of 1,000 dirtied some 170 pages, twice.
//! `event_delivery` rows are a few dozen bytes, so the same batch dirties a handful.
//!
//! - An `AFTER INSERT` trigger on `events` adds the event's delivery row, in the writer's
//!   transaction, so the outbox append stays one statement.
//! - The view `event_log` joins the two back into the shape readers had before.
//! - The partial index on pending positions moves with the columns; a partial index on dead
//!   events keeps counting them cheap.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The view every reader of events uses: what happened, with its delivery state.
const CREATE_VIEW: &str = "CREATE VIEW event_log AS \
     SELECT e.seq, e.id, e.event_type, e.aggregate_type, e.aggregate_id, e.store_id, \
            e.product_id, e.payload, e.occurred_at, \
            d.position, d.published_at, d.attempts, d.last_error, d.dead_at \
     FROM events e JOIN event_delivery d ON d.seq = e.seq";

const CREATE_PENDING: &str = "CREATE INDEX idx_event_delivery_pending ON event_delivery (position) \
     WHERE published_at IS NULL AND dead_at IS NULL";

/// Dead events only: the outbox gauges count them every second without reading the whole log.
const CREATE_DEAD: &str =
    "CREATE INDEX idx_event_delivery_dead ON event_delivery (seq) WHERE dead_at IS NOT NULL";

const COPY_DELIVERY: &str = "INSERT INTO event_delivery \
     (seq, position, published_at, attempts, last_error, dead_at) \
     SELECT seq, position, published_at, attempts, last_error, dead_at FROM events";

const SQLITE_UP: &[&str] = &[
    "DROP INDEX idx_events_pending",
    "CREATE TABLE event_delivery ( \
       seq integer NOT NULL PRIMARY KEY, \
       position integer UNIQUE, \
       published_at timestamp_with_timezone_text, \
       attempts integer NOT NULL DEFAULT 0, \
       last_error text, \
       dead_at timestamp_with_timezone_text )",
    COPY_DELIVERY,
    // SQLite cannot drop a UNIQUE column: rebuild `events` with what happened only.
    "CREATE TABLE events_content ( \
       seq integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
       id uuid_text NOT NULL UNIQUE, \
       event_type varchar NOT NULL, \
       aggregate_type varchar NOT NULL, \
       aggregate_id varchar NOT NULL, \
       store_id varchar, \
       product_id uuid_text, \
       payload json_text NOT NULL, \
       occurred_at timestamp_with_timezone_text NOT NULL )",
    "INSERT INTO events_content \
     SELECT seq, id, event_type, aggregate_type, aggregate_id, store_id, product_id, payload, \
            occurred_at FROM events",
    "DROP TABLE events",
    "ALTER TABLE events_content RENAME TO events",
    CREATE_PENDING,
    CREATE_DEAD,
    "CREATE TRIGGER events_track_delivery AFTER INSERT ON events \
     BEGIN INSERT INTO event_delivery (seq) VALUES (NEW.seq); END",
    CREATE_VIEW,
];

const POSTGRES_UP: &[&str] = &[
    "CREATE TABLE event_delivery ( \
       seq bigint NOT NULL PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE, \
       position bigint UNIQUE, \
       published_at timestamp with time zone, \
       attempts integer NOT NULL DEFAULT 0, \
       last_error text, \
       dead_at timestamp with time zone )",
    COPY_DELIVERY,
    "DROP INDEX idx_events_pending",
    "ALTER TABLE events DROP COLUMN position, DROP COLUMN published_at, \
       DROP COLUMN attempts, DROP COLUMN last_error, DROP COLUMN dead_at",
    CREATE_PENDING,
    CREATE_DEAD,
    "CREATE FUNCTION events_track_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN INSERT INTO event_delivery (seq) VALUES (NEW.seq); RETURN NULL; END $$",
    "CREATE TRIGGER events_track_delivery AFTER INSERT ON events \
     FOR EACH ROW EXECUTE FUNCTION events_track_delivery()",
    CREATE_VIEW,
];

const SQLITE_DOWN: &[&str] = &[
    "DROP VIEW event_log",
    "DROP TRIGGER events_track_delivery",
    "CREATE TABLE events_full ( \
       seq integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
       id uuid_text NOT NULL UNIQUE, \
       event_type varchar NOT NULL, \
       aggregate_type varchar NOT NULL, \
       aggregate_id varchar NOT NULL, \
       store_id varchar, \
       product_id uuid_text, \
       payload json_text NOT NULL, \
       occurred_at timestamp_with_timezone_text NOT NULL, \
       position integer UNIQUE, \
       published_at timestamp_with_timezone_text, \
       attempts integer NOT NULL DEFAULT 0, \
       last_error text, \
       dead_at timestamp_with_timezone_text )",
    "INSERT INTO events_full \
     SELECT e.seq, e.id, e.event_type, e.aggregate_type, e.aggregate_id, e.store_id, \
            e.product_id, e.payload, e.occurred_at, d.position, d.published_at, \
            COALESCE(d.attempts, 0), d.last_error, d.dead_at \
     FROM events e LEFT JOIN event_delivery d ON d.seq = e.seq",
    "DROP TABLE event_delivery",
    "DROP TABLE events",
    "ALTER TABLE events_full RENAME TO events",
    "CREATE INDEX idx_events_pending ON events (position) \
     WHERE published_at IS NULL AND dead_at IS NULL",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP VIEW event_log",
    "DROP TRIGGER events_track_delivery ON events",
    "DROP FUNCTION events_track_delivery()",
    "ALTER TABLE events ADD COLUMN position bigint UNIQUE, \
       ADD COLUMN published_at timestamp with time zone, \
       ADD COLUMN attempts integer NOT NULL DEFAULT 0, \
       ADD COLUMN last_error text, \
       ADD COLUMN dead_at timestamp with time zone",
    "UPDATE events e SET position = d.position, published_at = d.published_at, \
       attempts = d.attempts, last_error = d.last_error, dead_at = d.dead_at \
     FROM event_delivery d WHERE d.seq = e.seq",
    "DROP TABLE event_delivery",
    "CREATE INDEX idx_events_pending ON events (position) \
     WHERE published_at IS NULL AND dead_at IS NULL",
];

async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on one connection, on SQLite too: the table rebuild must be all or
    /// nothing, and a pooled connection with a stale schema would not see the dropped table.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => run_all(manager, POSTGRES_UP).await,
            _ => run_all(manager, SQLITE_UP).await,
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => run_all(manager, POSTGRES_DOWN).await,
            _ => run_all(manager, SQLITE_DOWN).await,
        }
    }
}
