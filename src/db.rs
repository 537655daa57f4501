//! Database connection (SQLite pragmas for the embedded default) and the write-transaction helper,
//! with optional group commit.

mod group;
pub mod statistics;
mod storage;

pub use group::GroupCommitter;
pub use storage::WriteHealth;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::Settings;
use crate::error::{AppError, AppResult, is_unique_violation};

/// How much of an SQLite database file is memory-mapped (256 MiB of address space, not memory).
const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// Rows an SQLite connection's worker thread hands over before it waits for the reader: a whole
/// relay batch (sqlx's default of 50 stops the worker about twenty times per batch of 1,000).
const SQLITE_ROW_BUFFER: usize = 4096;

/// Opens the pool. A connection still inside a transaction when it would be handed out (a
/// COMMIT or ROLLBACK failed) is closed instead of reused. On PostgreSQL the server ends a
/// session left idle inside a transaction for longer than the relay lease: a frozen process
/// cannot hold row locks (the relay's lease row, hot stock levels) that other instances wait on. SQLite gets WAL,
/// `synchronous=NORMAL`, a 10 s busy timeout, foreign keys, memory-mapped reads (shared by
/// every connection, instead of copying pages into each one's cache), an in-memory temp store (the savepoints of group commit journal there), and no
/// automatic checkpoints: [`spawn_checkpointer`] runs them off the write path. Each connection's
/// worker thread may run [`SQLITE_ROW_BUFFER`] rows ahead of the task reading them.
pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.database_url.clone());
    let transaction_idle = format!("{}ms", settings.relay_lease().as_millis());
    options
        .max_connections(settings.db_pool.max(2))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(settings.log_sql)
        .sqlx_logging_level(tracing::log::LevelFilter::Info)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
                .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", "0")
                .row_buffer_size(SQLITE_ROW_BUFFER)
        })
        .map_sqlx_postgres_opts(move |opts| {
            opts.options([(
                "idle_in_transaction_session_timeout",
                transaction_idle.clone(),
            )])
        })
        .map_sqlx_sqlite_before_acquire(|conn, _| {
            Box::pin(std::future::ready(Ok(storage::reusable(conn))))
        })
        .map_sqlx_postgres_before_acquire(|conn, _| {
            Box::pin(std::future::ready(Ok(storage::reusable(conn))))
        });
    Database::connect(options).await
}

/// How often the checkpointer copies the SQLite write-ahead log back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// On SQLite, checkpoints the write-ahead log every 200 ms until `shutdown`, on its own (passive:
/// it never blocks writers or readers). Without it the commit that crosses SQLite's automatic
/// threshold copies and syncs the log itself, and every write queued behind it waits.
pub fn spawn_checkpointer(
    conn: DatabaseConnection,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: &TaskTracker,
) {
    if conn.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
        return;
    }
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(error) = conn
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed");
            }
        }
    });
}

/// Applies pending migrations, then refreshes the planner's statistics where they are missing
/// or stale (see [`statistics`]).
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await?;
    statistics::refresh(db).await
}

/// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`, so the write lock is taken up
/// front and concurrent writers queue on the busy timeout instead of failing mid-transaction.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Answers when the database can run a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// The database handle used by resolvers: the pool plus the relay's wake-up, so that every
/// committed write reaches the relay at once.
#[derive(Clone)]
pub struct Db {
    /// The connection pool.
    pub conn: DatabaseConnection,
    committed: Arc<Notify>,
    group: Option<GroupCommitter>,
    health: WriteHealth,
}

/// A unit of write work: runs against a transaction (or a savepoint of a group's), may run
/// again after a transient conflict, and can be handed to the writer task.
pub trait WriteWork<T>:
    for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Clone + Send + 'static
{
}

impl<T, F> WriteWork<T> for F where
    F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Clone + Send + 'static
{
}

/// How many times a write is retried after a transient conflict (unique race, deadlock).
const WRITE_ATTEMPTS: usize = 3;

impl Db {
    /// Wakes the relay as a commit that appended events would.
    pub fn wake_relay(&self) {
        self.committed.notify_one();
    }

