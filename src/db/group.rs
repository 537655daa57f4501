//! Group commit: concurrent writes share one transaction. Each write runs in its own savepoint,
//! so it keeps its own outcome (a refused write rolls back alone), and the group commits once.
//! A write alone in its group needs no savepoint: the transaction is its own.
//! One writer task owns the group, so on SQLite writers never queue on the database lock.
//!
//! A write is answered only after the group's COMMIT: if the COMMIT fails, every write of the
//! group fails with its cause and the transaction is rolled back. A write refused in its
//! savepoint (by the domain, or by a constraint) is rolled back to it and the group goes on. But
//! when storage fails, or the savepoint itself cannot be begun, released or rolled back, the
//! state of the whole transaction is no longer known (SQLite may have rolled it back, savepoints
//! and all): the group is rolled back and every write in it runs again alone, so each gets its
//! own true outcome.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{WriteHealth, begin_write};
use crate::error::{AppError, AppResult};

/// What became of the group a write ran in.
#[derive(Clone, Copy)]
enum Fate<'e> {
    /// The group committed, or it rolled back for this write's own refusal.
    Settled,
    /// The COMMIT failed: nothing of the group was written.
    CommitFailed(&'e DbErr),
    /// The group was rolled back for another write's database failure: run again alone.
    Abandoned,
}

/// What a job hands back after running: told its group's fate, it answers its caller.
type Completion = Box<dyn for<'e> FnOnce(Fate<'e>) + Send>;

/// How a write that ran in its group went.
enum Outcome {
    Succeeded,
    /// Refused (not found, insufficient stock, a unique race, …): its savepoint rolled back.
    Refused,
    /// Storage failed, or the savepoint did: the transaction's state is unknown.
    StateUnknown(DbErr),
}

/// A write that ran in its group: how to answer its caller, and how it went.
struct Ran {
    complete: Completion,
    outcome: Outcome,
}

/// The answer to a write submitted to the group.
pub enum Answer<T> {
    /// Its outcome, final.
    Done(AppResult<T>),
    /// Its group was abandoned through no fault of its own: run it again alone.
    RunAlone,
}

/// A write waiting for its group.
trait Job: Send {
    /// Runs the write in `txn`: in a savepoint of its own when it shares the group, directly when
    /// it is `alone` (then its failure rolls the whole transaction back instead).
    fn run<'c>(self: Box<Self>, txn: &'c DatabaseTransaction, alone: bool) -> BoxFuture<'c, Ran>;
    /// Answers the caller without running: the group could not start.
    fn refuse(self: Box<Self>, error: &DbErr);
    /// Whether committing this write should wake the relay (it appended events).
    fn wakes_relay(&self) -> bool;
}

/// A caller's write and the channel its answer goes back on.
struct Pending<T, F> {
    work: F,
    reply: oneshot::Sender<Answer<T>>,
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
            let ran = if alone {
                Ok(work(txn).await)
            } else {
                in_savepoint(txn, work).await
            };
            let (outcome, how) = match ran {
                Ok(Ok(value)) => (Ok(value), Outcome::Succeeded),
                Ok(Err(AppError::StorageUnavailable(cause))) => (
                    Err(AppError::StorageUnavailable(cause.clone())),
                    Outcome::StateUnknown(cause),
                ),
                Ok(Err(error)) => (Err(error), Outcome::Refused),
                Err(savepoint) => (
                    Err(AppError::from(savepoint.clone())),
                    Outcome::StateUnknown(savepoint),
                ),
            };
            let complete: Completion = Box::new(move |fate| {
                let answer = match fate {
                    Fate::Settled => Answer::Done(outcome),
                    Fate::CommitFailed(error) => Answer::Done(Err(AppError::from(error.clone()))),
                    Fate::Abandoned => Answer::RunAlone,
                };
                let _ = reply.send(answer);
            });
            Ran {
                complete,
                outcome: how,
            }
        })
    }

    fn wakes_relay(&self) -> bool {
        self.wake
    }

    fn refuse(self: Box<Self>, error: &DbErr) {
        let _ = self
            .reply
            .send(Answer::Done(Err(AppError::from(error.clone()))));
    }
}

