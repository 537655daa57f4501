//! The live feed: one broker reader per process fans events out to every subscriber through a
//! bounded channel. A subscriber that falls behind, or that starts from a cursor, is caught up
//! from the `events` table by position, so nothing is skipped, repeated or reordered.
//!
//! With no subscribers the reader idles instead of reading (and decoding) the whole stream for
//! nobody; the first subscriber wakes it, and it resumes from the last published position. A
//! live subscription starts after the last event published when it was opened.
//!
//! Memory per subscriber is bounded: the shared channel holds at most `CHANNEL_CAPACITY` events
//! for everyone, and a subscriber buffers at most one catch-up batch of its own. On shutdown
//! every subscription stream ends, and the reader task waits (briefly) for open connections to
//! say goodbye before it returns.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::Stream;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, Envelope};
use super::log::read_log;
use super::outbox::EventSelector;
use crate::entity::event_delivery;

/// Events buffered per process for subscribers before a slow one is caught up from the log.
const CHANNEL_CAPACITY: usize = 4096;
/// Rows read from the log per catch-up query.
const CATCH_UP_BATCH: u64 = 500;
/// How long the reader waits at shutdown for open connections to close.
const GOODBYE_GRACE: Duration = Duration::from_secs(3);

/// The process's feed: subscribe to get a stream of events.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Envelope>,
    db: DatabaseConnection,
    /// Position of the last event the reader forwarded (stale while the reader idles).
    top: Arc<AtomicI64>,
    /// True while the reader idles for want of subscribers.
    idle: Arc<AtomicBool>,
    /// Notified by every new subscriber, to wake an idle reader.
    demand: Arc<Notify>,
    shutdown: CancellationToken,
    /// Open connections (see `Feed::connection`).
    connections: Arc<AtomicUsize>,
}

/// Held by an open connection that streams from the feed; at shutdown the reader waits for
/// these to be dropped (up to a few seconds) so connections can close cleanly.
pub struct ConnectionGuard {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    /// Starts the broker reader and returns the feed.
    pub async fn start(
        db: DatabaseConnection,
        broker: Arc<dyn Broker>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Result<Feed, DbErr> {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let start = last_published_position(&db).await?;
        let feed = Feed {
            sender,
            db,
            top: Arc::new(AtomicI64::new(start)),
            idle: Arc::new(AtomicBool::new(false)),
            demand: Arc::new(Notify::new()),
            shutdown,
            connections: Arc::new(AtomicUsize::new(0)),
        };
        tasks.spawn(read_broker(feed.clone(), broker));
        Ok(feed)
    }

    /// Cancelled when the process shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Registers an open connection; the reader's shutdown waits for it to be dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            open: self.connections.clone(),
        }
    }

    /// Subscribers currently receiving from the feed.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Events matching `selector`: after `after` (replayed from the log, then live) or, without
    /// a cursor, live from now: after the last event published when this returns. Ends when the
    /// process shuts down.
    pub async fn subscribe(
        &self,
        after: Option<i64>,
        selector: EventSelector,
    ) -> Result<impl Stream<Item = Result<Envelope, DbErr>> + Send + use<>, DbErr> {
        let receiver = self.sender.subscribe();
        self.demand.notify_one();
        // Live from now: everything up to here counts as already seen, so a subscriber that lags
        // before its first event catches up from here, not from the start. Read after
        // subscribing: an event forwarded in between is skipped, never missed; a jump between
        // this and the reader's next event is read from the log.
        let last = match after {
            Some(after) => after,
            None => self.live_start().await?,
        };
        let state = Subscriber {
            receiver,
            db: self.db.clone(),
            selector,
            last: Some(last),
            catching_up: after.is_some(),
            backlog: VecDeque::new(),
            shutdown: self.shutdown.clone(),
            failed: false,
        };
        Ok(futures_util::stream::unfold(
            state,
            |mut state| async move {
                let item = state.next().await?;
                Some((item, state))
            },
        ))
    }

    /// Where a live subscription starts: the reader's position, or, while the reader idles (its
    /// position is stale), the last position published.
    pub async fn live_start(&self) -> Result<i64, DbErr> {
        if !self.idle.load(Ordering::Acquire) {
            return Ok(self.top.load(Ordering::Acquire));
        }
        last_published_position(&self.db).await
    }
}

