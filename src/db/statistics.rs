//! The query planner's statistics on SQLite. Without them SQLite guesses how many rows each
//! index key holds, and may pick a store's index over a product's for a page filtered by both;
//! with them it picks the most selective one. `PRAGMA optimize` runs `ANALYZE` on the tables
//! whose statistics are missing or stale (their size changed 25-fold), reading at most a
//! sample of each index (`analysis_limit`), so it stays quick on a large database. It runs once
//! after the migrations at every start and then every [`REFRESH_EVERY`], as SQLite advises
//! for long-lived connections. PostgreSQL keeps its own statistics (autovacuum's `ANALYZE`;
//! the migrations that add indexes analyze their tables).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the statistics are checked while serving.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);

/// Rows of each index `ANALYZE` reads at most.
const ANALYSIS_LIMIT: u32 = 1000;

/// Brings the planner's statistics up to date where they are missing or stale (SQLite; nothing
/// on PostgreSQL). One call, so both pragmas run on the same pooled connection.
pub async fn refresh(conn: &DatabaseConnection) -> Result<(), DbErr> {
    if conn.get_database_backend() != DatabaseBackend::Sqlite {
        return Ok(());
    }
    conn.execute_unprepared(&format!(
        "PRAGMA analysis_limit={ANALYSIS_LIMIT}; PRAGMA optimize=0x10002;"
    ))
    .await?;
    Ok(())
}

/// Refreshes the statistics every [`REFRESH_EVERY`] until `shutdown` (SQLite only).
pub fn spawn_refresher(conn: DatabaseConnection, shutdown: CancellationToken, tasks: &TaskTracker) {
    if conn.get_database_backend() != DatabaseBackend::Sqlite {
        return;
    }
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(error) = refresh(&conn).await {
                tracing::warn!(%error, "refreshing the planner's statistics failed");
            }
        }
    });
}
