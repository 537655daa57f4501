//! Publishing a batch and writing down what the broker said: published events are marked, a
//! rejected one counts an attempt and is buried at the limit.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::RelayError;
use crate::entity::{event, event_delivery};
use crate::error::AppResult;
use crate::events::broker::{Delivery, Outgoing};

impl super::Worker {
    /// The events positioned in `range`, in position order (none for `None`).
    pub(super) async fn read_range(
        &self,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<Outgoing>, DbErr> {
        let Some((first, last)) = range else {
            return Ok(Vec::new());
        };
        outgoing()
            .filter(event::Column::Position.between(first, last))
            .order_by_asc(event::Column::Position)
            .into_model::<Outgoing>()
            .all(&self.db.conn)
            .await
    }

    /// Hands a batch to the broker (nothing to do for an empty one), stamped with the time its
    /// events count as published: the stream carries it, and the log records the same.
    pub(super) async fn publish(&self, batch: &[Outgoing], term: i64) -> Result<Sent, RelayError> {
        let at = crate::clock::now();
        if batch.is_empty() {
            return Ok(Sent {
                deliveries: Vec::new(),
                at,
            });
        }
        let deliveries = self
            .broker
            .publish(batch, term, at)
            .await
            .map_err(|e| RelayError::Broker(e.0))?;
        Ok(Sent { deliveries, at })
    }

    /// Records the outcome of the batch published before, if any.
    pub(super) async fn record_previous(
        &self,
        previous: Option<(Vec<Outgoing>, Sent)>,
    ) -> AppResult<()> {
        match previous {
            Some((batch, sent)) => self.record(&batch, &sent).await,
            None => Ok(()),
        }
    }

    /// Publishes a batch and records the outcome; an event the broker rejected fails the round.
    pub(super) async fn send(&self, batch: &[Outgoing], term: i64) -> Result<(), RelayError> {
        let sent = self.publish(batch, term).await?;
        let deliveries = &sent.deliveries;
        if let Some(reason) = fenced(deliveries) {
            return Err(RelayError::fenced(term, "publish", reason));
        }
        if let Some(reason) = conflict(deliveries) {
            return Err(self.report_conflict(reason.to_owned()));
        }
        self.record(batch, &sent).await?;
        match rejection(deliveries) {
            Some(reason) => Err(RelayError::Broker(format!(
                "the broker rejected an event: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Positioned, unpublished, live events after `after` (from the start when `None`), in
    /// position order, at most one batch.
    pub(super) async fn positioned_after(
        &self,
        after: Option<i64>,
    ) -> Result<Vec<Outgoing>, DbErr> {
        let mut query = outgoing()
            .filter(event::Column::PublishedAt.is_null())
            .filter(event::Column::DeadAt.is_null())
            .filter(event::Column::Position.is_not_null());
        if let Some(after) = after {
            query = query.filter(event::Column::Position.gt(after));
        }
        query
            .order_by_asc(event::Column::Position)
            .limit(self.config.batch)
            .into_model::<Outgoing>()
            .all(&self.db.conn)
            .await
    }

    /// Marks delivered events published; counts attempts on rejected ones and buries them at the
    /// limit.
    pub(super) async fn record(&self, batch: &[Outgoing], sent: &Sent) -> AppResult<()> {
        let (now, deliveries) = (sent.at, &sent.deliveries);
        let first = batch.first().map(|e| e.position);
        let last = batch.last().map(|e| e.position);
        let contiguous = match (first, last) {
            (Some(a), Some(b)) => b - a + 1 == batch.len() as i64,
            _ => false,
        };
        let positions = first.zip(last).filter(|_| contiguous);
        let mut outcome = Outcome {
            now,
            published: Vec::new(),
            rejected: Vec::new(),
            positions,
        };
        for (e, delivery) in batch.iter().zip(deliveries) {
            match delivery {
                Delivery::Published => outcome.published.push(e.seq),
                Delivery::Rejected(reason) => {
                    let attempts = e.attempts + 1;
                    let dead = attempts >= self.config.max_attempts;
                    tracing::warn!(event_id = %e.id, attempts, dead, %reason, "broker rejected event");
                    outcome
                        .rejected
                        .push((e.seq, attempts, reason.clone(), dead));
                }
                // Not recorded: the batch stays pending until the stream is this database's, or
                // for the relay of the current term.
                Delivery::Conflict(_) | Delivery::Fenced(_) => {}
            }
        }
        outcome.published.sort_unstable();
        let recorded = outcome.clone();
        self.db
            .write_quietly(move |txn| {
                let outcome = recorded.clone();
                Box::pin(async move { Ok(outcome.apply(txn).await?) })
            })
            .await?;
        metrics::counter!("stockroom_relay_published_total")
            .increment(outcome.published.len() as u64);
        let lags = metrics::histogram!("stockroom_relay_commit_to_publish_seconds");
        for e in batch
            .iter()
            .filter(|e| outcome.published.binary_search(&e.seq).is_ok())
        {
            lags.record((now - e.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        Ok(())
    }
}

/// Events as the relay reads them from the `event_log` view: the stream entry's fields, the
/// payload as text.
pub(super) fn outgoing() -> sea_orm::Select<event::Entity> {
    use event::Column;
    use sea_orm::sea_query::ExprTrait;
    event::Entity::find()
        .select_only()
        .columns([
            Column::Seq,
            Column::Id,
            Column::EventType,
            Column::AggregateType,
            Column::AggregateId,
            Column::StoreId,
            Column::ProductId,
        ])
        .expr_as(Expr::col(Column::Payload).cast_as("text"), "payload")
        .columns([Column::OccurredAt, Column::Position, Column::Attempts])
        .expr_as(
            Expr::col(Column::LastError).is_not_null(),
            "rejected_before",
        )
}

/// What the broker said about a batch, and the time its events count as published.
pub(super) struct Sent {
    pub(super) deliveries: Vec<Delivery>,
    pub(super) at: chrono::DateTime<Utc>,
}

/// The reason the broker gave for the first event it rejected, if any.
pub(super) fn rejection(deliveries: &[Delivery]) -> Option<&str> {
    deliveries.iter().find_map(|d| match d {
        Delivery::Rejected(reason) => Some(reason.as_str()),
        Delivery::Published | Delivery::Conflict(_) | Delivery::Fenced(_) => None,
    })
}

/// Why the broker refused the batch for a relay whose term has ended, if it did.
pub(super) fn fenced(deliveries: &[Delivery]) -> Option<&str> {
    deliveries.iter().find_map(|d| match d {
        Delivery::Fenced(reason) => Some(reason.as_str()),
        _ => None,
    })
}

/// Why the stream turned out to hold another history, if it did.
pub(super) fn conflict(deliveries: &[Delivery]) -> Option<&str> {
    deliveries.iter().find_map(|d| match d {
        Delivery::Conflict(reason) => Some(reason.as_str()),
        _ => None,
    })
}

/// What a publish round did, to be written down: published events, rejected ones.
#[derive(Debug, Clone)]
struct Outcome {
    now: chrono::DateTime<Utc>,
    /// Sequence numbers delivered, ascending.
    published: Vec<i64>,
    /// (seq, attempts so far, reason, dead now).
    rejected: Vec<(i64, i32, String, bool)>,
    /// First and last position of the round, when it published a contiguous run of the log.
    positions: Option<(i64, i64)>,
}

impl Outcome {
    async fn apply(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        for (seq, attempts, reason, dead) in &self.rejected {
            event_delivery::Entity::update_many()
                .col_expr(event_delivery::Column::Attempts, Expr::value(*attempts))
                .col_expr(
                    event_delivery::Column::LastError,
                    Expr::value(reason.clone()),
                )
                .col_expr(
                    event_delivery::Column::DeadAt,
                    Expr::value(dead.then_some(self.now)),
                )
                .filter(event_delivery::Column::Seq.eq(*seq))
                .exec(conn)
                .await?;
        }
        if self.rejected.is_empty()
            && let Some((first, last)) = self.positions
        {
            event_delivery::Entity::update_many()
                .col_expr(event_delivery::Column::PublishedAt, Expr::value(self.now))
                .filter(event_delivery::Column::Position.between(first, last))
                .filter(event_delivery::Column::PublishedAt.is_null())
                .exec(conn)
                .await?;
            return Ok(());
        }
        for chunk in self.published.chunks(2000) {
            event_delivery::Entity::update_many()
                .col_expr(event_delivery::Column::PublishedAt, Expr::value(self.now))
                .filter(event_delivery::Column::Seq.is_in(chunk.iter().copied()))
                .exec(conn)
                .await?;
        }
        Ok(())
    }
}
