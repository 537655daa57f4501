//! Acknowledged means committed: the SQLite database on a small filesystem that fills up while
//! writes of every kind continue (single writes, grouped writes, batched reservations, batch
//! reservations, idempotent writes), then gets its space back. Every acknowledged write must be
//! visible to a fresh reader and after a restart, every refused one must have changed nothing,
//! writes must work again without a restart, and the outbox and the stream must stay the log.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::common::redis_server::RedisServer;
use crate::common::small_disk::SmallDisk;
use crate::common::*;
use serde_json::{Value, json};

const STREAM: &str = "inventory-events";
const ADJUST: &str = "mutation($p: UUID!, $r: String, $k: String) {
  adjustStock(input: {productId: $p, storeId: \"s1\", delta: 1, reason: $r, idempotencyKey: $k}) { quantity } }";
const RESERVE: &str = "mutation($p: UUID!) {
  reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1}) { id } }";
const RESERVE_BATCH: &str = "mutation($p: UUID!) {
  reserveStockBatch(input: {lines: [{productId: $p, storeId: \"s1\", quantity: 1}], customerId: \"c\"}) { id } }";

/// What the clients were told.
#[derive(Default)]
struct Told {
    /// `adjustStock` +1 answered with a quantity.
    adjusted: usize,
    /// Reservations answered with an id (each of quantity 1).
    reserved: BTreeSet<String>,
    /// Refusals, by code.
    refused: HashMap<String, usize>,
}

impl Told {
    fn refusals(&self) -> usize {
        self.refused.values().sum()
    }
}

/// One write of kind `n % 4`; records what the client was told.
async fn write_once(client: &Client, product: &str, n: usize, reason: &str, told: &mut Told) {
    let (query, vars) = match n % 4 {
        0 => (ADJUST, json!({ "p": product, "r": reason })),
        1 => (
            ADJUST,
            json!({ "p": product, "r": reason, "k": format!("key-{n}") }),
        ),
        2 => (RESERVE, json!({ "p": product })),
        _ => (RESERVE_BATCH, json!({ "p": product })),
    };
    let body = client.request(query, vars).await;
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        assert!(body["data"].is_null(), "a refusal carries no data: {body}");
        *told.refused.entry(code.to_owned()).or_default() += 1;
        return;
    }
    let data = &body["data"];
    if data["adjustStock"]["quantity"].is_i64() {
        told.adjusted += 1;
    } else if let Some(id) = data["reserveStock"]["id"].as_str() {
        told.reserved.insert(id.to_owned());
    } else if let Some(id) = data["reserveStockBatch"][0]["id"].as_str() {
        told.reserved.insert(id.to_owned());
    } else {
        panic!("neither data nor a coded error: {body}");
    }
}

/// `workers` clients writing at once, `per_worker` writes each.
async fn write_concurrently(
    client: &Client,
    product: &str,
    workers: usize,
    per_worker: usize,
    reason: &str,
) -> Told {
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, product, reason) = (client.clone(), product.to_owned(), reason.to_owned());
            tokio::spawn(async move {
                let mut told = Told::default();
                for i in 0..per_worker {
                    write_once(&client, &product, w * per_worker + i, &reason, &mut told).await;
                }
                told
            })
        })
        .collect();
    let mut all = Told::default();
    for task in tasks {
        let told = task.await.expect("writer task");
        all.adjusted += told.adjusted;
        all.reserved.extend(told.reserved);
        for (code, n) in told.refused {
            *all.refused.entry(code).or_default() += n;
        }
    }
    all
}

/// What a fresh reader sees of the level matches exactly what the clients were told.
async fn assert_level_is_what_was_acknowledged(
    admin: &Client,
    product: &str,
    initial: i64,
    told: &Told,
) {
    let level = level(admin, product, "s1").await;
    assert_eq!(
        level["quantity"].as_i64(),
        Some(initial + told.adjusted as i64),
        "quantity = initial + acknowledged adjustments"
    );
    assert_eq!(
        level["reserved"].as_i64(),
        Some(told.reserved.len() as i64),
        "reserved = acknowledged reservations"
    );
}

