//! RabbitMQ (AMQP 0-9-1): one persistent message per event on a durable topic exchange, routing
//! key `inventory.<type>`, published with publisher confirms; an event counts as published only
//! once RabbitMQ confirmed it. The live feed reads this process's own exclusive, auto-delete
//! queue bound to `inventory.#` into a bounded ring (`memory::Ring`).
//!
//! RabbitMQ cannot refuse a repeated message the way Redis refuses a repeated entry ID, so a
//! crash between the confirm and the mark, or a relay whose term ended while it was paused,
//! can send an event again: the same `message_id` and `position`, never a gap (see
//! docs/ARCHITECTURE.md, "RabbitMQ").

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::memory::Ring;
use super::*;

/// How long connecting may take before RabbitMQ counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a batch may wait for its confirms before RabbitMQ counts as down.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages this process's feed queue holds (older ones are dropped; subscribers that
/// miss them catch up from the log).
const FEED_QUEUE_LENGTH: i64 = 10_000;
/// Events the ring keeps for the live feed.
const RING_CAPACITY: usize = 10_000;

/// RabbitMQ: publishes to a topic exchange, reads its own queue back for the live feed.
pub struct AmqpBroker {
    url: String,
    exchange: String,
    /// The publishing connection and its confirm-mode channel, once connected.
    publisher: tokio::sync::Mutex<Option<(Connection, Channel)>>,
    /// The consuming connection of the live feed, once connected.
    listener: tokio::sync::Mutex<Option<Connection>>,
    /// Cleared by the listener's task when its consumer ends.
    listening: Arc<AtomicBool>,
    ring: Arc<Ring>,
    up: AtomicBool,
}

/// A message body: the event as consumers read it.
#[derive(Serialize)]
struct Body<'a> {
    id: Uuid,
    cursor: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    store_id: Option<&'a str>,
    product_id: Option<Uuid>,
    payload: &'a RawValue,
    occurred_at: String,
}

/// A message body as the live feed reads it back.
#[derive(Deserialize)]
struct Received {
    id: Uuid,
    cursor: String,
    #[serde(rename = "type")]
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    store_id: Option<String>,
    product_id: Option<Uuid>,
    payload: serde_json::Value,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

impl AmqpBroker {
    /// A broker for `url` publishing to `exchange`; connects lazily, so the server starts while
    /// RabbitMQ is down.
    pub fn new(url: &str, exchange: String) -> Result<Self, String> {
        let parsed = url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| format!("not an AMQP URL: {e}"))?;
        if parsed.scheme != lapin::uri::AMQPScheme::AMQP {
            return Err(
                "amqps:// (TLS) is not built in; use amqp:// (through a TLS tunnel such \
                 as stunnel when RabbitMQ is on another network)"
                    .to_owned(),
            );
        }
        Ok(AmqpBroker {
            url: url.to_owned(),
            exchange,
            publisher: tokio::sync::Mutex::new(None),
            listener: tokio::sync::Mutex::new(None),
            listening: Arc::new(AtomicBool::new(false)),
            ring: Arc::new(Ring::new(RING_CAPACITY)),
            up: AtomicBool::new(false),
        })
    }

    fn down(&self, error: impl std::fmt::Display) -> BrokerDown {
        self.up.store(false, Ordering::Relaxed);
        BrokerDown(format!("rabbitmq: {error}"))
    }

    /// Opens a connection and declares the exchange on a new channel.
    async fn open(&self) -> Result<(Connection, Channel), BrokerDown> {
        let connect = Connection::connect(&self.url, ConnectionProperties::default());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| self.down("connecting timed out"))?
            .map_err(|e| self.down(e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.down(e))?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.down(e))?;
        Ok((connection, channel))
    }

    /// The publishing channel (in confirm mode), connecting first when needed.
    async fn channel(&self) -> Result<Channel, BrokerDown> {
        let mut slot = self.publisher.lock().await;
        if let Some((_, channel)) = slot.as_ref().filter(|(_, c)| c.status().connected()) {
            return Ok(channel.clone());
        }
        if let Some((connection, _)) = slot.take() {
            let _ = connection.close(200, "reconnecting".into()).await;
        }
        let (connection, channel) = self.open().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.down(e))?;
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Drops the publishing connection after a failure, so the next call reconnects.
    async fn forget_publisher(&self) {
        if let Some((connection, _)) = self.publisher.lock().await.take() {
            let _ = connection.close(200, "giving up".into()).await;
        }
    }

    /// Starts this process's feed queue and its consumer, unless running.
    async fn listen(&self) -> Result<(), BrokerDown> {
        let mut slot = self.listener.lock().await;
        if self.listening.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(connection) = slot.take() {
            let _ = connection.close(200, "reconnecting".into()).await;
        }
        let (connection, channel) = self.open().await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(FEED_QUEUE_LENGTH),
        );
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(ShortString::from(""), own, arguments)
            .await
            .map_err(|e| self.down(e))?;
        channel
            .queue_bind(
                queue.name().clone(),
                self.exchange.as_str().into(),
                "inventory.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.down(e))?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "stockroom-feed".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.down(e))?;
        self.listening.store(true, Ordering::Release);
        tokio::spawn(consume(consumer, self.ring.clone(), self.listening.clone()));
        *slot = Some(connection);
        Ok(())
    }

    /// Publishes a batch and waits for its confirms, in order; stops at the first event
    /// RabbitMQ did not take.
    async fn publish_confirmed(
        &self,
        channel: &Channel,
        events: &[Outgoing],
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Delivery>, BrokerDown> {
        let mut confirms = Vec::with_capacity(events.len());
        for e in events {
            let Some((body, properties)) = message(e, published_at) else {
                confirms.push(None);
                break;
            };
            let routing_key = format!("inventory.{}", e.event_type);
            let mandatory = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key.into(),
                    mandatory,
                    &body,
                    properties,
                )
                .await
                .map_err(|e| self.down(e))?;
            confirms.push(Some(confirm));
        }
        let mut deliveries = Vec::with_capacity(confirms.len());
        for confirm in confirms {
            let Some(confirm) = confirm else {
                deliveries.push(Delivery::Rejected("payload is not JSON".to_owned()));
                break;
            };
            let delivery = match confirm.await.map_err(|e| self.down(e))? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Delivery::Published,
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    Delivery::Rejected(format!(
                        "unroutable: {} {}",
                        returned.reply_code, returned.reply_text
                    ))
                }
                Confirmation::Nack(None) => Delivery::Rejected("nacked by RabbitMQ".to_owned()),
            };
            let taken = delivery == Delivery::Published;
            deliveries.push(delivery);
            // Later messages may be in the exchange already; they are sent again after this
            // one, as repeats a consumer drops.
            if !taken {
                break;
            }
        }
        Ok(deliveries)
    }
}

