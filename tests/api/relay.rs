//! The outbox relay against a real redis-server that each test starts on a free port.

use std::time::Duration;

use crate::common::redis_server::RedisServer;
use crate::common::*;
use serde_json::{Value, json};

const STREAM: &str = "inventory-events";
const ADJUST: &str = "mutation($p: UUID!, $d: Int!) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: $d}) { version } }";

#[tokio::test]
async fn events_reach_the_stream_in_order_with_their_fields() {
    let redis = RedisServer::start();
    let server = Server::start_with(with_redis(&redis, &[]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "STREAM", 10).await;
    for d in [1, -2, 3] {
        admin.data(ADJUST, json!({ "p": p, "d": d })).await;
    }
    let entries = redis.wait_for(STREAM, 4, Duration::from_secs(10)).await;
    let log = events(&admin, 4).await;
    assert_stream_matches_log(&entries, &log);
    let (_, first) = &entries[0];
    let mut names: Vec<&str> = first.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aggregate_id",
            "aggregate_type",
            "id",
            "occurred_at",
            "payload",
            "product_id",
            "published_at",
            "store_id",
            "type"
        ]
    );
    assert_eq!(first["type"], "stock.created");
    assert_eq!(
        first["published_at"],
        log[0]["publishedAt"].as_str().unwrap(),
        "the stream carries the time the log records"
    );
    assert_eq!(first["store_id"], "s1");
    assert_eq!(first["product_id"], p);
    let payload: Value = serde_json::from_str(&first["payload"]).unwrap();
    assert_eq!(payload["quantity"], 10);
    let health = admin
        .data("{ health { broker } outbox { broker pending } }", json!({}))
        .await;
    assert_eq!(health["health"]["broker"], "ok");
    assert_eq!(health["outbox"]["pending"], 0);
}

