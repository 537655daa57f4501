//! The reservation batcher: a queue and a task that take the single-line reservations waiting
//! at the same moment and write them as one batch (`domain::batching::reserve_each` decides
//! them). A batch that fails (another process changed a level) runs its requests one by one.
//! It sits between `graphql` and `domain`, beside `db`: it owns a task and a `Db`, which domain
//! functions never do.

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::db::Db;
use crate::domain::batching::reserve_each;
use crate::domain::reservations::{self, Reserve};
use crate::entity::reservation;
use crate::error::{AppError, AppResult};

type Reply = oneshot::Sender<AppResult<reservation::Model>>;

/// The handle reservations are submitted through.
#[derive(Clone)]
pub struct ReservationBatcher {
    queue: mpsc::Sender<(Reserve, Reply)>,
}

/// The batching task's database and where it runs the requests of an abandoned batch.
struct Batching {
    db: Db,
    tasks: TaskTracker,
}

impl ReservationBatcher {
    /// Starts the batching task in `tasks`; a batch holds at most `max` requests. The task ends
    /// when the last handle is dropped, after answering every request it was given.
    pub fn spawn(db: Db, max: usize, tasks: &TaskTracker) -> Self {
        let (queue, requests) = mpsc::channel(max.max(1) * 4);
        let batching = Batching {
            db,
            tasks: tasks.clone(),
        };
        tasks.spawn(batching.run(requests, max.max(1)));
        ReservationBatcher { queue }
    }

    /// Whether `input` can be batched: one line and no idempotency key.
    pub fn accepts(input: &Reserve) -> bool {
        input.lines.len() == 1 && input.idempotency_key.is_none()
    }

    /// Reserves through the next batch. `INSUFFICIENT_STOCK` has already been recorded as
    /// `reservation.failed` when it returns.
    pub async fn reserve(&self, input: Reserve) -> AppResult<reservation::Model> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((input, reply))
            .await
            .map_err(|_| AppError::Internal("the reservation batcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Internal("the reservation batcher dropped a request".into()))?
    }
}

impl Batching {
    async fn run(self, mut requests: mpsc::Receiver<(Reserve, Reply)>, max: usize) {
        let db = &self.db;
        let mut batch = Vec::with_capacity(max);
        while requests.recv_many(&mut batch, max).await > 0 {
            metrics::histogram!("stockroom_reservation_batch_size").record(batch.len() as f64);
            let inputs: Vec<Reserve> = batch.iter().map(|(input, _)| input.clone()).collect();
            let decided = db
                .write(move |txn| {
                    let inputs = inputs.clone();
                    Box::pin(async move { reserve_each(txn, &inputs).await })
                })
                .await;
            match decided {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "reservation batch abandoned; running its requests alone");
                    metrics::counter!("stockroom_reservation_batches_abandoned_total").increment(1);
                    for (input, reply) in batch.drain(..) {
                        let db = db.clone();
                        self.tasks.spawn(async move {
                            let made = reserve_alone(&db, input).await.and_then(first);
                            let _ = reply.send(made);
                        });
                    }
                }
            }
        }
    }
}

/// Reserves in a transaction of its own (the path of unbatched reservations); a refusal for
/// lack of stock is recorded as `reservation.failed` in a second transaction, after the first
/// rolled back.
pub async fn reserve_alone(db: &Db, input: Reserve) -> AppResult<Vec<reservation::Model>> {
    let attempt = input.clone();
    let outcome = db
        .write(move |txn| Box::pin(reservations::reserve(txn, attempt.clone())))
        .await;
    if let Err(AppError::InsufficientStock { .. }) = &outcome {
        let recorded = db
            .write(move |txn| {
                let input = input.clone();
                Box::pin(async move { reservations::record_failure(txn, &input).await })
            })
            .await;
        if let Err(error) = recorded {
            tracing::error!(%error, "could not record reservation.failed");
        }
    }
    outcome
}

/// The one reservation of a single-line request.
fn first(made: Vec<reservation::Model>) -> AppResult<reservation::Model> {
    made.into_iter()
        .next()
        .ok_or_else(|| AppError::Internal("reservation vanished".into()))
}
