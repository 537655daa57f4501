//! Product search that does not read the whole catalogue: a case-insensitive substring of the
//! name or SKU is found through a trigram index.
//!
//! - SQLite: an FTS5 table with the `trigram` tokenizer over each product's name and SKU,
//!   kept by triggers on `products`. Its rowids come from `product_search_keys` (one stable
//!   integer per product id: the rowids of `products` itself may change on `VACUUM`). The
//!   table stores no copy of the text (`content=''`); a phrase query of the search text
//!   matches exactly the rows holding it as a substring.
//! - PostgreSQL: the `pg_trgm` extension and GIN trigram indexes on `lower(name)` and
//!   `lower(sku)`, which serve the `LIKE '%…%'` the query already makes. The migration creates
//!   the extension (it is trusted: the database owner may create it); where it is not
//!   installed or not allowed, the migration stops with what to run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

use crate::m20261201_000008_list_indexes::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_UP: &[&str] = &[
    "CREATE TABLE product_search_keys ( \
       key integer NOT NULL PRIMARY KEY, \
       product_id uuid_text NOT NULL UNIQUE )",
    "CREATE VIRTUAL TABLE product_search USING fts5 \
       (name, sku, content='', contentless_delete=1, tokenize='trigram')",
    "INSERT INTO product_search_keys (product_id) SELECT id FROM products ORDER BY id",
    "INSERT INTO product_search (rowid, name, sku) \
     SELECT k.key, p.name, p.sku FROM product_search_keys k JOIN products p ON p.id = k.product_id",
    "CREATE TRIGGER products_search_insert AFTER INSERT ON products BEGIN \
       INSERT INTO product_search_keys (product_id) VALUES (NEW.id); \
       INSERT INTO product_search (rowid, name, sku) \
       SELECT key, NEW.name, NEW.sku FROM product_search_keys WHERE product_id = NEW.id; \
     END",
    "CREATE TRIGGER products_search_update AFTER UPDATE OF name, sku ON products BEGIN \
       DELETE FROM product_search \
       WHERE rowid = (SELECT key FROM product_search_keys WHERE product_id = OLD.id); \
       INSERT INTO product_search (rowid, name, sku) \
       SELECT key, NEW.name, NEW.sku FROM product_search_keys WHERE product_id = NEW.id; \
     END",
    "CREATE TRIGGER products_search_delete AFTER DELETE ON products BEGIN \
       DELETE FROM product_search \
       WHERE rowid = (SELECT key FROM product_search_keys WHERE product_id = OLD.id); \
       DELETE FROM product_search_keys WHERE product_id = OLD.id; \
     END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER products_search_delete",
    "DROP TRIGGER products_search_update",
    "DROP TRIGGER products_search_insert",
    "DROP TABLE product_search",
    "DROP TABLE product_search_keys",
];

const POSTGRES_INDEXES: &[&str] = &[
    "CREATE INDEX idx_products_name_trgm ON products USING gin (lower(name) gin_trgm_ops)",
    "CREATE INDEX idx_products_sku_trgm ON products USING gin (lower(sku) gin_trgm_ops)",
    // The planner estimates `lower(name) LIKE …` from the expression's statistics, which only
    // ANALYZE gathers.
    "ANALYZE products",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX idx_products_sku_trgm",
    "DROP INDEX idx_products_name_trgm",
];

/// What to do when `pg_trgm` cannot be created here.
const NO_TRIGRAMS: &str = "product search needs the PostgreSQL extension pg_trgm, which this \
     database user could not create. Install it on the server (Debian and Ubuntu: the \
     postgresql-contrib package; it ships with PostgreSQL's official images and the managed \
     services), have a superuser run `CREATE EXTENSION pg_trgm;` in this database, then start \
     Stockroom again";

/// Creates `pg_trgm` unless it is there, or explains what to do.
async fn trigram_extension(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let installed = db
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT 1 AS present FROM pg_extension WHERE extname = 'pg_trgm'",
        ))
        .await?
        .is_some();
    if installed {
        return Ok(());
    }
    db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .map_err(|error| DbErr::Migration(format!("{NO_TRIGRAMS} ({error})")))?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                trigram_extension(manager).await?;
                run_all(manager, POSTGRES_INDEXES).await
            }
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