async fn last_published_position(db: &DatabaseConnection) -> Result<i64, DbErr> {
    Ok(event_delivery::Entity::find()
        .select_only()
        .expr(Func::max(Expr::col(event_delivery::Column::Position)))
        .filter(event_delivery::Column::PublishedAt.is_not_null())
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Reads the broker from `top` on and forwards every event while anyone listens, until
/// shutdown; then waits for open connections to close.
async fn read_broker(feed: Feed, broker: Arc<dyn Broker>) {
    forward(&feed, broker).await;
    let deadline = Instant::now() + GOODBYE_GRACE;
    while feed.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn forward(feed: &Feed, broker: Arc<dyn Broker>) {
    let mut position = feed.top.load(Ordering::Acquire);
    let mut failures = 0u32;
    loop {
        if feed.sender.receiver_count() == 0 {
            if !idle_until_wanted(feed).await {
                return;
            }
            position = resume_point(feed, position).await;
        }
        let read = tokio::select! {
            read = broker.read_after(position, 1_000) => read,
            _ = feed.shutdown.cancelled() => return,
        };
        match read {
            Ok(events) if events.is_empty() => {
                failures = 0;
                position = fill_from_log(feed, position).await;
            }
            Ok(events) => {
                failures = 0;
                for envelope in events {
                    position = forward_one(feed, position, envelope);
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
                    _ = feed.shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Sends `envelope` to the subscribers if it is past `position`; returns the new position.
fn forward_one(feed: &Feed, position: i64, envelope: Envelope) -> i64 {
    let at = envelope.position.unwrap_or_default();
    if at <= position {
        return position;
    }
    feed.top.store(at, Ordering::Release);
    metrics::gauge!("stockroom_feed_position").set(at as f64);
    let _ = feed.sender.send(envelope);
    at
}

/// After a read that waited and got nothing: events the log marks published past `position`
/// that the broker did not bring (a broker that cannot replay, like RabbitMQ's per-process
/// queue bound after they went out, or a trimmed stream) are read from the log and forwarded
/// as the broker would have: the same events, `publishedAt` included. Returns the new position.
async fn fill_from_log(feed: &Feed, mut position: i64) -> i64 {
    let published = match last_published_position(&feed.db).await {
        Ok(published) if published > position => published,
        Ok(_) => return position,
        Err(error) => {
            tracing::warn!(%error, "feed reader could not read the published position");
            return position;
        }
    };
    let wanted = u64::try_from(published - position).unwrap_or(0);
    let everything = EventSelector::default();
    match read_log(&feed.db, position, &everything, wanted.min(CATCH_UP_BATCH)).await {
        Ok(rows) => {
            let filled = metrics::counter!("stockroom_feed_filled_from_log_total");
            for row in rows.into_iter().filter(|r| r.published_at.is_some()) {
                filled.increment(1);
                position = forward_one(feed, position, Arc::new(row));
            }
        }
        Err(error) => tracing::warn!(%error, "feed reader could not read the log"),
    }
    position
}

/// Marks the reader idle and waits for a subscriber; false at shutdown.
async fn idle_until_wanted(feed: &Feed) -> bool {
    feed.idle.store(true, Ordering::Release);
    // Checked after raising the flag: a subscriber that came before reads the flag and starts
    // from the log; one that comes after has left a wake-up permit.
    while feed.sender.receiver_count() == 0 {
        tokio::select! {
            _ = feed.demand.notified() => {}
            _ = feed.shutdown.cancelled() => return false,
        }
    }
    true
}

/// After idling: continues from the last published position (events published meanwhile had no
/// one to go to), and clears the idle flag once `top` is current.
async fn resume_point(feed: &Feed, position: i64) -> i64 {
    let resumed = match last_published_position(&feed.db).await {
        Ok(published) => position.max(published),
        Err(error) => {
            tracing::warn!(%error, "feed reader could not read the published position");
            position
        }
    };
    feed.top.store(resumed, Ordering::Release);
    metrics::gauge!("stockroom_feed_position").set(resumed as f64);
    feed.idle.store(false, Ordering::Release);
    resumed
}

/// One subscriber's place in the log.
struct Subscriber {
    receiver: broadcast::Receiver<Envelope>,
    db: DatabaseConnection,
    selector: EventSelector,
    /// Position of the last event considered (sent or filtered out).
    last: Option<i64>,
    catching_up: bool,
    /// At most one catch-up batch of events waiting to be sent.
    backlog: VecDeque<Envelope>,
    shutdown: CancellationToken,
    /// A log read failed: the error was sent and the stream ends (the client resumes with
    /// `after`).
    failed: bool,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Envelope, DbErr>> {
        loop {
            if self.failed || self.shutdown.is_cancelled() {
                return None;
            }
            if let Some(envelope) = self.backlog.pop_front() {
                return Some(Ok(envelope));
            }
            if self.catching_up {
                if let Err(error) = self.catch_up().await {
                    tracing::warn!(%error, "a subscriber could not read the event log");
                    self.failed = true;
                    return Some(Err(error));
                }
                continue;
            }
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.shutdown.cancelled() => return None,
            };
            match received {
                Ok(envelope) => self.accept_live(envelope),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a subscriber fell behind; catching up from the log");
                    metrics::counter!("stockroom_feed_lagged_total").increment(1);
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the next rows after `last` from the log; stops catching up when none are left.
    async fn catch_up(&mut self) -> Result<(), DbErr> {
        let after = self.last.unwrap_or(0);
        let rows = read_log(&self.db, after, &EventSelector::default(), CATCH_UP_BATCH).await?;
        if rows.is_empty() {
            tracing::debug!(after, "a subscriber caught up with the log");
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
