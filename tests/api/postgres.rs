//! The same service on PostgreSQL (the server on 127.0.0.1:5432, a fresh database per test):
//! the entities, migrations, locking and outbox are portable.

use std::time::Duration;

use crate::common::postgres::{ADMIN_URL, drop_database, fresh_database, on_postgres};
use crate::common::*;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_oversell_on_postgres() {
    let url = fresh_database().await;
    let server = Server::start_with(on_postgres(url.clone()));
    let admin = server.admin();
    let p = seed(&admin, "hot", "PG-HOT", 20).await;
    assert_eq!(
        rows_in(&url, "products").await,
        1,
        "the server writes to PostgreSQL, not to a SQLite file"
    );
    let (won, refused) = race_for_one_unit(vec![admin.clone(); 80], &p, "hot").await;
    assert_eq!(refused, 60);
    assert_eq!(won, 20);
    let now = level(&admin, &p, "hot").await;
    assert_eq!(
        (now["reserved"].as_i64(), now["available"].as_i64()),
        (Some(20), Some(0))
    );
    // stock.created, 20 × reservation.created, stock.depleted, stock.low, 60 × reservation.failed
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let log = events(&admin, 83).await;
    assert_eq!(log.len(), 83);
    assert!(
        log.iter().all(|e| e["publishedAt"].is_string()),
        "all published"
    );
    let kinds = types(&log);
    assert_eq!(
        kinds.iter().filter(|t| *t == "reservation.failed").count(),
        60
    );
    assert_eq!(kinds.iter().filter(|t| *t == "stock.depleted").count(), 1);
    drop(server);
    drop_database(&url).await;
    for (i, event) in log.iter().enumerate() {
        assert_eq!(event["cursor"], format!("{}-0", i + 1));
    }
}

