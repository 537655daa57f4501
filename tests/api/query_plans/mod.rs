//! No list query scans a table that grows with the data: on a seeded database (SQLite and
//! PostgreSQL), every list query and filter of the schema runs through the real server, and
//! the plan of each statement it sent names the index that matches the filter and the keyset
//! order, and reads no large table whole. A filter added to the schema without a case here
//! fails the test.

mod cases;
mod explain;

use std::collections::BTreeSet;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use stockroom_harness::seed::{self, Backend, Size};

use crate::common::postgres::{drop_database, fresh_database};
use crate::common::*;

/// Large enough that PostgreSQL's planner prefers an index to reading a table.
const SIZE: Size = Size {
    products: 10_000,
    stores: 10,
    reservations: 50_000,
    events: 100_000,
};

/// Migrates `db` and writes [`SIZE`] into it.
async fn seeded(db: &DatabaseConnection, backend: Backend) {
    Migrator::up(db, None).await.expect("migrate");
    for statement in seed::statements(backend, SIZE) {
        db.execute_unprepared(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// A server on `options` logging every statement (and the plans PostgreSQL sends), with the
/// background work slowed down.
fn logging_server(options: Options) -> Server {
    Server::start_with(options.env(&[
        ("STOCKROOM_LOG_SQL", "true"),
        (
            "RUST_LOG",
            "warn,sqlx::query=info,sqlx::postgres::notice=info",
        ),
        ("STOCKROOM_SWEEP_INTERVAL_MS", "600000"),
        ("STOCKROOM_RELAY_POLL_MS", "600000"),
    ]))
}

/// The arguments and filter fields of every list query in the schema (`query.name`).
async fn schema_filters(client: &Client) -> BTreeSet<String> {
    let data = client
        .data(
            "{ __schema { queryType { fields { name type { name kind ofType { name } } \
             args { name type { name kind ofType { name } inputFields { name } } } } } } }",
            json!({}),
        )
        .await;
    let mut keys = BTreeSet::new();
    for field in data["__schema"]["queryType"]["fields"].as_array().unwrap() {
        let name = field["name"].as_str().unwrap();
        let returns = field["type"]["ofType"]["name"]
            .as_str()
            .or(field["type"]["name"].as_str())
            .unwrap_or_default();
        if !returns.ends_with("Connection") && returns != "ReservationStats" {
            continue;
        }
        for arg in field["args"].as_array().unwrap() {
            let arg_name = arg["name"].as_str().unwrap();
            match arg["type"]["inputFields"].as_array() {
                Some(fields) => keys.extend(
                    fields
                        .iter()
                        .map(|f| format!("{name}.{}", f["name"].as_str().unwrap())),
                ),
                None if arg_name != "first" => {
                    keys.insert(format!("{name}.{arg_name}"));
                }
                None => {}
            }
        }
    }
    keys
}

/// Runs every case against `server`, explaining its statements on `db`.
async fn every_list_uses_its_index(server: &Server, db: &DatabaseConnection) {
    let admin = server.admin();
    let cases = cases::all();
    let covered: BTreeSet<String> = cases
        .iter()
        .flat_map(|c| c.covers.iter().map(|k| k.to_string()))
        .collect();
    let missing: Vec<_> = schema_filters(&admin)
        .await
        .difference(&covered)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "list arguments without a query-plan case: {missing:?}"
    );
    let postgres = db.get_database_backend() == sea_orm::DbBackend::Postgres;
    let mut failures = Vec::new();
    for case in &cases {
        let expected = if postgres { case.postgres } else { case.sqlite };
        // PostgreSQL settles on a prepared statement's generic plan after five executions when
        // it looks no costlier than the custom ones: the plans checked are those of the
        // seventh execution and of the next page.
        for _ in 0..6 {
            admin.data(&case.query, json!({})).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = server.logs().len();
        let first = admin.data(&case.query, json!({})).await;
        if let Some(cursor) = end_cursor(&first) {
            admin.data(&case.query, json!({ "after": cursor })).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let log = &server.logs()[before..];
        let plans = if postgres {
            explain::postgres_plans(log)
        } else {
            let mut plans = Vec::new();
            for sql in explain::statements(log) {
                let plan = explain::sqlite_plan(db, &sql).await;
                plans.push((sql, plan));
            }
            plans
        };
        let mut named = false;
        let mut seen = Vec::new();
        for (sql, plan) in plans {
            seen.push(format!("{sql}\n{}", plan.join("\n")));
            if let Some(step) = explain::full_scan(&plan, &sql) {
                failures.push(format!("{}: `{step}` in\n{sql}\n{plan:#?}", case.name));
            }
            named |= plan
                .iter()
                .any(|line| expected.iter().any(|i| line.contains(i)));
        }
        if !named {
            failures.push(format!(
                "{}: no plan uses {expected:?}:\n{}",
                case.name,
                seen.join("\n\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The `endCursor` of the page in `data`, when another page follows.
fn end_cursor(data: &Value) -> Option<String> {
    let page = data.as_object()?.values().next()?;
    (page["pageInfo"]["hasNextPage"] == json!(true))
        .then(|| page["pageInfo"]["endCursor"].as_str().map(str::to_owned))?
}

#[tokio::test]
async fn no_list_query_scans_a_large_table_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("seeded.db");
    let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("connect");
    seeded(&db, Backend::Sqlite).await;
    let server = logging_server(Options::default().sqlite_file(&path));
    every_list_uses_its_index(&server, &db).await;
}

#[tokio::test]
async fn no_list_query_scans_a_large_table_on_postgres() {
    let url = fresh_database().await;
    let db = Database::connect(&url).await.expect("connect");
    seeded(&db, Backend::Postgres).await;
    let name = url.rsplit('/').next().unwrap();
    explain::explain_postgres_sessions(&db, name).await;
    let server = logging_server(Options::default().postgres(&url));
    every_list_uses_its_index(&server, &db).await;
    drop(server);
    db.close().await.expect("close");
    drop_database(&url).await;
}