/// Once the outbox has drained: the level, the reservations and the events are exactly what
/// the clients were told; nothing refused left a trace; the stream is the log.
async fn assert_state_is_what_was_acknowledged(
    admin: &Client,
    redis: &RedisServer,
    product: &str,
    initial: i64,
    told: &Told,
) {
    assert_level_is_what_was_acknowledged(admin, product, initial, told).await;
    let log = assert_stream_is_the_log(admin, redis).await;
    let updates = log.iter().filter(|e| e["type"] == "stock.updated").count();
    assert_eq!(
        updates, told.adjusted,
        "one stock.updated per acknowledged adjustment"
    );
    let created: BTreeSet<String> = log
        .iter()
        .filter(|e| e["type"] == "reservation.created")
        .map(|e| e["aggregateId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        created, told.reserved,
        "reservation.created exactly for the acknowledged reservations"
    );
    let refused = log
        .iter()
        .filter(|e| e["type"] == "reservation.failed")
        .count();
    assert_eq!(refused, 0, "no reservation was refused for lack of stock");
}

/// The outbox drains and the stream holds exactly the log, each event once, in order; returns
/// the log.
async fn assert_stream_is_the_log(admin: &Client, redis: &RedisServer) -> Vec<Value> {
    wait_for_outbox(admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(admin, 0).await;
    let entries = redis.entries(STREAM).await;
    let ids: Vec<(String, String)> = entries
        .iter()
        .map(|(id, fields)| (id.clone(), fields["id"].clone()))
        .collect();
    let expected: Vec<(String, String)> = log
        .iter()
        .map(|e| {
            (
                e["cursor"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(ids, expected, "the stream is the log, once, in order");
    log
}

/// Fills the disk under load, gives the space back, restarts; checks what users would.
async fn disk_full_round_trip(extra_env: &[(&str, &str)], workers: usize) {
    let disk = SmallDisk::mount(8);
    let redis = RedisServer::start();
    let mut env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        (
            "STOCKROOM_RELAY_BACKOFF_BASE_MS".to_owned(),
            "20".to_owned(),
        ),
        (
            "STOCKROOM_RELAY_BACKOFF_CAP_MS".to_owned(),
            "200".to_owned(),
        ),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let options = Options {
        env,
        database: Some(disk.path().join("stockroom.db")),
        ..Default::default()
    };
    let mut server = Server::start_with(options.clone());
    let admin = server.admin();
    let initial = 1_000;
    let product = seed(&admin, "s1", "DISK", initial as i32).await;
    let reason = "r".repeat(3_000);

    disk.fill();
    let mut told = write_concurrently(&admin, &product, workers, 60, &reason).await;
    assert!(
        told.refusals() > 0,
        "the full disk refused nothing: the fault was not injected"
    );
    let codes: Vec<&String> = told.refused.keys().collect();
    assert_eq!(
        codes,
        vec!["STORAGE_UNAVAILABLE"],
        "every refusal says the storage is unavailable"
    );
    let (status, body) = admin.readyz().await;
    assert_eq!(status, 503, "not ready while writes fail: {body}");
    assert_eq!(body["database"], "failing", "{body}");
    assert!(
        body["databaseError"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "readyz says why: {body}"
    );
    // Reads keep working meanwhile, and show only what was acknowledged.
    assert_level_is_what_was_acknowledged(&admin, &product, initial, &told).await;

    disk.free();
    // No client writes: the service finds out by itself (its probe write commits).
    eventually(
        Duration::from_secs(10),
        "ready again after space came back",
        || async {
            match admin.readyz().await {
                (200, body) if body["database"] == "ok" => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    let after = write_concurrently(&admin, &product, workers, 5, "after").await;
    assert_eq!(
        after.refusals(),
        0,
        "every write succeeds once space is back: {:?}",
        after.refused
    );
    told.adjusted += after.adjusted;
    told.reserved.extend(after.reserved);
    assert_state_is_what_was_acknowledged(&admin, &redis, &product, initial, &told).await;

    server.terminate();
    let _keep = server.take_dir();
    let restarted = Server::start_with(options);
    let admin = restarted.admin();
    assert_state_is_what_was_acknowledged(&admin, &redis, &product, initial, &told).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_none_with_group_commit_and_batching() {
    disk_full_round_trip(&[], 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_none_writing_alone() {
    disk_full_round_trip(
        &[
            ("STOCKROOM_GROUP_COMMIT", "false"),
            ("STOCKROOM_BATCH_RESERVATIONS", "false"),
        ],
        4,
    )
    .await;
}
