//! Group commit: concurrent writes share one transaction. Each write runs in its own savepoint,
//! so it keeps its own outcome (a refused write rolls back alone), and the group commits once.
//! A write alone in its group needs no savepoint: the transaction is its own.
//! One writer task owns the group, so on SQLite writers never queue on the database lock.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{Notify, mpsc, oneshot};

use super::begin_write;
use crate::error::{AppError, AppResult};

/// What a job hands back after running: told whether the group committed, it answers its caller.
type Completion = Box<dyn FnOnce(Result<(), &DbErr>) + Send>;

/// A write that ran in its group: how to answer its caller, and whether it failed.
struct Ran {
    complete: Completion,
    failed: bool,
}

/// A write waiting for its group.
trait Job: Send {
    /// Runs the write in `txn`: in a savepoint of its own when it shares the group, directly when
    /// it is `alone` (then its failure rolls the whole transaction back instead).
    fn run<'c>(self: Box<Self>, txn: &'c DatabaseTransaction, alone: bool) -> BoxFuture<'c, Ran>;
    /// Answers the caller without running: the group could not start.
    fn abandon(self: Box<Self>, error: &DbErr);
    /// Whether committing this write should wake the relay (it appended events).
    fn wakes_relay(&self) -> bool;
}

/// A caller's write and the channel its answer goes back on.
struct Pending<T, F> {
    work: F,
    reply: oneshot::Sender<AppResult<T>>,
    wake: bool,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, txn: &'c DatabaseTransaction, alone: bool) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            let Pending { work, reply, .. } = *self;
            let outcome = if alone {
                work(txn).await
            } else {
                in_savepoint(txn, work).await
            };
            let failed = outcome.is_err();
            let complete: Completion = Box::new(move |committed| {
                let answer = match committed {
                    Ok(()) => outcome,
                    Err(error) => Err(AppError::Internal(format!("group commit failed: {error}"))),
                };
                let _ = reply.send(answer);
            });
            Ran { complete, failed }
        })
    }

    fn wakes_relay(&self) -> bool {
        self.wake
    }

    fn abandon(self: Box<Self>, error: &DbErr) {
        let _ = self.reply.send(Err(AppError::Internal(format!(
            "could not begin a write: {error}"
        ))));
    }
}

async fn in_savepoint<T, F>(txn: &DatabaseTransaction, work: F) -> AppResult<T>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>>,
{
    let savepoint = txn.begin().await?;
    match work(&savepoint).await {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(value)
        }
        Err(error) => {
            savepoint.rollback().await?;
            Err(error)
        }
    }
}

/// The handle writes are submitted through.
#[derive(Clone)]
pub struct GroupCommitter {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommitter {
    /// Starts the writer task; groups hold at most `max_group` writes.
    pub fn spawn(conn: DatabaseConnection, committed: Arc<Notify>, max_group: usize) -> Self {
        let (jobs, queue) = mpsc::channel(max_group.max(1) * 8);
        tokio::spawn(write_groups(conn, queue, committed, max_group.max(1)));
        GroupCommitter { jobs }
    }

    /// Runs `work` in the next group; returns its own outcome once the group has committed.
    /// `wake`: the commit wakes the relay.
    pub async fn write<T, F>(&self, work: F, wake: bool) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending { work, reply, wake });
        self.jobs
            .send(job)
            .await
            .map_err(|_| AppError::Internal("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Internal("the writer dropped a write".into()))?
    }
}

/// The writer task: takes every waiting write (up to `max_group`), runs them in one
/// transaction, commits, answers each, wakes the relay. A write alone in its group (most writes
/// at low load) skips the savepoint, two fewer round trips to SQLite's worker thread; if it
/// fails, the transaction rolls back and its caller gets its own error.
async fn write_groups(
    conn: DatabaseConnection,
    mut queue: mpsc::Receiver<Box<dyn Job>>,
    committed: Arc<Notify>,
    max_group: usize,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(max_group);
    while queue.recv_many(&mut group, max_group).await > 0 {
        metrics::histogram!("stockroom_group_commit_size").record(group.len() as f64);
        let wake = group.iter().any(|job| job.wakes_relay());
        let txn = match begin_write(&conn).await {
            Ok(txn) => txn,
            Err(error) => {
                tracing::error!(%error, "could not begin a group transaction");
                group.drain(..).for_each(|job| job.abandon(&error));
                continue;
            }
        };
        let alone = group.len() == 1;
        let mut completions = Vec::with_capacity(group.len());
        let mut failed_alone = false;
        for job in group.drain(..) {
            let ran = job.run(&txn, alone).await;
            failed_alone |= alone && ran.failed;
            completions.push(ran.complete);
        }
        if failed_alone {
            if let Err(error) = txn.rollback().await {
                tracing::error!(%error, "could not roll back a failed write");
            }
            completions
                .into_iter()
                .for_each(|complete| complete(Ok(())));
            continue;
        }
        let outcome = txn.commit().await;
        if let Err(error) = &outcome {
            tracing::error!(%error, "group commit failed");
        }
        for complete in completions {
            complete(outcome.as_ref().map(|_| ()));
        }
        if outcome.is_ok() && wake {
            committed.notify_one();
        }
    }
}
