//! PostgreSQL for `--postgres URL`: a fresh database per scenario (created on the server at
//! `URL`, migrated by `stockroom migrate`, dropped after), seeded with plain SQL, and the raw
//! baseline: the same number of connections, each doing one transaction per reservation
//! (guarded `UPDATE … RETURNING`, `INSERT` the reservation, `INSERT` its event; prepared
//! statements; the server's default `synchronous_commit`), with no HTTP or GraphQL.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::baseline::{Sku, reservation_payload};
use crate::load::{self, RunStats};
use crate::server::BenchResult;

/// A database the bench created, dropped by [`Database::drop_now`].
pub struct Database {
    server: String,
    name: String,
    /// Its URL.
    pub url: String,
}

fn pg(e: sqlx::Error) -> String {
    format!("PostgreSQL: {e}")
}

/// `server` with `database` as its path.
fn with_database(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let base = base.trim_end_matches('/');
    // postgres://user@host:port[/db]: replace the path after the authority, if any.
    let authority_end = base
        .find("://")
        .map(|at| at + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    format!("{}/{database}{query}", &base[..authority_end])
}

impl Database {
    /// Creates `bench_<label>_<pid>` on the server at `server` and migrates it with `binary`.
    pub async fn create(
        server: &str,
        label: &str,
        binary: &std::path::Path,
    ) -> BenchResult<Database> {
        let name = format!("bench_{}_{}", label.replace('-', "_"), std::process::id());
        let mut admin = PgConnection::connect(&with_database(server, "postgres"))
            .await
            .map_err(pg)?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await
            .map_err(pg)?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(pg)?;
        let database = Database {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        };
        crate::baseline::migrate_url(binary, &database.url).await?;
        Ok(database)
    }

    /// Drops the database (its connections are closed first).
    pub async fn drop_now(self) {
        let Ok(mut admin) = PgConnection::connect(&with_database(&self.server, "postgres")).await
        else {
            return;
        };
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await;
    }
}

/// Stores, products and a level for every pair holding `quantity`, rows as the service writes
/// them.
pub async fn seed(
    url: &str,
    products: usize,
    stores: usize,
    quantity: i64,
) -> BenchResult<Vec<Sku>> {
    let mut conn = PgConnection::connect(url).await.map_err(pg)?;
    let mut tx = conn.begin().await.map_err(pg)?;
    let store_ids: Vec<String> = (0..stores).map(|s| format!("store-{s:03}")).collect();
    for (s, id) in store_ids.iter().enumerate() {
        sqlx::query("INSERT INTO stores (id, name, created_at) VALUES ($1, $2, now())")
            .bind(id)
            .bind(format!("Bench store {s}"))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
    }
    let mut skus = Vec::with_capacity(products * stores);
    for p in 0..products {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO products (id, sku, name, description, category, price, created_at, \
             updated_at) VALUES ($1, $2, $3, NULL, 'bench', '9.99', now(), now())",
        )
        .bind(id)
        .bind(format!("BENCH-{p:05}"))
        .bind(format!("Bench product {p}"))
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        for store in &store_ids {
            sqlx::query(
                "INSERT INTO stock_levels (product_id, store_id, quantity, reserved, \
                 reorder_point, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, 0, 0, 1, now(), now())",
            )
            .bind(id)
            .bind(store)
            .bind(quantity as i32)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
            skus.push(Sku {
                product_id: id,
                store_id: store.clone(),
            });
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(skus)
}

/// A pool of exactly `connections` connections to `url`.
async fn pool(url: &str, connections: usize) -> BenchResult<PgPool> {
    PgPoolOptions::new()
        .min_connections(connections as u32)
        .max_connections(connections as u32)
        .connect(url)
        .await
        .map_err(pg)
}

/// One reservation in its own transaction; false when the guard refused it.
async fn reserve_once(pool: &PgPool, sku: &Sku) -> Result<bool, String> {
    let mut tx = pool.begin().await.map_err(pg)?;
    let level = sqlx::query(
        "UPDATE stock_levels SET reserved = reserved + 1, version = version + 1, \
         updated_at = now() WHERE product_id = $1 AND store_id = $2 AND quantity - reserved >= 1 \
         RETURNING quantity, reserved, reorder_point, version, \
         to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00')",
    )
    .bind(sku.product_id)
    .bind(&sku.store_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(pg)?;
    let Some(level) = level else {
        return Ok(false);
    };
    let reservation_id = Uuid::now_v7();
    let at: String = level.get(4);
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(900)).to_rfc3339();
    sqlx::query(
        "INSERT INTO reservations (id, batch_id, product_id, store_id, quantity, status, \
         customer_id, reason, expires_at, created_at, updated_at) \
         VALUES ($1, NULL, $2, $3, 1, 'PENDING', NULL, NULL, now() + interval '900 seconds', \
         now(), now())",
    )
    .bind(reservation_id)
    .bind(sku.product_id)
    .bind(&sku.store_id)
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    let numbers = |i: usize| i64::from(level.get::<i32, _>(i));
    let payload = reservation_payload(
        reservation_id,
        sku,
        (numbers(0), numbers(1), numbers(2), numbers(3)),
        &expires,
        &at,
    );
    sqlx::query(
        "INSERT INTO events (id, event_type, aggregate_type, aggregate_id, store_id, \
         product_id, payload, occurred_at) \
         VALUES ($1, 'reservation.created', 'reservation', $2, $3, $4, $5::json, now())",
    )
    .bind(Uuid::now_v7())
    .bind(reservation_id.to_string())
    .bind(&sku.store_id)
    .bind(sku.product_id)
    .bind(payload.to_string())
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(true)
}

/// `clients` connections reserving one unit each per transaction for `duration`, on the hot
/// level (`hot`) or a random one.
pub async fn reserve_loop(
    url: &str,
    skus: &Arc<Vec<Sku>>,
    clients: usize,
    hot: bool,
    duration: Duration,
) -> BenchResult<RunStats> {
    let pool = pool(url, clients).await?;
    let skus = skus.clone();
    let stats = load::run_async(clients, duration, move |worker, i| {
        let pool = pool.clone();
        let index = crate::scenarios::level_index(hot, worker, i, skus.len());
        let sku = skus[index].clone();
        async move {
            match reserve_once(&pool, &sku).await? {
                true => Ok(()),
                false => Err("the guard refused a reservation".to_owned()),
            }
        }
    })
    .await;
    Ok(stats)
}

/// Inserts `events` into the outbox of the database at `url`, unpositioned and unpublished, in
/// one transaction (batches of 5,000 rows through `UNNEST`).
pub async fn insert_backlog(url: &str, events: &[crate::baseline::EventRow]) -> BenchResult<()> {
    let mut conn = PgConnection::connect(url).await.map_err(pg)?;
    let mut tx = conn.begin().await.map_err(pg)?;
    for chunk in events.chunks(5_000) {
        let column = |f: fn(&crate::baseline::EventRow) -> String| -> Vec<String> {
            chunk.iter().map(f).collect()
        };
        sqlx::query(
            "INSERT INTO events (id, event_type, aggregate_type, aggregate_id, store_id, \
             product_id, payload, occurred_at) \
             SELECT id, 'reservation.created', 'reservation', aggregate, store, product, \
             payload::json, occurred::timestamptz \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[]) \
             AS t(id, aggregate, store, product, payload, occurred)",
        )
        .bind(chunk.iter().map(|e| e.id).collect::<Vec<Uuid>>())
        .bind(column(|e| e.aggregate_id.clone()))
        .bind(column(|e| e.store_id.clone()))
        .bind(chunk.iter().map(|e| e.product_id).collect::<Vec<Uuid>>())
        .bind(column(|e| e.payload.clone()))
        .bind(column(|e| e.occurred_at.clone()))
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)?;
    Ok(())
}

/// One dashboard request without GraphQL or HTTP on PostgreSQL: the same three SELECTs the
/// server sends (the page of levels, then its products and stores by id, every column, as the
/// service's entities read them), then the same response JSON. Returns the body's length.
async fn dashboard_once(pool: &PgPool, page: usize) -> Result<usize, String> {
    use crate::baseline::{LevelRow, ProductRow, page_json};
    use std::collections::HashMap;
    type Level = (
        i64,
        Uuid,
        String,
        i32,
        i32,
        i32,
        i32,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Level> = sqlx::query_as(
        "SELECT id, product_id, store_id, quantity, reserved, reorder_point, version, \
         created_at, updated_at FROM stock_levels ORDER BY id ASC LIMIT $1",
    )
    .bind(page as i64 + 1)
    .fetch_all(pool)
    .await
    .map_err(pg)?;
    let mut levels: Vec<LevelRow> = rows
        .into_iter()
        .map(
            |(_, product_id, store_id, quantity, reserved, ..)| LevelRow {
                product_id,
                store_id,
                quantity: quantity.into(),
                reserved: reserved.into(),
            },
        )
        .collect();
    levels.truncate(page);
    let mut product_ids: Vec<Uuid> = levels.iter().map(|l| l.product_id).collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let mut store_ids: Vec<String> = levels.iter().map(|l| l.store_id.clone()).collect();
    store_ids.sort_unstable();
    store_ids.dedup();
    type Product = (
        Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    );
    let products: Vec<Product> = sqlx::query_as(
        "SELECT id, sku, name, description, category, price, created_at, updated_at \
         FROM products WHERE id = ANY($1)",
    )
    .bind(&product_ids)
    .fetch_all(pool)
    .await
    .map_err(pg)?;
    let products: HashMap<Uuid, ProductRow> = products
        .into_iter()
        .map(|(id, sku, name, ..)| (id, ProductRow { sku, name }))
        .collect();
    let stores: Vec<(String, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, name, created_at FROM stores WHERE id = ANY($1)")
            .bind(&store_ids)
            .fetch_all(pool)
            .await
            .map_err(pg)?;
    let stores: HashMap<String, String> =
        stores.into_iter().map(|(id, name, _)| (id, name)).collect();
    Ok(page_json(&levels, &products, &stores)?.len())
}

/// The dashboard baseline: `clients` connections repeating [`dashboard_once`] for `duration`.
pub async fn dashboard_loop(
    url: &str,
    clients: usize,
    page: usize,
    duration: Duration,
) -> BenchResult<RunStats> {
    let pool = pool(url, clients).await?;
    Ok(load::run_async(clients, duration, move |_, _| {
        let pool = pool.clone();
        async move { dashboard_once(&pool, page).await.map(drop) }
    })
    .await)
}

/// Length of the baseline's dashboard body (to compare with the server's).
pub async fn dashboard_body_len(url: &str, page: usize) -> BenchResult<usize> {
    let pool = pool(url, 1).await?;
    dashboard_once(&pool, page).await
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn puts_the_database_in_the_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/old?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
    }
}
