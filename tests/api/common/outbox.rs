//! The outbox seen from outside: delivery state in the tables, migrations back and forth, and
//! the Redis stream compared with the log.

use std::collections::HashMap;

use serde_json::Value;

use super::Options;
use super::redis_server::RedisServer;

/// An event's delivery state as the migration tests read it: position, published, attempts,
/// last error, dead.
pub type DeliveryState = (Option<i64>, bool, i32, Option<String>, bool);

/// How many migrations `Migrator::down` undoes to go back to the schema of migration `version`.
pub fn steps_back_to(version: usize) -> u32 {
    use migration::MigratorTrait;
    (migration::Migrator::migrations().len() - version) as u32
}

/// The columns `delivery_states` expects, in order, for a table or view with delivery state.
pub const DELIVERY_COLUMNS: &str =
    "SELECT position, published_at IS NOT NULL, attempts, last_error, dead_at IS NOT NULL";

/// Runs `sql` (selecting `DELIVERY_COLUMNS`) and returns each row's state, in row order.
pub async fn delivery_states(db: &impl sea_orm::ConnectionTrait, sql: &str) -> Vec<DeliveryState> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .expect("read delivery state");
    rows.iter()
        .map(|r| {
            (
                r.try_get_by_index(0).expect("position"),
                r.try_get_by_index(1).expect("published"),
                r.try_get_by_index(2).expect("attempts"),
                r.try_get_by_index(3).expect("last_error"),
                r.try_get_by_index(4).expect("dead"),
            )
        })
        .collect()
}

/// Options for a server publishing to `redis`, with short relay backoffs and `extra` settings.
pub fn with_redis(redis: &RedisServer, extra: &[(&str, &str)]) -> Options {
    Options::default().redis(redis).env(extra)
}

/// The stream holds exactly the log: IDs `1-0..N-0` in order, each event id once, matching the
/// database's log order.
pub fn assert_stream_matches_log(entries: &[(String, HashMap<String, String>)], log: &[Value]) {
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let expected: Vec<String> = (1..=log.len()).map(|i| format!("{i}-0")).collect();
    assert_eq!(
        ids, expected,
        "stream IDs are the log positions, each once, in order"
    );
    for ((id, fields), event) in entries.iter().zip(log) {
        assert_eq!(
            fields["id"],
            event["id"].as_str().unwrap(),
            "entry {id} is the event at that position"
        );
        assert_eq!(event["cursor"], id.as_str());
    }
}
