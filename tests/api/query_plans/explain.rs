//! The plans of the statements a server ran. SQLite: the statements from its statement log
//! (`--log-sql`), each explained with `EXPLAIN QUERY PLAN`. PostgreSQL: the plans the server's
//! own sessions executed, with their parameters (custom plans, or the generic plan a prepared
//! statement settles on), which `auto_explain` sends each session as a notice and the server
//! logs.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// Tables that grow with the data: no plan may read one of them whole. `e` and `d` are the
/// aliases SQLite prints for `events` and `event_delivery` inside the `event_log` view.
const LARGE: &[&str] = &[
    "products",
    "stock_levels",
    "reservations",
    "events",
    "event_delivery",
    "product_search_keys",
    "e",
    "d",
];

/// The `SELECT` statements in a slice of the server's log, as sent.
pub fn statements(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("sqlx::query"))
        .filter_map(|line| {
            let start = line.find("db.statement=\"")? + "db.statement=\"".len();
            let end = line.rfind("\" rows_affected")?;
            Some(unescape(&line[start..end]).trim().to_owned())
        })
        .filter(|sql| sql.starts_with("SELECT"))
        .collect()
}

/// Undoes the log's string escapes.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Makes every session opened on `database` from now on send the plan of each statement it
/// runs to its client as a notice (`auto_explain`; needs a superuser), and run prepared
/// statements with their generic plan from the first execution: the plan the server settles on
/// after five executions whenever it looks no costlier, which cannot see the parameters.
pub async fn explain_postgres_sessions(admin: &DatabaseConnection, database: &str) {
    for setting in [
        "plan_cache_mode = force_generic_plan",
        "session_preload_libraries = 'auto_explain'",
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_level = 'notice'",
    ] {
        admin
            .execute_unprepared(&format!("ALTER DATABASE {database} SET {setting}"))
            .await
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
    }
}

/// (statement, plan lines) of every statement whose plan a PostgreSQL session sent in a slice
/// of the server's log (`sqlx::postgres::notice`).
pub fn postgres_plans(log: &str) -> Vec<(String, Vec<String>)> {
    log.split("Query Text:")
        .skip(1)
        .map(|block| {
            let lines: Vec<&str> = block
                .lines()
                .take_while(|line| !starts_with_timestamp(line))
                .collect();
            let plan_at = lines
                .iter()
                .position(|line| line.contains("(cost="))
                .unwrap_or(lines.len());
            let sql = lines[..plan_at].join(" ").trim().to_owned();
            let plan = lines[plan_at..].iter().map(|l| l.to_string()).collect();
            (sql, plan)
        })
        .filter(|(sql, _)| sql.starts_with("SELECT"))
        .collect()
}

/// A new log line begins with its RFC 3339 timestamp.
fn starts_with_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 20 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// The SQLite plan of `sql` on `db`, one line per step.
pub async fn sqlite_plan(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("EXPLAIN QUERY PLAN {sql}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN QUERY PLAN {sql}: {e}"));
    rows.iter()
        .map(|row| row.try_get::<String>("", "detail").expect("detail"))
        .collect()
}

/// The step of `plan` (for `sql`) that reads a large table whole, if any: SQLite's `SCAN t`
/// without an index, PostgreSQL's `Seq Scan on t`. SQLite prints the same `SCAN t` for a walk
/// of a table in its rowid order, which a page ordered by that key (`ORDER BY "t"."id" …
/// LIMIT`, nothing sorted) stops after one page: that walk is not a scan.
pub fn full_scan<'p>(plan: &'p [String], sql: &str) -> Option<&'p String> {
    let sorts = plan.iter().any(|line| line.contains("TEMP B-TREE"));
    plan.iter().find(|line| {
        let line = line.trim_start().trim_start_matches("->").trim_start();
        if let Some(rest) = line.strip_prefix("SCAN ") {
            let table = rest.split_whitespace().next().unwrap_or_default();
            let key_order = format!("ORDER BY \"{table}\".\"id\" ASC LIMIT");
            let walk = !sorts && rest == table && sql.contains(&key_order);
            return LARGE.contains(&table) && !rest.contains(" USING ") && !walk;
        }
        if let Some(rest) = line.strip_prefix("Seq Scan on ") {
            let table = rest.split_whitespace().next().unwrap_or_default();
            return LARGE.contains(&table);
        }
        false
    })
}
