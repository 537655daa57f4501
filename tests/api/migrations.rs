//! Upgrading a database made by an earlier release keeps every event and its delivery state.

use crate::common::*;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

/// Events in the wide `events` table of migration 4: one published, one dead, one waiting.
const OLD_EVENTS: &str = "INSERT INTO events \
    (id, event_type, aggregate_type, aggregate_id, store_id, product_id, payload, occurred_at, \
     position, published_at, attempts, last_error, dead_at) VALUES \
    (X'0190a0a0000070008000000000000001', 'stock.created', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"published\"}', '2026-11-01T10:00:00+00:00', 1, '2026-11-01T10:00:01+00:00', \
     0, NULL, NULL), \
    (X'0190a0a0000070008000000000000002', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"dead\"}', '2026-11-01T10:00:02+00:00', 2, NULL, 5, 'too big', \
     '2026-11-01T10:00:03+00:00'), \
    (X'0190a0a0000070008000000000000003', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"waiting\"}', '2026-11-01T10:00:04+00:00', NULL, NULL, 0, NULL, NULL)";

/// Migrates a fresh SQLite file to migration 4 and fills its outbox the old way.
async fn old_database(path: &std::path::Path) {
    let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("connect");
    Migrator::up(&db, Some(4)).await.expect("migrate to 4");
    db.execute_unprepared(OLD_EVENTS).await.expect("old events");
    db.close().await.expect("close");
}

#[tokio::test]
async fn an_upgraded_database_keeps_every_event_and_its_delivery_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    old_database(&path).await;

    let server = Server::start_with(Options {
        database: Some(path),
        ..Options::default()
    });
    let admin = server.admin();
    let log = events(&admin, 3).await;
    let notes: Vec<_> = log.iter().map(|e| e["payload"]["note"].clone()).collect();
    assert_eq!(notes, [json!("published"), json!("dead"), json!("waiting")]);
    let cursors: Vec<_> = log.iter().map(|e| e["cursor"].clone()).collect();
    assert_eq!(cursors, [json!("1-0"), json!("2-0"), json!("3-0")]);
    assert_eq!(
        log[0]["publishedAt"]
            .as_str()
            .map(|t| t.starts_with("2026-11-01T10:00:01")),
        Some(true),
        "{}",
        log[0]
    );
    assert_eq!(log[1]["publishedAt"], json!(null));

    // The waiting event is published after the upgrade; the dead one stays dead.
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 1 })).await;
    let log = events(&admin, 3).await;
    assert!(log[2]["publishedAt"].is_string(), "{}", log[2]);

    // New writes still land in the log after the upgraded events.
    seed(&admin, "a", "UPG", 1).await;
    let log = events(&admin, 4).await;
    assert_eq!(log[3]["cursor"], json!("4-0"), "{}", log[3]);
}

#[tokio::test]
async fn migration_5_rolls_back_to_the_wide_events_table_with_its_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    old_database(&path).await;
    let db = Database::connect(format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    Migrator::up(&db, None).await.expect("up");
    Migrator::down(&db, Some(steps_back_to(4)))
        .await
        .expect("down");
    let state = delivery_states(&db, &format!("{DELIVERY_COLUMNS} FROM events ORDER BY seq")).await;
    assert_eq!(
        state,
        [
            (Some(1), true, 0, None, false),
            (Some(2), false, 5, Some("too big".to_owned()), true),
            (None, false, 0, None, false),
        ]
    );
}

/// Events whose sequence numbers run ahead of their positions (as in a database whose log
/// started elsewhere): one positioned and published at 7, two waiting.
const OFFSET_EVENTS: &str = "INSERT INTO events \
    (seq, id, event_type, aggregate_type, aggregate_id, store_id, product_id, payload, \
     occurred_at) VALUES \
    (40, X'0190a0a0000070008000000000000040', 'stock.created', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"first\"}', '2026-11-01T10:00:00+00:00'), \
    (41, X'0190a0a0000070008000000000000041', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"second\"}', '2026-11-01T10:00:01+00:00'), \
    (42, X'0190a0a0000070008000000000000042', 'stock.updated', 'stock_level', 'l1', 'a', NULL, \
     '{\"note\":\"third\"}', '2026-11-01T10:00:02+00:00'); \
    UPDATE event_delivery SET position = 7, published_at = '2026-11-01T10:00:01+00:00' \
    WHERE seq = 40";

#[tokio::test]
async fn new_positions_follow_the_highest_one_whatever_the_sequence_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("offset.db");
    let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    db.execute_unprepared(OFFSET_EVENTS).await.expect("events");
    db.close().await.expect("close");

    let server = Server::start_with(Options {
        database: Some(path),
        ..Options::default()
    });
    let admin = server.admin();
    seed(&admin, "a", "OFFSET", 1).await;
    let log = events(&admin, 4).await;
    let notes: Vec<_> = log.iter().map(|e| e["payload"]["note"].clone()).collect();
    assert_eq!(
        notes[..3],
        [json!("first"), json!("second"), json!("third")]
    );
    let cursors: Vec<_> = log.iter().map(|e| e["cursor"].clone()).collect();
    assert_eq!(
        cursors,
        [json!("7-0"), json!("8-0"), json!("9-0"), json!("10-0")],
        "positions continue after the highest one, in sequence order, without gaps"
    );
}
