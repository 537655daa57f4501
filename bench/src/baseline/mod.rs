//! Raw SQLite: seeding databases (for the server and the baselines alike), the one-transaction-
//! per-reservation loop, the dashboard read loop, and the outbox backlog for the relay drain.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::load::{RunStats, micros};
use crate::rawsql::{Conn, SqlError, SqlResult};
use crate::server::{BenchResult, sqlite_url};

mod backlog;
mod dashboard;

pub use backlog::*;
pub use dashboard::*;

/// A stock level the load targets: product id and store id.
#[derive(Debug, Clone)]
pub struct Sku {
    /// Product.
    pub product_id: Uuid,
    /// Store.
    pub store_id: String,
}

/// Timestamps as the service stores them: RFC 3339, microseconds, `+00:00`.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Creates the service's schema in `path` by running `stockroom migrate`.
pub async fn migrate(binary: &Path, path: &Path) -> BenchResult<()> {
    migrate_url(binary, &sqlite_url(path)).await
}

/// Creates the service's schema in the database at `url` by running `stockroom migrate`.
pub async fn migrate_url(binary: &Path, url: &str) -> BenchResult<()> {
    let status = tokio::process::Command::new(binary)
        .arg("migrate")
        .arg("--database-url")
        .arg(url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| format!("running {} migrate: {e}", binary.display()))?;
    if !status.success() {
        return Err(format!("{} migrate failed: {status}", binary.display()));
    }
    Ok(())
}

fn sql(e: SqlError) -> String {
    e.to_string()
}

/// Inserts `products` products and `stores` stores and a level for every pair with `quantity`
/// units, in one transaction, rows shaped exactly as the service writes them. Returns the levels.
pub fn seed(path: &Path, products: usize, stores: usize, quantity: i64) -> BenchResult<Vec<Sku>> {
    let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
    let now = stamp(Utc::now());
    conn.exec("BEGIN IMMEDIATE").map_err(sql)?;
    let mut store_ids = Vec::with_capacity(stores);
    {
        let mut insert = conn
            .prepare("INSERT INTO stores (id, name, created_at) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        for s in 0..stores {
            let id = format!("store-{s:03}");
            insert.bind_text(1, &id).map_err(sql)?;
            insert
                .bind_text(2, &format!("Bench store {s}"))
                .map_err(sql)?;
            insert.bind_text(3, &now).map_err(sql)?;
            insert.run().map_err(sql)?;
            store_ids.push(id);
        }
    }
    let mut product_ids = Vec::with_capacity(products);
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO products (id, sku, name, description, category, price, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, NULL, 'bench', '9.99', ?4, ?4)",
            )
            .map_err(sql)?;
        for p in 0..products {
            let id = Uuid::now_v7();
            insert.bind_blob(1, id.as_bytes()).map_err(sql)?;
            insert.bind_text(2, &format!("BENCH-{p:05}")).map_err(sql)?;
            insert
                .bind_text(3, &format!("Bench product {p}"))
                .map_err(sql)?;
            insert.bind_text(4, &now).map_err(sql)?;
            insert.run().map_err(sql)?;
            product_ids.push(id);
        }
    }
    let mut skus = Vec::with_capacity(products * stores);
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO stock_levels (product_id, store_id, quantity, reserved, \
                 reorder_point, version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 0, 0, 1, ?4, ?4)",
            )
            .map_err(sql)?;
        for product in &product_ids {
            for store in &store_ids {
                insert.bind_blob(1, product.as_bytes()).map_err(sql)?;
                insert.bind_text(2, store).map_err(sql)?;
                insert.bind_i64(3, quantity).map_err(sql)?;
                insert.bind_text(4, &now).map_err(sql)?;
                insert.run().map_err(sql)?;
                skus.push(Sku {
                    product_id: *product,
                    store_id: store.clone(),
                });
            }
        }
    }
    conn.exec("COMMIT").map_err(sql)?;
    conn.exec("PRAGMA wal_checkpoint(TRUNCATE)").map_err(sql)?;
    Ok(skus)
}

/// The payload of `reservation.created` as the service writes it.
pub fn reservation_payload(
    reservation_id: Uuid,
    sku: &Sku,
    level: (i64, i64, i64, i64),
    expires_at: &str,
    updated_at: &str,
) -> Value {
    let (quantity, reserved, reorder_point, version) = level;
    json!({
        "reservation_id": reservation_id,
        "batch_id": null,
        "product_id": sku.product_id,
        "store_id": sku.store_id,
        "quantity": 1,
        "status": "PENDING",
        "customer_id": null,
        "expires_at": expires_at,
        "reason": null,
        "levels": [{
            "product_id": sku.product_id,
            "store_id": sku.store_id,
            "quantity": quantity,
            "reserved": reserved,
            "available": quantity - reserved,
            "reorder_point": reorder_point,
            "version": version,
            "updated_at": updated_at,
        }],
    })
}