#[tokio::test]
async fn redis_down_keeps_writes_working_and_loses_nothing() {
    let mut redis = RedisServer::start();
    // Small batches: the backlog goes out through the relay's pipeline, batch after batch.
    let server = Server::start_with(with_redis(&redis, &[("STOCKROOM_RELAY_BATCH", "4")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "OUTAGE", 1000).await;
    for _ in 0..10 {
        admin.data(ADJUST, json!({ "p": p, "d": -1 })).await;
    }
    redis.wait_for(STREAM, 11, Duration::from_secs(10)).await;
    redis.stop();
    for _ in 0..25 {
        admin.data(ADJUST, json!({ "p": p, "d": -1 })).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Value = admin.get("/readyz").await.json().await.unwrap();
        let outbox = admin
            .data(
                "{ outbox { broker pending oldestPendingAgeMs } }",
                json!({}),
            )
            .await;
        if ready["broker"] == "down" && outbox["outbox"]["broker"] == "down" {
            assert_eq!(
                outbox["outbox"]["pending"], 25,
                "the writes during the outage wait"
            );
            assert!(ready["outboxPending"].as_u64().unwrap() >= 25);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker never reported down: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart();
    let entries = redis.wait_for(STREAM, 36, Duration::from_secs(20)).await;
    let log = events(&admin, 36).await;
    assert_eq!(log.len(), 36);
    assert_stream_matches_log(&entries, &log);
    let ready: Value = admin.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["broker"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_resumes_without_loss_or_duplicates() {
    let redis = RedisServer::start();
    // Small batches, so the kill lands with batches positioned ahead, in flight and unrecorded.
    let mut first = Server::start_with(with_redis(&redis, &[("STOCKROOM_RELAY_BATCH", "7")]));
    let dir = first.take_dir();
    let database = first.database.clone();
    let admin = first.admin();
    let p = seed(&admin, "s1", "CRASH", 100_000).await;
    kill_mid_burst(&mut first, &p).await;
    let second = Server::start_with(Options {
        database: Some(database),
        ..with_redis(&redis, &[])
    });
    let admin = second.admin();
    let committed = 100_000 - level(&admin, &p, "s1").await["quantity"].as_i64().unwrap();
    assert!(committed > 0, "some writes were committed before the kill");
    let total = 1 + committed as usize;
    let log = events(&admin, total).await;
    assert_eq!(log.len(), total, "one event per committed write");
    let entries = redis.wait_for(STREAM, total, Duration::from_secs(30)).await;
    assert_stream_matches_log(&entries, &log);
    let (_, ready) = admin.readyz().await;
    assert_eq!(
        ready["broker"], "ok",
        "a republish after a crash is no conflict: {ready}"
    );
    assert!(!second.logs().contains("another history"));
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_publish_once_in_order() {
    let redis = RedisServer::start();
    let small = [("STOCKROOM_RELAY_BATCH", "5")];
    let mut a = Server::start_with(with_redis(&redis, &small));
    let dir = a.take_dir();
    let b = Server::start_with(Options {
        database: Some(a.database.clone()),
        ..with_redis(&redis, &small)
    });
    let p = seed(&a.admin(), "s1", "TWO", 1000).await;
    let mut writers = Vec::new();
    for client in [a.admin(), b.admin(), a.admin(), b.admin()] {
        let p = p.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..25 {
                client.data(ADJUST, json!({ "p": p, "d": -1 })).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 1 + 100;
    let log = events(&b.admin(), total).await;
    let entries = redis.wait_for(STREAM, total, Duration::from_secs(20)).await;
    assert_stream_matches_log(&entries, &log);
    assert_eq!(level(&a.admin(), &p, "s1").await["quantity"], 900);
    drop(dir);
}

#[tokio::test]
async fn a_rejected_event_goes_dead_and_is_redriven() {
    let redis = RedisServer::start();
    let server = Server::start_with(with_redis(&redis, &[("STOCKROOM_RELAY_MAX_ATTEMPTS", "2")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "POISON", 10).await;
    redis.wait_for(STREAM, 1, Duration::from_secs(10)).await;
    let mut conn = kill_one_event(&redis, &admin, &p).await;
    eventually(Duration::from_secs(15), "the dead gauge", || async {
        match metric(&admin, "stockroom_outbox_dead").await {
            1.0 => Ok(()),
            dead => Err(format!("stockroom_outbox_dead {dead}")),
        }
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    let redriven = admin.data("mutation { redriveEvents }", json!({})).await;
    assert_eq!(redriven["redriveEvents"], 1);
    // A write right after the redrive does not overtake the redriven event.
    admin.data(ADJUST, json!({ "p": p, "d": 1 })).await;
    let entries = redis.wait_for(STREAM, 2, Duration::from_secs(10)).await;
    let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["2-0", "3-0"]);
    // The relay marks the event published right after Redis took it.
    wait_for_outbox(&admin, json!({ "dead": 0, "pending": 0 })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_requests_flushes_the_relay_and_exits_zero() {
    let redis = RedisServer::start();
    let mut server = Server::start_with(with_redis(&redis, &[]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "TERM", 1000).await;
    let mut writers = Vec::new();
    for _ in 0..4 {
        let client = admin.clone();
        let p = p.clone();
        writers.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..100 {
                let body = json!({ "query": ADJUST, "variables": { "p": p, "d": -1 } });
                let sent = reqwest::Client::new()
                    .post(format!("{}/graphql", client.url))
                    .bearer_auth(ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => done += 1,
                    _ => break,
                }
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    let mut answered = 0;
    for writer in writers {
        answered += writer.await.unwrap();
    }
    let entries = redis.entries(STREAM).await;
    assert!(answered > 0);
    assert!(
        entries.len() > answered,
        "every answered write ({answered}) and the seed were published before exit: {}",
        entries.len()
    );
    let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    let expected: Vec<String> = (1..=entries.len()).map(|i| format!("{i}-0")).collect();
    assert_eq!(ids, expected);
}

/// Makes the stream key unusable, so Redis refuses every XADD on its merits (WRONGTYPE), writes
/// one event and waits until it is dead. Returns the connection, for `DEL`ing the key again.
async fn kill_one_event(
    redis: &RedisServer,
    admin: &Client,
    product: &str,
) -> redis::aio::MultiplexedConnection {
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(STREAM)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    admin.data(ADJUST, json!({ "p": product, "d": 1 })).await;
    wait_for_outbox(admin, json!({ "dead": 1, "pending": 0 })).await;
    conn
}

#[tokio::test]
async fn a_redriven_event_that_later_ones_overtook_goes_dead_again_instead_of_vanishing() {
    let redis = RedisServer::start();
    let server = Server::start_with(with_redis(&redis, &[("STOCKROOM_RELAY_MAX_ATTEMPTS", "2")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "OVERTAKEN", 10).await;
    redis.wait_for(STREAM, 1, Duration::from_secs(10)).await;
    let mut conn = kill_one_event(&redis, &admin, &p).await;
    // The stream works again and event 3 goes out past the dead one.
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    admin.data(ADJUST, json!({ "p": p, "d": 1 })).await;
    redis.wait_for(STREAM, 1, Duration::from_secs(10)).await;

    let redriven = admin.data("mutation { redriveEvents }", json!({})).await;
    assert_eq!(redriven["redriveEvents"], 1);
    // Redis refuses 2-0 below its top 3-0; the event is not in the stream, so it is not counted
    // as published: it is retried and goes dead again.
    wait_for_outbox(&admin, json!({ "dead": 1, "pending": 0 })).await;
    let entries = redis.wait_for(STREAM, 1, Duration::from_secs(10)).await;
    let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["3-0"]);
    let log = events(&admin, 3).await;
    assert_eq!(log[1]["cursor"], "2-0");
    assert_eq!(log[1]["publishedAt"], Value::Null, "{}", log[1]);
}
