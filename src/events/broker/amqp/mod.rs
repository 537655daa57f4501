//! RabbitMQ (AMQP 0-9-1): one persistent message per event (`message`) on a durable topic exchange, routing
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
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

mod message;

use message::{decode, message};

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
        let mut newest_only = FieldTable::default();
        newest_only.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.top_queue().into(), durable, newest_only)
            .await
            .map_err(|e| self.down(e))?;
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// `<exchange>.top`: a durable queue holding one message, the place and id of the last
    /// event of the latest batch, so a relay can check at start that the exchange carries this
    /// database's history (`Broker::top`, read by the relay's identity check).
    fn top_queue(&self) -> String {
        format!("{}.top", self.exchange)
    }

    /// Replaces the top marker with the last of `sent` (confirmed with the batch; a marker
    /// that does not make it only leaves an older one, which the check accepts too).
    async fn mark_top(
        &self,
        channel: &Channel,
        sent: Option<&Outgoing>,
    ) -> Result<Option<lapin::PublisherConfirm>, BrokerDown> {
        let Some(last) = sent else {
            return Ok(None);
        };
        let marker = message::top_marker(last);
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                "".into(),
                self.top_queue().into(),
                BasicPublishOptions::default(),
                &marker,
                persistent,
            )
            .await
            .map_err(|e| self.down(e))?;
        Ok(Some(confirm))
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
        // An event whose stored payload is not JSON ends the batch: it is rejected after the
        // ones before it are confirmed.
        let mut unreadable = false;
        for e in events {
            let Some((body, properties)) = message(e, published_at) else {
                unreadable = true;
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
            confirms.push(confirm);
        }
        let top = self
            .mark_top(channel, events[..confirms.len()].last())
            .await?;
        let mut deliveries = Vec::with_capacity(events.len());
        for confirm in confirms {
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
        if unreadable && deliveries.iter().all(|d| *d == Delivery::Published) {
            deliveries.push(Delivery::Rejected("payload is not JSON".to_owned()));
        }
        if let Some(top) = top
            && !top.await.map_err(|e| self.down(e))?.is_ack()
        {
            tracing::debug!("RabbitMQ did not take the top marker; the older one stands");
        }
        Ok(deliveries)
    }
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

    fn top(&self) -> BoxFuture<'_, Result<Option<(i64, Uuid)>, BrokerDown>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let peek = BasicGetOptions { no_ack: false };
            let got = channel
                .basic_get(self.top_queue().into(), peek)
                .await
                .map_err(|e| self.down(e))?;
            let Some(got) = got else {
                return Ok(None);
            };
            let top = message::read_top_marker(&got.delivery.data);
            got.delivery
                .reject(BasicRejectOptions { requeue: true })
                .await
                .map_err(|e| self.down(e))?;
            Ok(top)
        })
    }

    fn destination(&self) -> String {
        format!("exchange {:?}", self.exchange)
    }
}
