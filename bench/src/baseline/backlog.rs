//! The outbox backlog for the relay drain, written straight into the tables.

use super::*;

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
