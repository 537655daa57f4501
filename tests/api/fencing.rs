//! The relay's fences, placed deterministically on one SQLite instance: a stream fenced at a
//! later term (another relay took it over, or the database was restored from a backup) and a
//! lease row moved to a later term (another process took the relay over) each stop the relay
//! before it publishes or positions anything in its ended term; it carries on in a new term
//! above both, and the stream stays exactly the log.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

use crate::common::redis_server::RedisServer;
use crate::common::*;

const STREAM: &str = "inventory-events";
const FENCE: &str = "inventory-events:relay-term";
const ADJUST: &str = "mutation($p: UUID!) {
  adjustStock(input: {productId: $p, storeId: \"s1\", delta: 1}) { version } }";

/// The relay term in the lease row of the SQLite file at `path`.
async fn lease_term(path: &std::path::Path) -> i64 {
    let db = Database::connect(format!("sqlite://{}", path.display()))
        .await
        .expect("open the database");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT term FROM relay_leases",
        ))
        .await
        .expect("read the lease")
        .expect("a lease row");
    row.try_get_by_index(0).expect("term")
}

/// The stream's fence.
async fn fence(redis: &RedisServer) -> i64 {
    let mut conn = redis.connection().await;
    let fence: Option<i64> = redis::AsyncCommands::get(&mut conn, FENCE)
        .await
        .expect("GET");
    fence.unwrap_or(0)
}

async fn set_fence(redis: &RedisServer, term: i64) {
    let mut conn = redis.connection().await;
    let _: () = redis::AsyncCommands::set(&mut conn, FENCE, term)
        .await
        .expect("SET");
}

/// Writes `count` adjustments, waits until all is published, and checks the stream.
async fn write_and_compare(server: &Server, redis: &RedisServer, product: &str, count: usize) {
    let admin = server.admin();
    for _ in 0..count {
        admin.data(ADJUST, json!({ "p": product })).await;
    }
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 1).await;
    assert_stream_matches_log(&redis.entries(STREAM).await, &log);
}

#[tokio::test]
async fn a_stream_fenced_at_a_later_term_stops_the_old_term_and_the_relay_moves_above_it() {
    let redis = RedisServer::start();
    // The stream was last written in term 40 (say, before this database was restored).
    set_fence(&redis, 40).await;
    let server = Server::start_with(with_redis(&redis, &[]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "FENCE", 0).await;
    write_and_compare(&server, &redis, &p, 5).await;
    assert_eq!(
        (lease_term(&server.database).await, fence(&redis).await),
        (41, 41),
        "the relay's first term starts above the stream's fence, and raises the fence to it"
    );
    assert_eq!(metric(&admin, "stockroom_relay_fenced_total").await, 0.0);

    // Another relay publishes in term 100: this relay's next batch is refused whole.
    set_fence(&redis, 100).await;
    write_and_compare(&server, &redis, &p, 5).await;
    assert_eq!(
        metric(&admin, "stockroom_relay_fenced_total{stage=\"publish\"}").await,
        1.0,
        "the relay found its term ended when it published"
    );
    assert_eq!(
        (lease_term(&server.database).await, fence(&redis).await),
        (101, 101)
    );
    assert!(server.logs().contains("this relay's term has ended"));
}

#[tokio::test]
async fn a_lease_row_in_a_later_term_stops_positioning_in_the_old_one() {
    let redis = RedisServer::start();
    // A long lease: the relay goes on in the term it knows, without reading the row again.
    let server = Server::start_with(with_redis(&redis, &[("STOCKROOM_RELAY_LEASE_MS", "60000")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "LEASE", 0).await;
    write_and_compare(&server, &redis, &p, 3).await;
    let before = lease_term(&server.database).await;

    // Another process takes the relay over: the lease row moves to a later term.
    let db = Database::connect(format!("sqlite://{}", server.database.display()))
        .await
        .expect("open the database");
    db.execute_unprepared("UPDATE relay_leases SET term = term + 10")
        .await
        .expect("move the term");
    write_and_compare(&server, &redis, &p, 3).await;
    assert_eq!(
        metric(&admin, "stockroom_relay_fenced_total{stage=\"position\"}").await,
        1.0,
        "the relay found its term ended when it positioned"
    );
    assert_eq!(
        metric(&admin, "stockroom_relay_fenced_total{stage=\"publish\"}").await,
        0.0
    );
    let after = lease_term(&server.database).await;
    assert_eq!(
        after,
        before + 10,
        "this process relays on, in the row's term"
    );
    assert_eq!(fence(&redis).await, after);
    let (_, body) = admin.readyz().await;
    assert_eq!(body["relay"], "active", "{body}");
    eventually(Duration::from_secs(2), "gauge", || async {
        match metric(&admin, "stockroom_relay_active").await {
            1.0 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
}
