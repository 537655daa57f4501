//! Reservations: lifecycle, TTL expiry, idempotency, batches, and no oversell under concurrency.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const RESERVE: &str = "mutation($p: UUID!, $s: ID!, $q: Int!, $ttl: Int, $k: String, $c: String) {
  reserveStock(input: {productId: $p, storeId: $s, quantity: $q, ttlSeconds: $ttl, idempotencyKey: $k, customerId: $c}) {
    id productId storeId quantity status customerId expiresAt createdAt updatedAt product { sku } } }";
const CONFIRM: &str = "mutation($id: UUID!) { confirmReservation(id: $id) { id status } }";
const CANCEL: &str =
    "mutation($id: UUID!, $r: String) { cancelReservation(id: $id, reason: $r) { id status } }";
const BATCH: &str = "mutation($lines: [ReserveLineInput!]!, $k: String) {
  reserveStockBatch(input: {lines: $lines, customerId: \"c-1\", idempotencyKey: $k}) { id storeId quantity status } }";

async fn reserve(client: &Client, product: &str, store: &str, quantity: i32) -> Value {
    client
        .data(RESERVE, json!({ "p": product, "s": store, "q": quantity }))
        .await["reserveStock"]
        .clone()
}

async fn status(client: &Client, id: &str) -> String {
    let data = client
        .data(
            "query($id: UUID!) { reservation(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    data["reservation"]["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn reserving_holds_units_and_confirming_sells_them() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "LIFE", 10).await;
    let made = admin
        .data(RESERVE, json!({ "p": p, "s": "s1", "q": 3, "c": "cust-7" }))
        .await["reserveStock"]
        .clone();
    assert_eq!(made["status"], "PENDING");
    assert_eq!(made["customerId"], "cust-7");
    assert_eq!(made["product"]["sku"], "LIFE");
    let held = level(&admin, &p, "s1").await;
    assert_eq!(
        (
            held["quantity"].as_i64(),
            held["reserved"].as_i64(),
            held["available"].as_i64()
        ),
        (Some(10), Some(3), Some(7))
    );

    let id = made["id"].as_str().unwrap();
    let confirmed = admin.data(CONFIRM, json!({ "id": id })).await;
    assert_eq!(confirmed["confirmReservation"]["status"], "CONFIRMED");
    let sold = level(&admin, &p, "s1").await;
    assert_eq!(
        (
            sold["quantity"].as_i64(),
            sold["reserved"].as_i64(),
            sold["available"].as_i64()
        ),
        (Some(7), Some(0), Some(7))
    );

    assert_eq!(
        admin.error_code(CONFIRM, json!({ "id": id })).await,
        "INVALID_STATE"
    );
    assert_eq!(
        admin.error_code(CANCEL, json!({ "id": id })).await,
        "INVALID_STATE"
    );
    assert_eq!(
        level(&admin, &p, "s1").await["quantity"],
        7,
        "refused moves change nothing"
    );
}

#[tokio::test]
async fn cancelling_releases_units_and_cannot_be_confirmed_after() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "CANCEL", 5).await;
    let id = reserve(&admin, &p, "s1", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(level(&admin, &p, "s1").await["available"], 0);
    let cancelled = admin
        .data(CANCEL, json!({ "id": id, "r": "changed mind" }))
        .await;
    assert_eq!(cancelled["cancelReservation"]["status"], "CANCELLED");
    assert_eq!(level(&admin, &p, "s1").await["available"], 5);
    assert_eq!(
        admin.error_code(CONFIRM, json!({ "id": id })).await,
        "INVALID_STATE"
    );
    let stats = admin.data("{ reservationStats(storeId: \"s1\") { pending confirmed cancelled expired reservedQuantity } }", json!({})).await;
    assert_eq!(
        stats["reservationStats"],
        json!({ "pending": 0, "confirmed": 0, "cancelled": 1, "expired": 0, "reservedQuantity": 0 })
    );
}

#[tokio::test]
async fn reservations_expire_by_themselves_within_two_seconds() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "TTL", 4).await;
    let made = admin
        .data(RESERVE, json!({ "p": p, "s": "s1", "q": 3, "ttl": 1 }))
        .await["reserveStock"]
        .clone();
    let id = made["id"].as_str().unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(made["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(level(&admin, &p, "s1").await["available"], 1);
    let deadline = expires_at + chrono::Duration::seconds(2);
    loop {
        if status(&admin, id).await == "EXPIRED" {
            break;
        }
        assert!(
            chrono::Utc::now() < deadline,
            "not expired within 2 s of expiresAt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        level(&admin, &p, "s1").await["available"],
        4,
        "expiry released the units"
    );
    assert_eq!(
        admin.error_code(CONFIRM, json!({ "id": id })).await,
        "INVALID_STATE"
    );
    let log = events(&admin, 3).await;
    assert_eq!(
        types(&log),
        [
            "stock.created",
            "reservation.created",
            "reservation.expired"
        ]
    );
    assert_eq!(log[2]["payload"]["reservation_id"], id);
    let stats = admin
        .data("{ reservationStats { pending expired } }", json!({}))
        .await;
    assert_eq!(
        stats["reservationStats"],
        json!({ "pending": 0, "expired": 1 })
    );
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_reservation() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "ONCE", 10).await;
    let vars = json!({ "p": p, "s": "s1", "q": 2, "k": "order-42" });
    let first = admin.data(RESERVE, vars.clone()).await;
    let second = admin.data(RESERVE, vars).await;
    assert_eq!(first, second);
    assert_eq!(level(&admin, &p, "s1").await["reserved"], 2);
    let list = admin
        .data("{ reservations { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(list["reservations"]["edges"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_reserves_every_line_or_none() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "BATCH-A", 5).await;
    let q = create_product(&admin, "BATCH-B").await;
    init_stock(&admin, &q, "s1", 1, 0).await;

    let too_much = json!({ "lines": [{ "productId": p, "storeId": "s1", "quantity": 2 }, { "productId": q, "storeId": "s1", "quantity": 2 }] });
    assert_eq!(
        admin.error_code(BATCH, too_much).await,
        "INSUFFICIENT_STOCK"
    );
    assert_eq!(
        level(&admin, &p, "s1").await["reserved"],
        0,
        "the first line was rolled back"
    );
    let unknown = json!({ "lines": [{ "productId": p, "storeId": "s1", "quantity": 1 }, { "productId": q, "storeId": "nowhere", "quantity": 1 }] });
    assert_eq!(admin.error_code(BATCH, unknown).await, "NOT_FOUND");
    assert_eq!(level(&admin, &p, "s1").await["reserved"], 0);

    let fits = json!({ "lines": [{ "productId": p, "storeId": "s1", "quantity": 2 }, { "productId": q, "storeId": "s1", "quantity": 1 }], "k": "cart-1" });
    let made = admin.data(BATCH, fits.clone()).await["reserveStockBatch"].clone();
    assert_eq!(made.as_array().unwrap().len(), 2);
    assert!(
        made.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "PENDING")
    );
    assert_eq!(
        admin.data(BATCH, fits).await["reserveStockBatch"],
        made,
        "idempotent replay"
    );
    assert_eq!(level(&admin, &p, "s1").await["reserved"], 2);
    assert_eq!(level(&admin, &q, "s1").await["available"], 0);

    let log = events(&admin, 7).await;
    let kinds = types(&log);
    assert_eq!(
        kinds.iter().filter(|t| *t == "reservation.failed").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|t| *t == "reservation.created").count(),
        2,
        "{kinds:?}"
    );
    let failed = log
        .iter()
        .find(|e| e["type"] == "reservation.failed")
        .unwrap();
    assert_eq!(failed["payload"]["requested"], 2);
    assert_eq!(failed["payload"]["available"], 1);
}

