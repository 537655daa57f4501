//! A small GraphQL-over-WebSocket client for tests: `graphql-transport-ws` (and the legacy
//! `graphql-ws`), answering the server's pings, with one message queue per subscription id.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The modern protocol.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy (subscriptions-transport-ws) protocol.
pub const LEGACY_WS: &str = "graphql-ws";

/// How long a test waits for one message before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// What ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Close code (1006 when the socket ended without a close frame).
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// One message for a subscription.
#[derive(Debug, Clone)]
pub enum Item {
    /// `next` (or legacy `data`): the execution result `{data, errors}`.
    Next(Value),
    /// `error`: a list of errors; the subscription is over.
    Error(Value),
    /// `complete`: the subscription is over.
    Complete,
}

/// A GraphQL WebSocket connection.
pub struct WsClient {
    socket: stockroom_harness::Socket,
    protocol: &'static str,
    queues: HashMap<String, VecDeque<Item>>,
    /// The raw text of each `next` (or legacy `data`) payload, per subscription id.
    raw: HashMap<String, VecDeque<String>>,
    /// The text of the message `read` returned last.
    last_text: String,
    /// Server keepalives seen (`ping` or `ka`).
    pub keepalives: usize,
    closed: Option<Closed>,
}

pub use stockroom_harness::ws_url;

impl WsClient {
    /// Opens a connection asking for `protocol`; no `connection_init` yet.
    pub async fn connect(base: &str, protocol: &'static str) -> WsClient {
        WsClient::connect_with(base, protocol, None).await
    }

    /// Like `open`, with a small fixed socket receive buffer (no autotuning): a client that
    /// stops reading makes the server wait after a few kilobytes.
    pub async fn open_small_buffer(base: &str, key: &str, bytes: u32) -> WsClient {
        let mut client = WsClient::connect_with(base, TRANSPORT_WS, Some(bytes)).await;
        client
            .init(json!({ "apiKey": key }))
            .await
            .expect("connection_ack");
        client
    }

    async fn connect_with(
        base: &str,
        protocol: &'static str,
        receive_buffer: Option<u32>,
    ) -> WsClient {
        let (socket, chosen) =
            stockroom_harness::ws_connect(&ws_url(base), Some(protocol), receive_buffer)
                .await
                .expect("WebSocket upgrade");
        assert_eq!(
            chosen.as_deref(),
            Some(protocol),
            "the server picks the asked protocol"
        );
        WsClient {
            socket,
            protocol,
            queues: HashMap::new(),
            raw: HashMap::new(),
            last_text: String::new(),
            keepalives: 0,
            closed: None,
        }
    }

    /// Connects with `graphql-transport-ws` and authenticates with `key`; panics unless acked.
    pub async fn open(base: &str, key: &str) -> WsClient {
        let mut client = WsClient::connect(base, TRANSPORT_WS).await;
        client
            .init(json!({ "apiKey": key }))
            .await
            .expect("connection_ack");
        client
    }

    /// Sends `connection_init` with `payload`; `Ok` on `connection_ack`, else how it closed.
    pub async fn init(&mut self, payload: Value) -> Result<(), Closed> {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            let message = self.read(WAIT).await?;
            match message["type"].as_str() {
                Some("connection_ack") => return Ok(()),
                Some("connection_error") => {
                    // Legacy refusal: the close follows.
                    let closed = self.wait_closed(WAIT).await;
                    return Err(Closed {
                        reason: format!("{}; {}", message["payload"], closed.reason),
                        ..closed
                    });
                }
                _ => self.route(message),
            }
        }
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        let _ = self.socket.send(Message::text(text)).await;
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == TRANSPORT_WS {
            "subscribe"
        } else {
            "start"
        };
        self.queues.entry(id.to_owned()).or_default();
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// Sends `ping` with `payload` and waits for its `pong`; what arrives meanwhile is kept.
    pub async fn ping(&mut self, payload: Value) -> Result<(), Closed> {
        self.send(json!({ "type": "ping", "payload": payload }))
            .await;
        loop {
            let message = self.read(WAIT).await?;
            if message["type"] == "pong" && message["payload"] == payload {
                return Ok(());
            }
            self.route(message);
        }
    }

    /// Stops subscription `id` from the client side.
    pub async fn complete(&mut self, id: &str) {
        let kind = if self.protocol == TRANSPORT_WS {
            "complete"
        } else {
            "stop"
        };
        self.send(json!({ "id": id, "type": kind })).await;
    }