    /// Wraps a pool; `committed` is notified after each successful write.
    pub fn new(conn: DatabaseConnection, committed: Arc<Notify>) -> Self {
        Db {
            conn,
            committed,
            group: None,
            health: WriteHealth::default(),
        }
    }

    /// Why writes are failing for lack of storage, while they are (for `/readyz`).
    pub fn storage_failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Routes writes through a group committer holding up to `max_group` writes per transaction;
    /// its writer task runs in `tasks` until the last handle to this `Db` is dropped.
    pub fn with_group_commit(mut self, max_group: usize, tasks: &TaskTracker) -> Self {
        self.group = Some(GroupCommitter::spawn(
            self.conn.clone(),
            self.committed.clone(),
            self.health.clone(),
            max_group,
            tasks,
        ));
        self
    }

    /// Runs `work` in a write transaction and commits it; wakes the relay on success. With group
    /// commit, concurrent writes share a transaction, each in its own savepoint. A transient
    /// conflict (unique race, deadlock) is retried (bounded) in a transaction of its own.
    ///
    /// `Ok` only once the COMMIT succeeded. When a statement or the COMMIT fails, the write fails
    /// (`STORAGE_UNAVAILABLE` when storage is the cause), its transaction is rolled back, and
    /// the connection is not reused unless it is known to be outside any transaction.
    pub async fn write<T, F>(&self, work: F) -> AppResult<T>
    where
        F: WriteWork<T>,
        T: Send + 'static,
    {
        self.write_waking(work, true).await
    }

    /// Like [`Db::write`] for the relay's own bookkeeping: the commit does not wake the relay.
    pub async fn write_quietly<T, F>(&self, work: F) -> AppResult<T>
    where
        F: WriteWork<T>,
        T: Send + 'static,
    {
        self.write_waking(work, false).await
    }

    async fn write_waking<T, F>(&self, work: F, wake: bool) -> AppResult<T>
    where
        F: WriteWork<T>,
        T: Send + 'static,
    {
        if let Some(group) = &self.group {
            match group.write(work.clone(), wake).await {
                group::Answer::Done(Err(AppError::Database(error))) if is_transient(&error) => {}
                group::Answer::Done(outcome) => return outcome,
                group::Answer::RunAlone => {}
            }
        }
        self.write_alone(work, wake).await
    }

    async fn write_alone<T, F>(&self, work: F, wake: bool) -> AppResult<T>
    where
        F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>>,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            let txn = begin_write(&self.conn)
                .await
                .inspect_err(|e| self.health.failed(e))?;
            let outcome = match work(&txn).await {
                Ok(value) => txn.commit().await.map(|_| value).map_err(AppError::from),
                Err(error) => rolled_back(txn, error).await,
            };
            match outcome {
                Ok(value) => {
                    self.health.committed();
                    if wake {
                        self.committed.notify_one();
                    }
                    return Ok(value);
                }
                Err(AppError::Database(error))
                    if attempt < WRITE_ATTEMPTS && is_transient(&error) =>
                {
                    tracing::debug!(%error, attempt, "retrying write after a transient conflict");
                    attempt += 1;
                }
                Err(error) => {
                    if let Some(cause) = error.database_error() {
                        self.health.failed(cause);
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Rolls `txn` back explicitly after `error` (instead of leaving it to the drop), so that a
/// failed ROLLBACK is seen and logged; the pool then closes the connection rather than reuse
/// it. Returns `error`.
async fn rolled_back<T>(txn: DatabaseTransaction, error: AppError) -> AppResult<T> {
    if let Err(rollback) = txn.rollback().await {
        tracing::error!(%rollback, %error, "could not roll back a failed write");
    }
    Err(error)
}

/// Unique races (two inserts of one idempotency key), deadlocks and serialization failures.
fn is_transient(error: &DbErr) -> bool {
    if is_unique_violation(error) {
        return true;
    }
    let text = error.to_string();
    text.contains("deadlock detected")
        || text.contains("could not serialize")
        || text.contains("database is locked")
}
