//! The databases of `data-scale`: a SQLite file in the scratch directory or a fresh PostgreSQL
//! database, migrated by a `stockroom` build and seeded with `stockroom_harness::seed`.

use std::path::Path;
use std::time::Instant;

use sqlx::{Connection, PgConnection};
use stockroom_harness::seed::{self, Size};

use crate::baseline;
use crate::pg;
use crate::rawsql::Conn;
use crate::scenarios::Context;
use crate::server::{BenchResult, Launch};

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A database on `--postgres`.
    Postgres,
}

impl Backend {
    /// `SQLite` or `PostgreSQL`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A seeded database.
pub enum Target {
    /// The file.
    Sqlite(std::path::PathBuf),
    /// The database (dropped by [`Target::remove`]).
    Postgres(pg::Database),
}

impl Target {
    /// A database migrated by `binary` (or this build) holding `size`. `counters`: the schema
    /// has `reservation_counts` (migration 10) to fill.
    pub async fn seeded(
        ctx: &Context,
        backend: Backend,
        label: &str,
        size: Size,
        counters: bool,
    ) -> BenchResult<Target> {
        Target::seeded_by(ctx, &ctx.binary, backend, label, size, counters).await
    }

    async fn seeded_by(
        ctx: &Context,
        binary: &Path,
        backend: Backend,
        label: &str,
        size: Size,
        counters: bool,
    ) -> BenchResult<Target> {
        let keep = |s: &String| counters || !s.contains("reservation_counts");
        match backend {
            Backend::Sqlite => {
                let path = ctx.scratch.join(format!("data-scale-{label}.db"));
                let _ = std::fs::remove_file(&path);
                baseline::migrate(binary, &path).await?;
                let statements: Vec<String> = seed::statements(seed::Backend::Sqlite, size)
                    .into_iter()
                    .filter(keep)
                    .collect();
                let file = path.clone();
                tokio::task::spawn_blocking(move || -> BenchResult<()> {
                    let conn = Conn::open(&file.to_string_lossy()).map_err(|e| e.to_string())?;
                    conn.exec("BEGIN").map_err(|e| e.to_string())?;
                    for statement in &statements {
                        conn.exec(statement)
                            .map_err(|e| format!("{e}: {statement}"))?;
                    }
                    conn.exec("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())??;
                Ok(Target::Sqlite(path))
            }
            Backend::Postgres => {
                let server = ctx.postgres.as_deref().ok_or("--postgres is not set")?;
                let database = pg::Database::create(
                    server,
                    &format!("scale-{}", label.to_lowercase()),
                    binary,
                )
                .await?;
                let mut conn = PgConnection::connect(&database.url)
                    .await
                    .map_err(|e| e.to_string())?;
                for statement in seed::statements(seed::Backend::Postgres, size)
                    .into_iter()
                    .filter(keep)
                {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| format!("{e}: {statement}"))?;
                }
                Ok(Target::Postgres(database))
            }
        }
    }

    /// How a server starts on it.
    pub fn launch(&self, ctx: &Context) -> Launch {
        match self {
            Target::Sqlite(path) => Launch::new(&ctx.binary, path),
            Target::Postgres(database) => {
                let mut launch = Launch::new(&ctx.binary, &ctx.scratch.join("unused.db"));
                launch.database_url = Some(database.url.clone());
                launch
            }
        }
    }

    /// Deletes the file or drops the database.
    pub async fn remove(self) {
        match self {
            Target::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Target::Postgres(database) => database.drop_now().await,
        }
    }
}

/// Seconds `stockroom migrate` of this build takes on the large set written under `old`'s
/// schema.
pub async fn upgrade_seconds(ctx: &Context, backend: Backend, old: &Path) -> BenchResult<f64> {
    let label = format!("upgrade-{}", ctx.scale_label());
    let target = Target::seeded_by(ctx, old, backend, &label, ctx.scale_size(), false).await?;
    let url = match &target {
        Target::Sqlite(path) => crate::server::sqlite_url(path),
        Target::Postgres(database) => database.url.clone(),
    };
    let started = Instant::now();
    let migrated = baseline::migrate_url(&ctx.binary, &url).await;
    let seconds = started.elapsed().as_secs_f64();
    target.remove().await;
    migrated.map(|()| seconds)
}