/// The message of one event: its JSON body and properties (`None` when the stored payload is
/// not JSON).
fn message(
    e: &Outgoing,
    published_at: chrono::DateTime<chrono::Utc>,
) -> Option<(Vec<u8>, BasicProperties)> {
    let payload: &RawValue = serde_json::from_str(&e.payload).ok()?;
    let cursor = entry_id(e.position);
    let body = serde_json::to_vec(&Body {
        id: e.id,
        cursor: cursor.clone(),
        event_type: &e.event_type,
        aggregate_type: &e.aggregate_type,
        aggregate_id: &e.aggregate_id,
        store_id: e.store_id.as_deref(),
        product_id: e.product_id,
        payload,
        occurred_at: e.occurred_at.to_rfc3339(),
    })
    .ok()?;
    let mut headers = FieldTable::default();
    headers.insert("position".into(), AMQPValue::LongLongInt(e.position));
    headers.insert("cursor".into(), AMQPValue::LongString(cursor.into()));
    headers.insert(
        "published_at".into(),
        AMQPValue::LongString(published_at.to_rfc3339().into()),
    );
    let properties = BasicProperties::default()
        .with_message_id(e.id.to_string().into())
        .with_type(e.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(e.occurred_at.timestamp().max(0) as u64)
        .with_headers(headers);
    Some((body, properties))
}

/// Moves the feed queue's messages into the ring until the consumer ends.
async fn consume(mut consumer: lapin::Consumer, ring: Arc<Ring>, listening: Arc<AtomicBool>) {
    while let Some(Ok(delivery)) = consumer.next().await {
        match decode(&delivery.data, &delivery.properties) {
            Some(envelope) => ring.push([envelope]).await,
            None => tracing::warn!("the feed queue held a message that is not an event"),
        }
    }
    tracing::warn!("the RabbitMQ feed consumer ended; it restarts on the next read");
    listening.store(false, Ordering::Release);
}

/// Rebuilds an event from a message written by `message`.
fn decode(data: &[u8], properties: &BasicProperties) -> Option<Envelope> {
    let received: Received = serde_json::from_slice(data).ok()?;
    let header = |name: &str| properties.headers().as_ref()?.inner().get(name).cloned();
    let published_at = match header("published_at") {
        Some(AMQPValue::LongString(text)) => {
            chrono::DateTime::parse_from_rfc3339(&String::from_utf8_lossy(text.as_bytes()))
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        }
        _ => None,
    };
    Some(Arc::new(event::Model {
        seq: 0,
        id: received.id,
        event_type: received.event_type,
        aggregate_type: received.aggregate_type,
        aggregate_id: received.aggregate_id,
        store_id: received.store_id,
        product_id: received.product_id,
        payload: received.payload,
        occurred_at: received.occurred_at,
        position: Some(parse_entry_id(&received.cursor)?),
        published_at: Some(published_at.unwrap_or_else(crate::clock::now)),
        attempts: 0,
        last_error: None,
        dead_at: None,
    }))
}

impl Broker for AmqpBroker {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn publish<'a>(
        &'a self,
        events: &'a [Outgoing],
        _term: i64,
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BrokerDown>> {
        Box::pin(async move {
            // This process's own queue is bound before anything is published, so an event is
            // routable while a Stockroom process runs.
            self.listen().await?;
            let channel = self.channel().await?;
            let sent = tokio::time::timeout(
                CONFIRM_TIMEOUT,
                self.publish_confirmed(&channel, events, published_at),
            )
            .await
            .unwrap_or_else(|_| Err(self.down("confirms timed out")));
            match sent {
                Ok(deliveries) => {
                    self.up.store(true, Ordering::Relaxed);
                    Ok(deliveries)
                }
                Err(down) => {
                    self.forget_publisher().await;
                    Err(down)
                }
            }
        })
    }

    fn read_after(
        &self,
        after_position: i64,
        block_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, BrokerDown>> {
        Box::pin(async move {
            self.listen().await?;
            Ok(self.ring.read_after(after_position, block_ms).await)
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let answer = self.channel().await.is_ok() && self.listen().await.is_ok();
            self.up.store(answer, Ordering::Relaxed);
            answer
        })
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn destination(&self) -> String {
        format!("exchange {:?}", self.exchange)
    }
}