/// The raw loop: per reservation one transaction (`BEGIN IMMEDIATE`; read the level; guarded
/// update; insert the reservation; insert its event; `COMMIT`), prepared statements, one
/// connection, for `duration`. `pick` chooses the level of each reservation.
pub fn reserve_loop(
    path: &Path,
    skus: &[Sku],
    hot: bool,
    duration: Duration,
) -> BenchResult<RunStats> {
    let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
    let mut begin = conn.prepare("BEGIN IMMEDIATE").map_err(sql)?;
    let mut commit = conn.prepare("COMMIT").map_err(sql)?;
    let mut rollback = conn.prepare("ROLLBACK").map_err(sql)?;
    let mut select = conn
        .prepare(
            "SELECT id, quantity, reserved, reorder_point, version FROM stock_levels \
             WHERE product_id = ?1 AND store_id = ?2",
        )
        .map_err(sql)?;
    let mut update = conn
        .prepare(
            "UPDATE stock_levels SET reserved = reserved + 1, version = version + 1, \
             updated_at = ?1 WHERE id = ?2 AND version = ?3 AND quantity - reserved >= 1",
        )
        .map_err(sql)?;
    let mut insert_reservation = conn
        .prepare(
            "INSERT INTO reservations (id, batch_id, product_id, store_id, quantity, status, \
             customer_id, reason, expires_at, created_at, updated_at) \
             VALUES (?1, NULL, ?2, ?3, 1, 'PENDING', NULL, NULL, ?4, ?5, ?5)",
        )
        .map_err(sql)?;
    let mut insert_event = conn
        .prepare(
            "INSERT INTO events (id, event_type, aggregate_type, aggregate_id, store_id, \
             product_id, payload, occurred_at) \
             VALUES (?1, 'reservation.created', 'reservation', ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql)?;
    let mut rng = rand::rng();
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0u64;
    let start = Instant::now();
    let deadline = start + duration;
    while Instant::now() < deadline {
        let t = Instant::now();
        let sku = if hot {
            &skus[0]
        } else {
            &skus[rng.random_range(0..skus.len())]
        };
        let mut one = || -> SqlResult<bool> {
            begin.run()?;
            let now = Utc::now();
            let at = stamp(now);
            let expires = stamp(now + chrono::Duration::seconds(900));
            select.bind_blob(1, sku.product_id.as_bytes())?;
            select.bind_text(2, &sku.store_id)?;
            if !select.step()? {
                select.reset();
                rollback.run()?;
                return Ok(false);
            }
            let (id, quantity, reserved, reorder_point, version) = (
                select.column_i64(0),
                select.column_i64(1),
                select.column_i64(2),
                select.column_i64(3),
                select.column_i64(4),
            );
            select.reset();
            update.bind_text(1, &at)?;
            update.bind_i64(2, id)?;
            update.bind_i64(3, version)?;
            update.run()?;
            if conn.changes() != 1 {
                rollback.run()?;
                return Ok(false);
            }
            let reservation_id = Uuid::now_v7();
            insert_reservation.bind_blob(1, reservation_id.as_bytes())?;
            insert_reservation.bind_blob(2, sku.product_id.as_bytes())?;
            insert_reservation.bind_text(3, &sku.store_id)?;
            insert_reservation.bind_text(4, &expires)?;
            insert_reservation.bind_text(5, &at)?;
            insert_reservation.run()?;
            let payload = reservation_payload(
                reservation_id,
                sku,
                (quantity, reserved + 1, reorder_point, version + 1),
                &expires,
                &at,
            );
            insert_event.bind_blob(1, Uuid::now_v7().as_bytes())?;
            insert_event.bind_text(2, &reservation_id.to_string())?;
            insert_event.bind_text(3, &sku.store_id)?;
            insert_event.bind_blob(4, sku.product_id.as_bytes())?;
            insert_event.bind_text(5, &payload.to_string())?;
            insert_event.bind_text(6, &at)?;
            insert_event.run()?;
            commit.run()?;
            Ok(true)
        };
        match one() {
            Ok(true) => latencies.push(micros(t.elapsed())),
            Ok(false) => errors += 1,
            Err(e) => {
                errors += 1;
                let _ = conn.exec("ROLLBACK");
                if errors == 1 {
                    eprintln!("  baseline error: {e}");
                }
            }
        }
    }
    Ok(RunStats::from_latencies(latencies, errors, start.elapsed()))
}