#[tokio::test]
async fn lifecycle_transfer_and_expiry_on_postgres() {
    let url = fresh_database().await;
    let server = Server::start_with(on_postgres(url.clone()));
    let admin = server.admin();
    let p = seed(&admin, "a", "PG-LIFE", 10).await;
    create_store(&admin, "b").await;
    init_stock(&admin, &p, "b", 0, 0).await;
    let moved = admin
        .data("mutation($p: UUID!) { transferStock(input: {productId: $p, fromStoreId: \"a\", toStoreId: \"b\", quantity: 4}) { from { quantity } to { quantity } } }", json!({ "p": p }))
        .await;
    assert_eq!(
        moved["transferStock"],
        json!({ "from": { "quantity": 6 }, "to": { "quantity": 4 } })
    );
    let r = admin
        .data("mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"a\", quantity: 2, ttlSeconds: 1}) { id } }", json!({ "p": p }))
        .await["reserveStock"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    loop {
        let data = admin
            .data(
                "query($id: UUID!) { reservation(id: $id) { status } }",
                json!({ "id": r }),
            )
            .await;
        if data["reservation"]["status"] == "EXPIRED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(level(&admin, &p, "a").await["available"], 6);
    let dup = admin
        .error_code(
            r#"mutation { createProduct(input: {sku: "PG-LIFE", name: "x"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(dup, "ALREADY_EXISTS");
    let conflict = admin
        .error_code("mutation($p: UUID!) { setStock(input: {productId: $p, storeId: \"a\", quantity: 1, expectedVersion: 1}) { version } }", json!({ "p": p }))
        .await;
    assert_eq!(conflict, "VERSION_CONFLICT");
    let kinds = types(&events(&admin, 5).await);
    assert_eq!(
        kinds,
        [
            "stock.created",
            "stock.created",
            "stock.transferred",
            "reservation.created",
            "reservation.expired"
        ]
    );
    drop(server);
    drop_database(&url).await;
}

/// Events in the wide `events` table of migration 4: one published, one dead, one waiting.
const OLD_EVENTS: &str = "INSERT INTO events \
    (id, event_type, aggregate_type, aggregate_id, store_id, product_id, payload, occurred_at, \
     position, published_at, attempts, last_error, dead_at) VALUES \
    ('0190a0a0-0000-7000-8000-000000000001', 'stock.created', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"published\"}', '2026-11-01T10:00:00Z', 1, '2026-11-01T10:00:01Z', 0, NULL, NULL), \
    ('0190a0a0-0000-7000-8000-000000000002', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"dead\"}', '2026-11-01T10:00:02Z', 2, NULL, 5, 'too big', '2026-11-01T10:00:03Z'), \
    ('0190a0a0-0000-7000-8000-000000000003', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"waiting\"}', '2026-11-01T10:00:04Z', NULL, NULL, 0, NULL, NULL)";

#[tokio::test]
async fn migration_5_moves_delivery_state_and_back_on_postgres() {
    use migration::{Migrator, MigratorTrait};
    let url = fresh_database().await;
    let db = Database::connect(&url).await.expect("connect");
    Migrator::up(&db, Some(4)).await.expect("migrate to 4");
    db.execute_unprepared(OLD_EVENTS).await.expect("old events");
    let expected = vec![
        (Some(1), true, 0, None, false),
        (Some(2), false, 5, Some("too big".to_owned()), true),
        (None, false, 0, None, false),
    ];
    let columns = DELIVERY_COLUMNS;

    Migrator::up(&db, None).await.expect("migrate up");
    let upgraded = delivery_states(&db, &format!("{columns} FROM event_log ORDER BY seq")).await;
    assert_eq!(upgraded, expected, "the view shows every event's state");
    db.execute_unprepared(
        "INSERT INTO events (id, event_type, aggregate_type, aggregate_id, payload, occurred_at) \
         VALUES ('0190a0a0-0000-7000-8000-000000000004', 'stock.updated', 'stock_level', 'l1', \
         '{}', now())",
    )
    .await
    .expect("append after the upgrade");
    let appended = delivery_states(&db, &format!("{columns} FROM event_log ORDER BY seq")).await;
    assert_eq!(
        appended.len(),
        4,
        "the trigger gave the new event its delivery row"
    );
    assert_eq!(appended[3], (None, false, 0, None, false));

    Migrator::down(&db, Some(steps_back_to(4)))
        .await
        .expect("migrate down");
    let rolled_back = delivery_states(&db, &format!("{columns} FROM events ORDER BY seq")).await;
    assert_eq!(
        rolled_back[..3],
        expected[..],
        "the wide table has its state back"
    );
    db.close().await.expect("close");
    drop_database(&url).await;
}

/// Rows in `table` of the database at `url`.
async fn rows_in(url: &str, table: &str) -> i64 {
    let db = Database::connect(url).await.expect("PostgreSQL");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT count(*) FROM {table}"),
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index(0).expect("count")
}

/// Makes new sessions of the database read-only (or writable again) and ends the current ones,
/// as a failover to a standby would.
async fn set_read_only(url: &str, read_only: bool) {
    let name = url.rsplit('/').next().unwrap_or_default();
    let admin = Database::connect(ADMIN_URL).await.expect("PostgreSQL");
    let setting = if read_only {
        format!("ALTER DATABASE {name} SET default_transaction_read_only = on")
    } else {
        format!("ALTER DATABASE {name} RESET default_transaction_read_only")
    };
    admin
        .execute_unprepared(&setting)
        .await
        .expect("alter database");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .expect("end sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_then_recovers_on_postgres() {
    let url = fresh_database().await;
    let server = Server::start_with(on_postgres(url.clone()));
    let admin = server.admin();
    let p = seed(&admin, "s1", "PG-RO", 100).await;
    let adjust = "mutation($p: UUID!) {
      adjustStock(input: {productId: $p, storeId: \"s1\", delta: 1}) { quantity } }";
    let reserve = "mutation($p: UUID!) {
      reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1}) { id } }";

    set_read_only(&url, true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut refusals = 0;
    for query in [adjust, reserve].iter().cycle().take(20) {
        let body = admin.request(query, json!({ "p": p })).await;
        let code = body["errors"][0]["extensions"]["code"].as_str();
        // Sessions ended under the server may cost a request or two a reconnect; after that,
        // every write must say the storage is unavailable.
        assert!(
            code.is_some(),
            "a write succeeded on a read-only database: {body}"
        );
        if code == Some("STORAGE_UNAVAILABLE") {
            refusals += 1;
        } else {
            assert_eq!(
                refusals, 0,
                "once reconnected, every write says why: {body}"
            );
        }
        assert!(std::time::Instant::now() < deadline);
    }
    assert!(
        refusals >= 15,
        "refusals say the storage is unavailable: {refusals} of 20"
    );
    let (status, body) = admin.readyz().await;
    assert_eq!(
        (status, &body["database"]),
        (503, &json!("failing")),
        "{body}"
    );
    let now = level(&admin, &p, "s1").await;
    assert_eq!(
        (now["quantity"].as_i64(), now["reserved"].as_i64()),
        (Some(100), Some(0))
    );

    set_read_only(&url, false).await;
    eventually(Duration::from_secs(15), "ready again", || async {
        match admin.readyz().await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    for query in [adjust, reserve] {
        admin.data(query, json!({ "p": p })).await;
    }
    let now = level(&admin, &p, "s1").await;
    assert_eq!(
        (now["quantity"].as_i64(), now["reserved"].as_i64()),
        (Some(101), Some(1))
    );
    drop(server);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_batching_reservations_on_one_level_never_oversell_on_postgres() {
    // Both instances decide concurrent reservations in batches (one guarded UPDATE per level
    // per batch); when the other instance changed the level in between, the guard refuses the
    // batch and its requests run one by one. Whatever interleaving, no unit is sold twice.
    let url = fresh_database().await;
    let a = Server::start_with(on_postgres(url.clone()));
    let b = Server::start_with(on_postgres(url.clone()));
    let p = seed(&a.admin(), "hot", "PG-TWO-BATCHERS", 30).await;
    let clients = (0..120)
        .map(|i| match i % 2 {
            0 => a.client(Some(WRITE_KEY)),
            _ => b.client(Some(WRITE_KEY)),
        })
        .collect();
    let (won, refused) = race_for_one_unit(clients, &p, "hot").await;
    assert_eq!((won, refused), (30, 90));
    let now = level(&b.admin(), &p, "hot").await;
    assert_eq!(
        (
            now["reserved"].as_i64(),
            now["available"].as_i64(),
            now["version"].as_i64()
        ),
        (Some(30), Some(0), Some(31))
    );
    // Both batched: fewer batches than requests on each.
    for server in [&a, &b] {
        let admin = server.admin();
        let batches = metric(&admin, "stockroom_reservation_batch_size_count").await;
        let requests = metric(&admin, "stockroom_reservation_batch_size_sum").await;
        assert!(
            batches >= 1.0 && requests > batches,
            "{requests} requests in {batches} batches"
        );
    }
    drop((a, b));
    drop_database(&url).await;
}
