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
    let status = tokio::process::Command::new(binary)
        .arg("migrate")
        .arg("--database-url")
        .arg(sqlite_url(path))
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

/// The dashboard page as the GraphQL response shapes it.
#[derive(Serialize)]
struct Page<'a> {
    data: PageData<'a>,
}

#[derive(Serialize)]
struct PageData<'a> {
    #[serde(rename = "stockLevels")]
    stock_levels: Edges<'a>,
}

#[derive(Serialize)]
struct Edges<'a> {
    edges: Vec<Edge<'a>>,
}

#[derive(Serialize)]
struct Edge<'a> {
    node: Node<'a>,
}

#[derive(Serialize)]
struct Node<'a> {
    quantity: i64,
    reserved: i64,
    available: i64,
    product: ProductRef<'a>,
    store: StoreRef<'a>,
}

#[derive(Serialize)]
struct ProductRef<'a> {
    sku: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct StoreRef<'a> {
    name: &'a str,
}

struct LevelRow {
    product_id: Uuid,
    store_id: String,
    quantity: i64,
    reserved: i64,
}

struct ProductRow {
    sku: String,
    name: String,
}

fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One dashboard request without GraphQL or HTTP: the page of levels, then its products and
/// stores by id (every column, as the service's entities read them, timestamps parsed), then the
/// response JSON. Returns the JSON length.
fn dashboard_once(conn: &Conn, page: usize) -> SqlResult<usize> {
    let mut levels_stmt = conn.prepare(
        "SELECT id, product_id, store_id, quantity, reserved, reorder_point, version, \
         created_at, updated_at FROM stock_levels ORDER BY id ASC LIMIT ?1",
    )?;
    levels_stmt.bind_i64(1, page as i64 + 1)?;
    let mut levels = Vec::with_capacity(page + 1);
    while levels_stmt.step()? {
        let _ = levels_stmt.column_i64(0);
        let _ = levels_stmt.column_i64(5) + levels_stmt.column_i64(6);
        let _ = parse_time(levels_stmt.column_text(7));
        let _ = parse_time(levels_stmt.column_text(8));
        levels.push(LevelRow {
            product_id: Uuid::from_slice(levels_stmt.column_blob(1)).unwrap_or_default(),
            store_id: levels_stmt.column_text(2).to_owned(),
            quantity: levels_stmt.column_i64(3),
            reserved: levels_stmt.column_i64(4),
        });
    }
    levels.truncate(page);
    let mut product_ids: Vec<Uuid> = levels.iter().map(|l| l.product_id).collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let mut store_ids: Vec<&str> = levels.iter().map(|l| l.store_id.as_str()).collect();
    store_ids.sort_unstable();
    store_ids.dedup();
    let mut products_stmt = conn.prepare(&format!(
        "SELECT id, sku, name, description, category, price, created_at, updated_at \
         FROM products WHERE id IN ({})",
        in_list(product_ids.len())
    ))?;
    for (i, id) in product_ids.iter().enumerate() {
        products_stmt.bind_blob(i as i32 + 1, id.as_bytes())?;
    }
    let mut products = HashMap::with_capacity(product_ids.len());
    while products_stmt.step()? {
        let id = Uuid::from_slice(products_stmt.column_blob(0)).unwrap_or_default();
        let _ = (
            products_stmt.column_text(3).to_owned(),
            products_stmt.column_text(4).to_owned(),
            products_stmt.column_text(5).to_owned(),
            parse_time(products_stmt.column_text(6)),
            parse_time(products_stmt.column_text(7)),
        );
        products.insert(
            id,
            ProductRow {
                sku: products_stmt.column_text(1).to_owned(),
                name: products_stmt.column_text(2).to_owned(),
            },
        );
    }
    let mut stores_stmt = conn.prepare(&format!(
        "SELECT id, name, created_at FROM stores WHERE id IN ({})",
        in_list(store_ids.len())
    ))?;
    for (i, id) in store_ids.iter().enumerate() {
        stores_stmt.bind_text(i as i32 + 1, id)?;
    }
    let mut stores = HashMap::with_capacity(store_ids.len());
    while stores_stmt.step()? {
        let _ = parse_time(stores_stmt.column_text(2));
        stores.insert(
            stores_stmt.column_text(0).to_owned(),
            stores_stmt.column_text(1).to_owned(),
        );
    }
    let empty = ProductRow {
        sku: String::new(),
        name: String::new(),
    };
    let edges = levels
        .iter()
        .map(|l| {
            let product = products.get(&l.product_id).unwrap_or(&empty);
            Edge {
                node: Node {
                    quantity: l.quantity,
                    reserved: l.reserved,
                    available: l.quantity - l.reserved,
                    product: ProductRef {
                        sku: &product.sku,
                        name: &product.name,
                    },
                    store: StoreRef {
                        name: stores.get(&l.store_id).map(String::as_str).unwrap_or(""),
                    },
                },
            }
        })
        .collect();
    let body = serde_json::to_vec(&Page {
        data: PageData {
            stock_levels: Edges { edges },
        },
    })
    .map_err(|e| SqlError(e.to_string()))?;
    Ok(body.len())
}

