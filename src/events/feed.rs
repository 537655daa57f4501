//! The live feed: one broker reader per process fans events out to every subscriber through a
//! bounded channel. A subscriber that falls behind, or that starts from a cursor, is caught up
//! from the `events` table by position, so nothing is skipped, repeated or reordered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, Envelope};
use super::outbox::{EventSelector, read_log};
use crate::entity::event;

/// Events buffered per process for subscribers before a slow one is caught up from the log.
const CHANNEL_CAPACITY: usize = 4096;
/// Rows read from the log per catch-up query.
const CATCH_UP_BATCH: u64 = 500;

/// The process's feed: subscribe to get a stream of events.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Envelope>,
    db: DatabaseConnection,
}

impl Feed {
    /// Starts the broker reader and returns the feed.
    pub async fn start(
        db: DatabaseConnection,
        broker: Arc<dyn Broker>,
        shutdown: CancellationToken,
    ) -> Result<(Feed, tokio::task::JoinHandle<()>), DbErr> {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let start = last_published_position(&db).await?;
        let reader = tokio::spawn(read_broker(broker, sender.clone(), start, shutdown));
        Ok((Feed { sender, db }, reader))
    }

    /// Events matching `selector`: after `after` (replayed from the log, then live) or, without
    /// a cursor, live from now. Ends when the process shuts down.
    pub fn subscribe(
        &self,
        after: Option<i64>,
        selector: EventSelector,
    ) -> impl Stream<Item = Result<Envelope, DbErr>> + Send + use<> {
        let state = Subscriber {
            receiver: self.sender.subscribe(),
            db: self.db.clone(),
            selector,
            last: after,
            catching_up: after.is_some(),
            backlog: VecDeque::new(),
        };
        futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }
}

async fn last_published_position(db: &DatabaseConnection) -> Result<i64, DbErr> {
    Ok(event::Entity::find()
        .select_only()
        .expr(Func::max(Expr::col(event::Column::Position)))
        .filter(event::Column::PublishedAt.is_not_null())
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Reads the broker from `position` on and forwards every event, until shutdown.
async fn read_broker(
    broker: Arc<dyn Broker>,
    sender: broadcast::Sender<Envelope>,
    mut position: i64,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let read = tokio::select! {
            read = broker.read_after(position, 1_000) => read,
            _ = shutdown.cancelled() => return,
        };
        match read {
            Ok(events) => {
                failures = 0;
                for envelope in events {
                    let at = envelope.position.unwrap_or_default();
                    if at > position {
                        position = at;
                        let _ = sender.send(envelope);
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%error, "feed reader lost the broker; retrying");
                }
                let pause = Duration::from_millis(100u64 << failures.min(5));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// One subscriber's place in the log.
struct Subscriber {
    receiver: broadcast::Receiver<Envelope>,
    db: DatabaseConnection,
    selector: EventSelector,
    /// Position of the last event considered (sent or filtered out).
    last: Option<i64>,
    catching_up: bool,
    backlog: VecDeque<Envelope>,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Envelope, DbErr>> {
        loop {
            if let Some(envelope) = self.backlog.pop_front() {
                return Some(Ok(envelope));
            }
            if self.catching_up {
                if let Err(error) = self.catch_up().await {
                    return Some(Err(error));
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(envelope) => self.accept_live(envelope),
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the next rows after `last` from the log; stops catching up when none are left.
    async fn catch_up(&mut self) -> Result<(), DbErr> {
        let after = self.last.unwrap_or(0);
        let rows = read_log(&self.db, after, &EventSelector::default(), CATCH_UP_BATCH).await?;
        if rows.is_empty() {
            self.catching_up = false;
            return Ok(());
        }
        for row in rows {
            self.last = row.position;
            if self.selector.matches(&row) {
                self.backlog.push_back(Arc::new(row));
            }
        }
        Ok(())
    }

    /// Takes a live event: skips what was already sent; a jump in positions means something
    /// was missed, so the gap is read from the log first.
    fn accept_live(&mut self, envelope: Envelope) {
        let position = envelope.position.unwrap_or_default();
        match self.last {
            Some(last) if position <= last => return,
            Some(last) if position > last + 1 => {
                self.catching_up = true;
                return;
            }
            _ => {}
        }
        self.last = Some(position);
        if self.selector.matches(&envelope) {
            self.backlog.push_back(envelope);
        }
    }
}
