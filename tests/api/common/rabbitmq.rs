//! RabbitMQ for the tests: the machine's server at 127.0.0.1:5672 (shared, so never stopped:
//! each test publishes to an exchange of its own and cuts connections with a `Proxy` instead),
//! and a consumer that reads what the relay published, as another service would.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use super::Options;

/// The machine's RabbitMQ (`STOCKROOM_TEST_AMQP_URL` overrides it).
pub fn broker_url() -> String {
    std::env::var("STOCKROOM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A topic exchange of the test's own on the machine's RabbitMQ.
pub struct Exchange {
    /// Its name.
    pub name: String,
    connection: Connection,
}

impl Exchange {
    /// Declares a fresh durable topic exchange (as the server would at start). Fails loudly when
    /// RabbitMQ is not running.
    pub async fn declare() -> Exchange {
        let name = format!("stockroom-test-{}", uuid::Uuid::new_v4().simple());
        let connection = Connection::connect(&broker_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ must be running on 127.0.0.1:5672 (guest/guest)");
        let channel = connection.create_channel().await.expect("channel");
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .expect("declare the exchange");
        Exchange { name, connection }
    }

    /// Server options publishing to this exchange through `url` (the broker, or a proxy).
    pub fn options(&self, url: &str) -> Options {
        Options::default().env(&[
            ("AMQP_URL", url),
            ("STOCKROOM_AMQP_EXCHANGE", self.name.as_str()),
            ("STOCKROOM_RELAY_BACKOFF_BASE_MS", "20"),
            ("STOCKROOM_RELAY_BACKOFF_CAP_MS", "300"),
        ])
    }

    /// A queue of the test's own bound with `pattern` (e.g. `inventory.#`), consumed from now on;
    /// `arguments` as RabbitMQ takes them (e.g. `x-max-length`).
    pub async fn queue(&self, pattern: &str, arguments: FieldTable) -> Queue {
        let channel = self.connection.create_channel().await.expect("channel");
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare("".into(), own, arguments)
            .await
            .expect("declare a queue");
        channel
            .queue_bind(
                queue.name().clone(),
                self.name.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the queue");
        Queue {
            name: queue.name().as_str().to_owned(),
            channel,
            consumer: None,
        }
    }

    /// Deletes the exchange and the server's top marker queue beside it.
    pub async fn delete(self) {
        let channel = self.connection.create_channel().await.expect("channel");
        channel
            .queue_delete(
                format!("{}.top", self.name).as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .expect("delete the top marker queue");
        channel
            .exchange_delete(self.name.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete the exchange");
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// A message as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub routing_key: String,
    pub message_id: String,
    pub kind: String,
    pub content_type: String,
    pub persistent: bool,
    pub timestamp: Option<u64>,
    pub position: i64,
    pub cursor: String,
    pub body: Value,
}

/// A test's queue.
pub struct Queue {
    pub name: String,
    channel: lapin::Channel,
    consumer: Option<lapin::Consumer>,
}

impl Queue {
    /// Receives messages (acking each) until `count` arrived; fails after `within`.
    pub async fn take(&mut self, count: usize, within: Duration) -> Vec<Message> {
        let consumer = match self.consumer.as_mut() {
            Some(consumer) => consumer,
            None => {
                let consumer = self
                    .channel
                    .basic_consume(
                        self.name.as_str().into(),
                        "test".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .expect("consume");
                self.consumer.insert(consumer)
            }
        };
        let mut messages = Vec::with_capacity(count);
        let deadline = tokio::time::Instant::now() + within;
        while messages.len() < count {
            let delivery = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("{} of {count} messages within {within:?}", messages.len())
                })
                .expect("the consumer ended")
                .expect("a delivery");
            delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await
                .expect("ack");
            messages.push(message(&delivery));
        }
        messages
    }

    /// Receives messages until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let next = tokio::time::timeout(quiet, self.take(1, quiet * 2)).await;
            match next {
                Ok(mut one) => messages.append(&mut one),
                Err(_) => return messages,
            }
        }
    }
}

fn message(delivery: &lapin::message::Delivery) -> Message {
    let properties = &delivery.properties;
    let text = |value: &Option<lapin::types::ShortString>| {
        value
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    };
    let headers = properties.headers().clone().unwrap_or_default();
    let position = match headers.inner().get("position") {
        Some(AMQPValue::LongLongInt(p)) => *p,
        other => panic!("header position: {other:?}"),
    };
    let cursor = match headers.inner().get("cursor") {
        Some(AMQPValue::LongString(c)) => String::from_utf8_lossy(c.as_bytes()).into_owned(),
        other => panic!("header cursor: {other:?}"),
    };
    Message {
        routing_key: delivery.routing_key.as_str().to_owned(),
        message_id: text(properties.message_id()),
        kind: text(properties.kind()),
        content_type: text(properties.content_type()),
        persistent: *properties.delivery_mode() == Some(2),
        timestamp: *properties.timestamp(),
        position,
        cursor,
        body: serde_json::from_slice(&delivery.data).expect("a JSON body"),
    }
}

/// The messages with every repeat dropped by `message_id`, as a consumer would; each repeat
/// must be the same message as the first.
pub fn without_repeats(messages: &[Message]) -> Vec<Message> {
    let mut seen = HashSet::new();
    let mut first = std::collections::HashMap::new();
    let mut kept = Vec::new();
    for m in messages {
        if seen.insert(m.message_id.clone()) {
            first.insert(m.message_id.clone(), m.clone());
            kept.push(m.clone());
        } else {
            let original = &first[&m.message_id];
            assert_eq!(
                (&m.body, m.position),
                (&original.body, original.position),
                "a repeat is the same event at the same position"
            );
        }
    }
    kept
}

/// The messages with every one at or below the last position seen dropped, as a consumer that
/// remembers only a position would.
pub fn by_position(messages: &[Message]) -> Vec<Message> {
    let mut last = 0;
    let mut kept = Vec::new();
    for m in messages {
        if m.position > last {
            last = m.position;
            kept.push(m.clone());
        }
    }
    kept
}

/// The messages are the log: one per event, in log order, with the documented properties and
/// body.
pub fn assert_messages_match_log(messages: &[Message], log: &[Value]) {
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    let expected: Vec<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected, "one message per event, in log order");
    for (m, e) in messages.iter().zip(log) {
        let kind = e["type"].as_str().unwrap();
        assert_eq!(m.routing_key, format!("inventory.{kind}"));
        assert_eq!(m.kind, kind);
        assert_eq!(m.content_type, "application/json");
        assert!(m.persistent, "persistent (delivery mode 2)");
        assert_eq!(Some(m.cursor.as_str()), e["cursor"].as_str());
        assert_eq!(
            m.cursor,
            format!("{}-0", m.position),
            "the position header names the cursor's place"
        );
        let body = &m.body;
        assert_eq!(body["id"], e["id"]);
        assert_eq!(body["cursor"], e["cursor"]);
        assert_eq!(body["type"], e["type"]);
        assert_eq!(body["aggregate_type"], e["aggregateType"]);
        assert_eq!(body["aggregate_id"], e["aggregateId"]);
        assert_eq!(body["store_id"], e["storeId"]);
        assert_eq!(body["product_id"], e["productId"]);
        assert_eq!(body["payload"], e["payload"], "the payload is an object");
        let occurred = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
        };
        assert_eq!(occurred(&body["occurred_at"]), occurred(&e["occurredAt"]));
        assert_eq!(
            m.timestamp,
            Some(occurred(&e["occurredAt"]).timestamp() as u64),
            "the timestamp is when the event occurred, in seconds"
        );
    }
}