/// The dashboard baseline: `threads` OS threads, one connection each, repeating
/// [`dashboard_once`] for `duration`. Statements are prepared per request, as the service's
/// driver would find them in its statement cache (preparing a SELECT is a few microseconds).
pub fn dashboard_loop(
    path: &Path,
    threads: usize,
    page: usize,
    duration: Duration,
) -> BenchResult<RunStats> {
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.to_path_buf();
            std::thread::spawn(move || -> BenchResult<(Vec<u32>, u64)> {
                let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match dashboard_once(&conn, page) {
                        Ok(_) => latencies.push(micros(t.elapsed())),
                        Err(_) => errors += 1,
                    }
                }
                Ok((latencies, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().map_err(|_| "baseline thread panicked")??;
        all.extend(l);
        errors += e;
    }
    Ok(RunStats::from_latencies(all, errors, start.elapsed()))
}

/// Length in bytes of the baseline's dashboard response (to compare with the server's).
pub fn dashboard_body_len(path: &Path, page: usize) -> BenchResult<usize> {
    let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
    dashboard_once(&conn, page).map_err(sql)
}

/// One outbox row as the relay will publish it.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Event id.
    pub id: Uuid,
    /// Aggregate (reservation) id.
    pub aggregate_id: String,
    /// Store.
    pub store_id: String,
    /// Product.
    pub product_id: Uuid,
    /// JSON payload text.
    pub payload: String,
    /// RFC 3339 time.
    pub occurred_at: String,
}

/// `n` `reservation.created` events shaped like the service's, for the backlog and the XADD
/// baseline.
pub fn make_events(n: usize) -> Vec<EventRow> {
    let sku = Sku {
        product_id: Uuid::now_v7(),
        store_id: "store-000".to_owned(),
    };
    let now = Utc::now();
    let at = stamp(now);
    let expires = stamp(now + chrono::Duration::seconds(900));
    (0..n)
        .map(|i| {
            let reservation_id = Uuid::now_v7();
            let i = i as i64;
            EventRow {
                id: Uuid::now_v7(),
                aggregate_id: reservation_id.to_string(),
                store_id: sku.store_id.clone(),
                product_id: sku.product_id,
                payload: reservation_payload(
                    reservation_id,
                    &sku,
                    (10_000_000, i + 1, 0, i + 2),
                    &expires,
                    &at,
                )
                .to_string(),
                occurred_at: at.clone(),
            }
        })
        .collect()
}

/// Inserts the events into the outbox of `path` unpositioned and unpublished (one transaction).
pub fn insert_backlog(path: &Path, events: &[EventRow]) -> BenchResult<()> {
    let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
    conn.exec("BEGIN IMMEDIATE").map_err(sql)?;
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO events (id, event_type, aggregate_type, aggregate_id, store_id, \
                 product_id, payload, occurred_at) \
                 VALUES (?1, 'reservation.created', 'reservation', ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql)?;
        for e in events {
            insert.bind_blob(1, e.id.as_bytes()).map_err(sql)?;
            insert.bind_text(2, &e.aggregate_id).map_err(sql)?;
            insert.bind_text(3, &e.store_id).map_err(sql)?;
            insert.bind_blob(4, e.product_id.as_bytes()).map_err(sql)?;
            insert.bind_text(5, &e.payload).map_err(sql)?;
            insert.bind_text(6, &e.occurred_at).map_err(sql)?;
            insert.run().map_err(sql)?;
        }
    }
    conn.exec("COMMIT").map_err(sql)?;
    conn.exec("PRAGMA wal_checkpoint(TRUNCATE)").map_err(sql)?;
    Ok(())
}
