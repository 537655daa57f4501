//! `reservationStats` reads counters kept in the transaction of every change; after a
//! concurrent workload of reservations (single, batched, batched by the server), confirmations,
//! cancellations (some racing each other) and expiries, the counters equal a full count of the
//! reservations, for every store and for all, on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::postgres::{drop_database, fresh_database, on_postgres};
use crate::common::*;
use serde_json::{Value, json};

const STORES: [&str; 2] = ["north", "south"];
const WORKERS: u64 = 12;
const ROUNDS: u64 = 12;

const RESERVE: &str = "mutation($p: UUID!, $s: ID!, $q: Int!, $ttl: Int) {
  reserveStock(input: {productId: $p, storeId: $s, quantity: $q, ttlSeconds: $ttl}) { id } }";
const BATCH: &str = "mutation($lines: [ReserveLineInput!]!, $ttl: Int) {
  reserveStockBatch(input: {lines: $lines, ttlSeconds: $ttl}) { id } }";
const CONFIRM: &str = "mutation($id: UUID!) { confirmReservation(id: $id) { status } }";
const CANCEL: &str = "mutation($id: UUID!) { cancelReservation(id: $id) { status } }";

/// A small deterministic generator per worker.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides
    }
}

/// The ids a mutation made (none when it was refused).
async fn made(client: &Client, query: &str, variables: Value) -> Vec<String> {
    let body = client.request(query, variables).await;
    let data = &body["data"];
    let rows = match data.as_object().and_then(|o| o.values().next()) {
        Some(Value::Array(rows)) => rows.clone(),
        Some(row @ Value::Object(_)) => vec![row.clone()],
        _ => Vec::new(),
    };
    rows.iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// One worker: reserves (short TTLs expire on their own), then confirms, cancels, or races a
/// confirmation against a cancellation of the same reservation.
async fn worker(client: Client, products: Vec<String>, seed: u64) {
    let mut dice = Dice(seed);
    for _ in 0..ROUNDS {
        let product = &products[dice.roll(products.len() as u64) as usize];
        let store = STORES[dice.roll(2) as usize];
        let ttl = if dice.roll(3) == 0 { 1 } else { 600 };
        let ids = if dice.roll(4) == 0 {
            let other = &products[dice.roll(products.len() as u64) as usize];
            let lines = json!([
                { "productId": product, "storeId": STORES[0], "quantity": 1 },
                { "productId": other, "storeId": STORES[1], "quantity": 2 },
            ]);
            made(&client, BATCH, json!({ "lines": lines, "ttl": ttl })).await
        } else {
            let q = 1 + dice.roll(3);
            let vars = json!({ "p": product, "s": store, "q": q, "ttl": ttl });
            made(&client, RESERVE, vars).await
        };
        for id in ids {
            match dice.roll(4) {
                0 => {
                    client.request(CONFIRM, json!({ "id": id })).await;
                }
                1 => {
                    client.request(CANCEL, json!({ "id": id })).await;
                }
                2 => {
                    let (a, b) = (client.clone(), client.clone());
                    let (id_a, id_b) = (id.clone(), id.clone());
                    tokio::join!(
                        async move { a.request(CONFIRM, json!({ "id": id_a })).await },
                        async move { b.request(CANCEL, json!({ "id": id_b })).await },
                    );
                }
                _ => {}
            }
        }
    }
}

/// (pending, confirmed, cancelled, expired, units held) per store, from every reservation.
type Counts = BTreeMap<String, [i64; 5]>;

async fn full_count(client: &Client) -> Counts {
    let mut counts = Counts::new();
    let mut after: Option<String> = None;
    loop {
        let data = client
            .data(
                "query($after: String) { reservations(first: 100, after: $after) {
                   pageInfo { hasNextPage endCursor } edges { node { storeId status quantity } } } }",
                json!({ "after": after }),
            )
            .await;
        let page = &data["reservations"];
        for edge in page["edges"].as_array().unwrap() {
            let node = &edge["node"];
            let row = counts
                .entry(node["storeId"].as_str().unwrap().to_owned())
                .or_default();
            let slot = ["PENDING", "CONFIRMED", "CANCELLED", "EXPIRED"]
                .iter()
                .position(|s| node["status"] == *s)
                .unwrap();
            row[slot] += 1;
            if slot == 0 {
                row[4] += node["quantity"].as_i64().unwrap();
            }
        }
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return counts;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

async fn stats(client: &Client, store: Option<&str>) -> [i64; 5] {
    let data = client
        .data(
            "query($s: ID) { reservationStats(storeId: $s) {
               pending confirmed cancelled expired reservedQuantity } }",
            json!({ "s": store }),
        )
        .await;
    let s = &data["reservationStats"];
    [
        "pending",
        "confirmed",
        "cancelled",
        "expired",
        "reservedQuantity",
    ]
    .map(|f| s[f].as_i64().unwrap())
}

async fn counters_match_a_full_count(server: &Server) {
    let admin = server.admin();
    for store in STORES {
        create_store(&admin, store).await;
    }
    let mut products = Vec::new();
    for i in 0..4 {
        let p = create_product(&admin, &format!("COUNT-{i}")).await;
        for store in STORES {
            init_stock(&admin, &p, store, 60, 0).await;
        }
        products.push(p);
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(admin.clone(), products.clone(), w + 1)))
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    // Every one-second reservation left pending is expired by the sweeper within 2 s.
    tokio::time::sleep(Duration::from_millis(3_000)).await;

    let counted = full_count(&admin).await;
    let mut total = [0i64; 5];
    for store in STORES {
        let expected = counted.get(store).copied().unwrap_or_default();
        assert_eq!(stats(&admin, Some(store)).await, expected, "store {store}");
        for (t, n) in total.iter_mut().zip(expected) {
            *t += n;
        }
        let held: i64 = {
            let mut sum = 0;
            for p in &products {
                sum += level(&admin, p, store).await["reserved"].as_i64().unwrap();
            }
            sum
        };
        assert_eq!(held, expected[4], "units held in {store}");
    }
    assert_eq!(stats(&admin, None).await, total, "all stores");
    assert!(total[3] > 0, "some reservations expired: {total:?}");
    assert!(
        total[1] > 0 && total[2] > 0,
        "confirmed and cancelled: {total:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_a_full_count_after_a_concurrent_workload_on_sqlite() {
    let server = Server::start();
    counters_match_a_full_count(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_a_full_count_after_a_concurrent_workload_on_postgres() {
    let url = fresh_database().await;
    let server = Server::start_with(on_postgres(url.clone()));
    counters_match_a_full_count(&server).await;
    drop(server);
    drop_database(&url).await;
}
