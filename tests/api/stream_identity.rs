//! Exactly-once that cannot be fooled: a stream written from another database (a fresh one
//! pointed at it, or this one restored from an older copy) is detected; nothing is published to
//! it or marked published; the operator's ways out (delete the stream, or point at another key)
//! publish everything pending, in order, exactly once.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::redis_server::RedisServer;
use crate::common::*;

const STREAM: &str = "inventory-events";
const ADJUST: &str = "mutation($p: UUID!, $d: Int!) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: $d}) { version } }";

/// Waits until `/readyz` reports the broker as `status`; returns the body.
async fn broker_becomes(admin: &Client, status: &str) -> Value {
    eventually(Duration::from_secs(15), "the broker status", || async {
        let (_, body) = admin.readyz().await;
        if body["broker"] == status {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

/// Writes `n` adjustments (one event each).
async fn adjust(admin: &Client, product: &str, n: usize) {
    for _ in 0..n {
        admin.data(ADJUST, json!({ "p": product, "d": 1 })).await;
    }
}

/// While the conflict lasts: nothing is published or marked, the stream is untouched, and
/// every report says so.
async fn assert_held_back(server: &Server, redis: &RedisServer, pending: usize, stream_len: usize) {
    let admin = server.admin();
    let body = broker_becomes(&admin, "conflict").await;
    assert!(
        body["brokerError"]
            .as_str()
            .is_some_and(|e| e.contains(STREAM)),
        "readyz names the stream: {body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outbox = admin
        .data("{ outbox { pending } health { broker } }", json!({}))
        .await;
    assert_eq!(
        outbox["outbox"]["pending"], pending,
        "the events stay pending"
    );
    assert_eq!(outbox["health"]["broker"], "conflict");
    // An event is marked published only when it is in the stream, at its place.
    let stream: HashMap<String, String> = redis
        .entries(STREAM)
        .await
        .into_iter()
        .map(|(id, fields)| (id, fields["id"].clone()))
        .collect();
    for event in events(&admin, 0).await {
        if event["publishedAt"].is_string() {
            let at = event["cursor"].as_str().unwrap_or_default();
            assert_eq!(
                stream.get(at).map(String::as_str),
                event["id"].as_str(),
                "published but not in the stream: {event}"
            );
        }
    }
    assert_eq!(
        redis.entries(STREAM).await.len(),
        stream_len,
        "the stream is untouched"
    );
    assert_eq!(metric(&admin, "stockroom_relay_stream_conflict").await, 1.0);
    assert!(
        server.logs().contains("the stream holds another history"),
        "an error line names it"
    );
}

#[tokio::test]
async fn a_fresh_database_on_another_databases_stream_publishes_nothing_until_it_is_cleared() {
    let redis = RedisServer::start();
    let first = Server::start_with(with_redis(&redis, &[]));
    let admin = first.admin();
    let p = seed(&admin, "s1", "FIRST", 100).await;
    adjust(&admin, &p, 10).await;
    let theirs = redis.wait_for(STREAM, 11, Duration::from_secs(10)).await;
    assert_eq!(theirs.len(), 11);
    drop(first);

    let second = Server::start_with(with_redis(&redis, &[]));
    let admin = second.admin();
    let p = seed(&admin, "s1", "SECOND", 100).await;
    adjust(&admin, &p, 5).await;
    assert_held_back(&second, &redis, 6, 11).await;
    assert_eq!(
        redis.entries(STREAM).await,
        theirs,
        "the other history is intact"
    );

    // The way out: delete the foreign stream.
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let log = events(&admin, 6).await;
    let entries = redis.wait_for(STREAM, 6, Duration::from_secs(10)).await;
    assert_stream_matches_log(&entries, &log);
    assert_eq!(
        broker_becomes(&admin, "ok").await["brokerError"],
        Value::Null
    );
}

#[tokio::test]
async fn a_database_restored_from_an_earlier_copy_does_not_count_its_events_as_published() {
    let redis = RedisServer::start();
    let mut server = Server::start_with(with_redis(&redis, &[]));
    let dir = server.take_dir();
    let database = server.database.clone();
    let admin = server.admin();
    let p = seed(&admin, "s1", "RESTORE", 100).await;
    adjust(&admin, &p, 4).await;
    redis.wait_for(STREAM, 5, Duration::from_secs(10)).await;
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    server.terminate();

    // The backup, taken while the service is stopped: the database file and its write-ahead
    // log, as a file-level backup of a stopped SQLite database copies them.
    let backup = tempfile::tempdir().expect("backup dir");
    let files = |dir: &std::path::Path| {
        ["", "-wal", "-shm"].map(|suffix| dir.join(format!("stockroom.db{suffix}")))
    };
    let live = files(database.parent().expect("database dir"));
    let saved = files(backup.path());
    for (from, to) in live.iter().zip(&saved) {
        if from.exists() {
            std::fs::copy(from, to).expect("back up");
        }
    }

    // The stream keeps going.
    let on_database = |extra: &[(&str, &str)]| Options {
        database: Some(database.clone()),
        ..with_redis(&redis, extra)
    };
    let mut server = Server::start_with(on_database(&[]));
    adjust(&server.admin(), &p, 6).await;
    redis.wait_for(STREAM, 11, Duration::from_secs(10)).await;
    server.terminate();

    // Restored from the copy: positions 1-5 published, the stream ends at 11.
    for (to, from) in live.iter().zip(&saved) {
        let _ = std::fs::remove_file(to);
        if from.exists() {
            std::fs::copy(from, to).expect("restore");
        }
    }
    let server = Server::start_with(on_database(&[]));
    let admin = server.admin();
    adjust(&admin, &p, 2).await;
    assert_held_back(&server, &redis, 2, 11).await;
    drop(server);

    // The way out: another stream key. Everything pending goes there, in order, once.
    let other = "inventory-events-restored";
    let server = Server::start_with(on_database(&[("STOCKROOM_STREAM", other)]));
    let admin = server.admin();
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let log = events(&admin, 7).await;
    assert_eq!(log.len(), 7);
    let entries = redis.wait_for(other, 2, Duration::from_secs(10)).await;
    let ids: Vec<(String, String)> = entries
        .iter()
        .map(|(id, fields)| (id.clone(), fields["id"].clone()))
        .collect();
    let pending: Vec<(String, String)> = log[5..]
        .iter()
        .map(|e| {
            (
                e["cursor"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ids, pending,
        "the new stream holds what was pending, in order, once"
    );
    assert_eq!(
        redis.entries(STREAM).await.len(),
        11,
        "the old stream is untouched"
    );
    assert_eq!(admin.readyz().await.1["broker"], "ok");
    drop(dir);
}