    /// The next item of subscription `id`, waiting up to `within`.
    pub async fn item(&mut self, id: &str, within: Duration) -> Result<Item, Closed> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(item) = self.queues.get_mut(id).and_then(VecDeque::pop_front) {
                return Ok(item);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.read(left).await?;
            self.route(message);
        }
    }

    /// The next `data` of subscription `id`; panics on errors, completion or a timeout.
    pub async fn next_data(&mut self, id: &str) -> Value {
        match self.item(id, WAIT).await {
            Ok(Item::Next(result)) => {
                assert!(
                    result.get("errors").is_none(),
                    "subscription {id} failed: {result}"
                );
                result["data"].clone()
            }
            other => panic!("expected data for subscription {id}, got {other:?}"),
        }
    }

    /// Collects `count` `data` payloads of subscription `id`.
    pub async fn take_data(&mut self, id: &str, count: usize) -> Vec<Value> {
        let mut all = Vec::with_capacity(count);
        while all.len() < count {
            all.push(self.next_data(id).await);
        }
        all
    }

    /// The payloads of the `next` messages of subscription `id` received so far (those taken
    /// with `item`, `next_data` or `take_data` too), as the exact text the server sent.
    pub fn raw_payloads(&mut self, id: &str) -> Vec<String> {
        self.raw
            .get_mut(id)
            .map(|raw| raw.drain(..).collect())
            .unwrap_or_default()
    }

    /// Asserts nothing arrives for subscription `id` during `quiet`.
    pub async fn assert_quiet(&mut self, id: &str, quiet: Duration) {
        match self.item(id, quiet).await {
            Err(Closed { code: 0, .. }) => {}
            other => panic!("expected nothing for subscription {id}, got {other:?}"),
        }
    }

    /// Waits until the server closes the connection; returns the close code and reason.
    pub async fn wait_closed(&mut self, within: Duration) -> Closed {
        loop {
            match self.read(within).await {
                Ok(message) => self.route(message),
                Err(closed) => return closed,
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Files a server message under its subscription id.
    fn route(&mut self, message: Value) {
        let Some(id) = message["id"].as_str() else {
            return;
        };
        let item = match message["type"].as_str() {
            Some("next") | Some("data") => {
                // Every frame ends with its payload: `…,"payload":PAYLOAD}`.
                let text = &self.last_text;
                let payload = text
                    .find(r#""payload":"#)
                    .map(|at| text[at + 10..text.len() - 1].to_owned())
                    .unwrap_or_default();
                self.raw
                    .entry(id.to_owned())
                    .or_default()
                    .push_back(payload);
                Item::Next(message["payload"].clone())
            }
            Some("error") => Item::Error(message["payload"].clone()),
            Some("complete") => Item::Complete,
            _ => return,
        };
        self.queues
            .entry(id.to_owned())
            .or_default()
            .push_back(item);
    }

    /// The next JSON message that is not a keepalive (pings are answered; pongs are returned,
    /// for `ping`). `Err` with code 0
    /// means nothing came within `within`; other codes say how the connection closed.
    async fn read(&mut self, within: Duration) -> Result<Value, Closed> {
        if let Some(closed) = &self.closed {
            return Err(closed.clone());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => {
                    return Err(Closed {
                        code: 0,
                        reason: "timed out".into(),
                    });
                }
                Ok(frame) => frame,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Close(frame))) => {
                    let closed = frame
                        .map(|f| Closed {
                            code: f.code.into(),
                            reason: f.reason.to_string(),
                        })
                        .unwrap_or(Closed {
                            code: 1005,
                            reason: String::new(),
                        });
                    self.closed = Some(closed.clone());
                    return Err(closed);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    let closed = Closed {
                        code: 1006,
                        reason: "connection lost".into(),
                    };
                    self.closed = Some(closed.clone());
                    return Err(closed);
                }
            };
            let message: Value = serde_json::from_str(&text).expect("JSON message");
            self.last_text = text;
            match message["type"].as_str() {
                Some("ping") => {
                    self.keepalives += 1;
                    self.send(json!({ "type": "pong" })).await;
                }
                Some("ka") => self.keepalives += 1,
                _ => return Ok(message),
            }
        }
    }
}