/// Runs `work` in a savepoint of `txn`: its own outcome, or `Err` when the savepoint itself
/// could not be begun, released or rolled back (the transaction's state is then unknown).
async fn in_savepoint<T, F>(txn: &DatabaseTransaction, work: F) -> Result<AppResult<T>, DbErr>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>>,
{
    let savepoint = txn.begin().await?;
    match work(&savepoint).await {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(Ok(value))
        }
        Err(error) => {
            savepoint.rollback().await?;
            Ok(Err(error))
        }
    }
}

/// The handle writes are submitted through.
#[derive(Clone)]
pub struct GroupCommitter {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommitter {
    /// Starts the writer task in `tasks`; groups hold at most `max_group` writes. `health` hears
    /// of every commit and of every storage failure. The task ends when the last handle is
    /// dropped, after answering every write it was given.
    pub fn spawn(
        conn: DatabaseConnection,
        committed: Arc<Notify>,
        health: WriteHealth,
        max_group: usize,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(max_group.max(1) * 8);
        let writer = Writer {
            conn,
            committed,
            health,
        };
        tasks.spawn(writer.write_groups(queue, max_group.max(1)));
        GroupCommitter { jobs }
    }

    /// Runs `work` in the next group; answers with its own outcome once the group has
    /// committed, or asks for it to run alone.
    /// `wake`: the commit wakes the relay.
    pub async fn write<T, F>(&self, work: F, wake: bool) -> Answer<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending { work, reply, wake });
        if self.jobs.send(job).await.is_err() {
            return Answer::Done(Err(AppError::Internal("the writer has stopped".into())));
        }
        answer.await.unwrap_or_else(|_| {
            Answer::Done(Err(AppError::Internal("the writer dropped a write".into())))
        })
    }
}

/// The writer task's connection and whom it tells about commits.
struct Writer {
    conn: DatabaseConnection,
    committed: Arc<Notify>,
    health: WriteHealth,
}

impl Writer {
    /// Takes every waiting write (up to `max_group`) as one group, runs it, answers each write.
    async fn write_groups(self, mut queue: mpsc::Receiver<Box<dyn Job>>, max_group: usize) {
        let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(max_group);
        while queue.recv_many(&mut group, max_group).await > 0 {
            metrics::histogram!("stockroom_group_commit_size").record(group.len() as f64);
            self.write_group(&mut group).await;
        }
    }

    /// Runs one group in one transaction and commits it; wakes the relay. A write alone in its
    /// group (most writes at low load) skips the savepoint, two fewer round trips to SQLite's
    /// worker thread; if it fails, the transaction rolls back and its caller gets its own
    /// error. A write that leaves a shared group's transaction in an unknown state (storage
    /// failed, or its savepoint did) rolls the group back and sends every write to run alone; a
    /// failed COMMIT fails every write with its cause.
    async fn write_group(&self, group: &mut Vec<Box<dyn Job>>) {
        let wake = group.iter().any(|job| job.wakes_relay());
        let txn = match begin_write(&self.conn).await {
            Ok(txn) => txn,
            Err(error) => {
                tracing::error!(%error, "could not begin a group transaction");
                self.health.failed(&error);
                group.drain(..).for_each(|job| job.refuse(&error));
                return;
            }
        };
        let alone = group.len() == 1;
        let mut completions = Vec::with_capacity(group.len());
        let mut failed = false;
        let mut state_unknown = false;
        for job in group.drain(..) {
            let ran = job.run(&txn, alone).await;
            match &ran.outcome {
                Outcome::Succeeded => {}
                Outcome::Refused => failed |= alone,
                Outcome::StateUnknown(error) => {
                    self.health.failed(error);
                    (failed, state_unknown) = (true, true);
                }
            }
            completions.push(ran.complete);
        }
        if failed {
            if let Err(error) = txn.rollback().await {
                tracing::error!(%error, "could not roll back a failed group");
            }
            let fate = if alone {
                Fate::Settled
            } else {
                tracing::warn!(
                    writes = completions.len(),
                    "a write left its group's transaction in an unknown state; the group runs \
                     again one write at a time"
                );
                Fate::Abandoned
            };
            debug_assert!(alone || state_unknown);
            completions.into_iter().for_each(|complete| complete(fate));
            return;
        }
        match txn.commit().await {
            Ok(()) => {
                self.health.committed();
                completions
                    .into_iter()
                    .for_each(|complete| complete(Fate::Settled));
                if wake {
                    self.committed.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = completions.len(), "group commit failed");
                self.health.failed(&error);
                completions
                    .into_iter()
                    .for_each(|complete| complete(Fate::CommitFailed(&error)));
            }
        }
    }
}
