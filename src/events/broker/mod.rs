//! The `Broker` abstraction: what the relay hands over (`Outgoing`), what it hears back
//! (`Delivery`), what the feed reads (`Envelope`), and how positions name stream entries. Three
//! implementations: Redis Streams (`redis_streams`), RabbitMQ (`amqp`) and an in-process broker
//! (`memory`). Nothing outside `events` knows which one runs.

mod amqp;
mod memory;
mod redis_refusals;
mod redis_streams;

pub use self::amqp::AmqpBroker;
pub use self::memory::MemoryBroker;
pub use self::redis_streams::RedisBroker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisResult};
use tokio::sync::broadcast;

use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::entity::event;

/// How one event fared in a publish round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Now in the broker (or it already was: a republish after a crash).
    Published,
    /// The broker refused this event on its own merits.
    Rejected(String),
    /// The stream holds another history at this place (another database wrote it, or this
    /// database was restored from an older copy): nothing of the batch is published.
    Conflict(String),
    /// The stream is fenced at a later relay term: this relay's term has ended, nothing of the
    /// batch went in.
    Fenced(String),
}

/// Failure of the broker as a whole: nothing in the round can be assumed delivered.
#[derive(Debug, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerDown(pub String);

/// A positioned event as the broker carries it.
pub type Envelope = Arc<event::Model>;

/// A positioned event as the relay hands it to a broker: the stream entry's fields, with the
/// payload kept as the JSON text it is stored as (Redis gets it as is, never parsed).
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Outgoing {
    /// The event's sequence number (its delivery row's key).
    pub seq: i64,
    /// Event id.
    pub id: Uuid,
    /// `stock.updated`, `reservation.created`, …
    pub event_type: String,
    /// `stock_level` or `reservation`.
    pub aggregate_type: String,
    /// Id of the aggregate the event is about.
    pub aggregate_id: String,
    /// Store concerned, if any.
    pub store_id: Option<String>,
    /// Product concerned, if any.
    pub product_id: Option<Uuid>,
    /// Post-change state, as JSON text.
    pub payload: String,
    /// When it happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Its place in the log.
    pub position: i64,
    /// Times the broker rejected it since it was last (re)driven.
    pub attempts: i32,
    /// Whether the broker ever rejected it (a redrive resets `attempts`, not this).
    pub rejected_before: bool,
}

impl Outgoing {
    /// The event as subscribers see it (payload parsed), published at `published_at`.
    fn to_envelope(
        &self,
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Envelope, serde_json::Error> {
        Ok(Arc::new(event::Model {
            seq: self.seq,
            id: self.id,
            event_type: self.event_type.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            store_id: self.store_id.clone(),
            product_id: self.product_id,
            payload: serde_json::from_str(&self.payload)?,
            occurred_at: self.occurred_at,
            position: Some(self.position),
            published_at: Some(published_at),
            attempts: self.attempts,
            last_error: None,
            dead_at: None,
        }))
    }
}

/// Publishes positioned events in order and reads them back for the live feed.
pub trait Broker: Send + Sync + 'static {
    /// `redis`, `rabbitmq` or `memory`.
    fn kind(&self) -> &'static str;

    /// Publishes `events` (ascending positions) for the relay of `term`, as published at
    /// `published_at` (subscribers see that time, the log records it); one `Delivery` per
    /// event, in order. A broker shared by several processes refuses the whole batch
    /// (`Delivery::Fenced`) once a relay of a later term has published, atomically with the
    /// append. A broker that cannot keep order past a rejection may stop there and answer for
    /// fewer events: those left out are neither published nor rejected, and the relay sends them
    /// again.
    fn publish<'a>(
        &'a self,
        events: &'a [Outgoing],
        term: i64,
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BrokerDown>>;

    /// The latest relay term that published to the stream (0 when none, and for a broker only
    /// this process writes). A new term starts above it.
    fn fence(&self) -> BoxFuture<'_, Result<i64, BrokerDown>> {
        Box::pin(async { Ok(0) })
    }

    /// Reads events after `after_position`, waiting up to `block_ms` for new ones.
    fn read_after(
        &self,
        after_position: i64,
        block_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, BrokerDown>>;

    /// Asks the broker whether it is reachable (and records the answer for `is_up`).
    fn ping(&self) -> BoxFuture<'_, bool>;

    /// True when the broker answered its last call.
    fn is_up(&self) -> bool;

    /// The last entry of the stream: its position and event id (`None` when empty, or for a
    /// broker without a stream of its own).
    fn top(&self) -> BoxFuture<'_, Result<Option<(i64, Uuid)>, BrokerDown>> {
        Box::pin(async { Ok(None) })
    }

    /// Where the relay publishes, for messages (the stream key).
    fn destination(&self) -> String {
        self.kind().to_owned()
    }
}

/// Stream entry ID of a position: `<position>-0`. `InventoryEvent.cursor` uses the same text.
pub fn entry_id(position: i64) -> String {
    format!("{position}-0")
}

/// Parses a cursor or stream entry ID (`N-0`, or a bare `N`) back into a position.
pub fn parse_entry_id(text: &str) -> Option<i64> {
    let position = match text.split_once('-') {
        Some((millis, "0")) => millis,
        Some(_) => return None,
        None => text,
    };
    position.parse::<i64>().ok().filter(|p| *p >= 0)
}