#[tokio::test]
async fn reservation_pages_and_filters() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "LIST", 100).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(
            reserve(&admin, &p, "s1", 1).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    admin.data(CONFIRM, json!({ "id": ids[0] })).await;
    let pending = admin
        .data(
            "{ reservations(filter: {status: PENDING}, first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pending["reservations"]["edges"].as_array().unwrap().len(),
        24
    );
    let first = admin.data("{ reservations(first: 10) { edges { node { id } } pageInfo { endCursor hasNextPage } } }", json!({})).await;
    let cursor = first["reservations"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap();
    let next = admin
        .data(
            "query($a: String) { reservations(first: 10, after: $a) { edges { node { id } } } }",
            json!({ "a": cursor }),
        )
        .await;
    assert_eq!(
        next["reservations"]["edges"][0]["node"]["id"],
        ids[10].as_str()
    );
}

/// Many clients reserving one unit each of a small stock: exactly the stock is sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_oversell() {
    let server = Server::start();
    let admin = server.admin();
    let stock = 25;
    let clients: usize = 120;
    let p = seed(&admin, "hot", "HOT-SKU", stock).await;
    let racers = (0..clients)
        .map(|_| server.client(Some(WRITE_KEY)))
        .collect();
    let (won, refused) = race_for_one_unit(racers, &p, "hot").await;
    assert_eq!(won, stock as usize, "exactly the stock is reserved");
    assert_eq!(refused, clients - stock as usize);
    let now = level(&admin, &p, "hot").await;
    assert_eq!(
        (
            now["quantity"].as_i64(),
            now["reserved"].as_i64(),
            now["available"].as_i64()
        ),
        (Some(25), Some(25), Some(0))
    );
    let stats = admin
        .data(
            "{ reservationStats { pending reservedQuantity } }",
            json!({}),
        )
        .await;
    assert_eq!(
        stats["reservationStats"],
        json!({ "pending": 25, "reservedQuantity": 25 })
    );
    let log = events(&admin, 1 + 25 + 1 + 95).await;
    let kinds = types(&log);
    assert_eq!(
        kinds.iter().filter(|t| *t == "reservation.created").count(),
        25
    );
    assert_eq!(kinds.iter().filter(|t| *t == "stock.depleted").count(), 1);
    assert_eq!(
        kinds.iter().filter(|t| *t == "reservation.failed").count(),
        95
    );
}

/// Two processes on one database, each batching its own reservations: the version guard makes
/// one batch give way when the other changed the level, and still exactly the stock is sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_reserving_one_level_never_oversell() {
    let mut a = Server::start();
    let dir = a.take_dir();
    let b = Server::start_with(Options {
        database: Some(a.database.clone()),
        ..Default::default()
    });
    let p = seed(&a.admin(), "hot", "TWO-PROC", 30).await;
    let clients = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                a.client(Some(WRITE_KEY))
            } else {
                b.client(Some(WRITE_KEY))
            }
        })
        .collect();
    let (won, refused) = race_for_one_unit(clients, &p, "hot").await;
    assert_eq!(refused, 70);
    assert_eq!(won, 30);
    let now = level(&b.admin(), &p, "hot").await;
    assert_eq!(
        (
            now["reserved"].as_i64(),
            now["available"].as_i64(),
            now["version"].as_i64()
        ),
        (Some(30), Some(0), Some(31))
    );
    drop(dir);
}
