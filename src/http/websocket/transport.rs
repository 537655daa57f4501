//! `graphql-transport-ws`, as the graphql-ws project's PROTOCOL.md describes it: `connection_init`
//! within the init timeout (4408), once (4429), with a valid key (4403); nothing before the ack
//! (4401); `subscribe` with an id not in use (4409); a message that is not JSON or not a known
//! message closes with 4400. An operation that fails validation gets `error` and nothing else;
//! otherwise `next` per response and `complete` at its end (none after the client's
//! `complete`). Live subscriptions go through the shared engine (`graphql::live`); this module
//! only frames their bytes. A key over its fair-use connection cap is closed at
//! `connection_init` with 1013 (Try Again Later) and the reason.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use async_graphql::{Request, ServerError, Variables};
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{BoxStream, FuturesUnordered};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamMap;

use super::{ConnectionGauge, TRY_AGAIN_LATER, close, key_from_init};
use crate::auth::Principal;
use crate::fair_use::{Permit, Resource};
use crate::graphql::assign_codes;
use crate::graphql::live::Started;
use crate::http::HttpState;

/// A message from the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default, rename = "payload")]
        _payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

/// The operation of a `subscribe` message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribePayload {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, Value>>,
}

impl SubscribePayload {
    fn into_request(self) -> Request {
        let mut request = Request::new(self.query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(variables));
        }
        if let Some(extensions) = self.extensions {
            for (name, value) in extensions {
                if let Ok(value) = async_graphql::Value::from_json(value) {
                    request.extensions.insert(name, value);
                }
            }
        }
        request
    }
}

/// What an operation's stream yields.
enum Outgoing {
    /// A `next` message, framed.
    Next(Message),
    Complete,
}

/// Why the connection ends, when the server ends it.
type Farewell = Option<Message>;

/// One connection's state.
struct Connection {
    principal: Option<Principal>,
    /// This connection's place under the fair-use connection caps, from `connection_init` on.
    _permit: Option<Permit>,
    init_received: bool,
    /// Ids of operations starting or running.
    in_use: HashSet<String>,
    /// Ids completed by the client while their operation was starting.
    cancelled: HashSet<String>,
    running: StreamMap<String, BoxStream<'static, Outgoing>>,
    max_operations: usize,
    /// Sequence number of the next `subscribe` to start.
    next_start: u64,
    /// Sequence numbers of the operations still starting.
    starting: BTreeSet<u64>,
    /// Pongs held until every operation subscribed before their ping has started, each with
    /// the sequence number of the first `subscribe` after its ping.
    owed_pongs: VecDeque<(u64, Message)>,
}

/// Serves one `graphql-transport-ws` connection until either side ends it.
pub(super) async fn serve(socket: WebSocket, state: HttpState) {
    let _connection = state.app.feed.connection();
    let _gauge = ConnectionGauge::open();
    let shutdown = state.app.feed.shutdown().clone();
    let limits = state.app.websocket.clone();
    let (mut sink, mut source) = socket.split();
    let mut connection = Connection {
        principal: None,
        _permit: None,
        init_received: false,
        in_use: HashSet::new(),
        cancelled: HashSet::new(),
        running: StreamMap::new(),
        max_operations: limits.max_subscriptions,
        next_start: 0,
        starting: BTreeSet::new(),
        owed_pongs: VecDeque::new(),
    };
    let mut starting = FuturesUnordered::new();
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    let period = limits.keepalive.unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let farewell: Farewell = loop {
        let outgoing = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some(close(1001, "server shutting down")),
            _ = &mut init_deadline, if connection.principal.is_none() => {
                break Some(close(4408, "Connection initialisation timeout"));
            }
            _ = keepalive.tick(), if limits.keepalive.is_some() && connection.principal.is_some() => {
                vec![text(r#"{"type":"ping"}"#.to_owned())]
            }
            Some((sequence, id, started)) = starting.next(), if !starting.is_empty() => {
                connection.started(sequence, id, started)
            }
            Some((id, item)) = connection.running.next(), if !connection.running.is_empty() => {
                connection.forward(id, item)
            }
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    match connection.receive(text.as_bytes(), &state, &mut starting) {
                        Ok(replies) => replies,
                        Err(farewell) => break Some(farewell),
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    match connection.receive(&bytes, &state, &mut starting) {
                        Ok(replies) => replies,
                        Err(farewell) => break Some(farewell),
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => Vec::new(),
            },
        };
        let mut outgoing = outgoing;
        // Whatever else is ready goes out in the same write.
        while outgoing.len() < MAX_WRITE_BATCH {
            match connection.running.next().now_or_never() {
                Some(Some((id, item))) => outgoing.extend(connection.forward(id, item)),
                _ => break,
            }
        }
        let sent = tokio::select! {
            sent = send_all(&mut sink, outgoing) => sent,
            _ = shutdown.cancelled() => false,
        };
        if !sent {
            break shutdown
                .is_cancelled()
                .then(|| close(1001, "server shutting down"));
        }
    };
    metrics::gauge!("stockroom_subscriptions_open").decrement(connection.running.len() as f64);
    if let Some(frame) = farewell {
        // A client that stopped reading must not hold the connection open.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
    }
}

/// Most messages written to a connection at once.
const MAX_WRITE_BATCH: usize = 64;

/// Writes `messages` and flushes once; false when the connection is gone.
async fn send_all(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    messages: Vec<Message>,
) -> bool {
    if messages.is_empty() {
        return true;
    }
    for message in messages {
        if sink.feed(message).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

fn text(message: String) -> Message {
    Message::Text(Utf8Bytes::from(message))
}

/// The start of every `next` message of operation `id`: `{"type":"next","id":…,"payload":`.
fn next_prefix(id: &str) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_default();
    format!(r#"{{"type":"next","id":{id},"payload":"#).into_bytes()
}

/// A `next` message: `prefix`, the payload bytes rendered once for everyone, and `}`.
fn next_frame(prefix: &[u8], payload: &Bytes) -> Message {
    let mut frame = Vec::with_capacity(prefix.len() + payload.len() + 1);
    frame.extend_from_slice(prefix);
    frame.extend_from_slice(payload);
    frame.push(b'}');
    match Utf8Bytes::try_from(Bytes::from(frame)) {
        Ok(frame) => Message::Text(frame),
        Err(_) => Message::Text(Utf8Bytes::from_static("{}")),
    }
}

fn error_frame(id: &str, errors: &[ServerError]) -> Message {
    text(json!({ "type": "error", "id": id, "payload": errors }).to_string())
}

fn complete_frame(id: &str) -> Message {
    text(json!({ "type": "complete", "id": id }).to_string())
}

type Starting = FuturesUnordered<futures_util::future::BoxFuture<'static, (u64, String, Started)>>;

impl Connection {
    /// Handles one client message: the replies, or the close frame that ends the connection.
    fn receive(
        &mut self,
        bytes: &[u8],
        state: &HttpState,
        starting: &mut Starting,
    ) -> Result<Vec<Message>, Message> {
        let message: ClientMessage = serde_json::from_slice(bytes)
            .map_err(|error| close(4400, &format!("Invalid message received: {error}")))?;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if std::mem::replace(&mut self.init_received, true) {
                    return Err(close(4429, "Too many initialisation requests"));
                }
                let key = payload.as_ref().and_then(key_from_init);
                let Ok(principal) = state.app.keys.authenticate(key.as_deref()) else {
                    return Err(close(4403, "Forbidden: a valid API key is required"));
                };
                let permit = state
                    .app
                    .fair_use
                    .admit(principal, Resource::Connection)
                    .map_err(|refused| close(TRY_AGAIN_LATER, &refused.to_string()))?;
                self.principal = Some(principal);
                self._permit = Some(permit);
                Ok(vec![text(r#"{"type":"connection_ack"}"#.to_owned())])
            }
            ClientMessage::Ping { payload } => {
                let pong = match payload {
                    Some(payload) => json!({ "type": "pong", "payload": payload }),
                    None => json!({ "type": "pong" }),
                };
                let pong = text(pong.to_string());
                // Messages take effect in order: the pong waits for the operations subscribed
                // before the ping, so a client that subscribes, pings and then reads a snapshot
                // misses no event between the two.
                if self.starting.is_empty() {
                    return Ok(vec![pong]);
                }
                self.owed_pongs.push_back((self.next_start, pong));
                Ok(Vec::new())
            }
            ClientMessage::Pong { .. } => Ok(Vec::new()),
            ClientMessage::Subscribe { id, payload } => {
                let Some(principal) = self.principal else {
                    return Err(close(4401, "Unauthorized: send connection_init first"));
                };
                if self.in_use.contains(&id) {
                    return Err(close(4409, &format!("Subscriber for {id} already exists")));
                }
                if self.in_use.len() >= self.max_operations {
                    let refusal = ServerError::new(
                        format!(
                            "too many subscriptions on this connection (at most {}); complete \
                             one first",
                            self.max_operations
                        ),
                        None,
                    );
                    let refused = assign_codes(async_graphql::Response::from_errors(vec![refusal]));
                    return Ok(vec![error_frame(&id, &refused.errors)]);
                }
                self.in_use.insert(id.clone());
                let live = state.live.clone();
                let request = payload.into_request();
                let sequence = self.next_start;
                self.next_start += 1;
                self.starting.insert(sequence);
                starting.push(Box::pin(async move {
                    let started = live.start_operation(request, principal).await;
                    (sequence, id, started)
                }));
                Ok(Vec::new())
            }
            ClientMessage::Complete { id } => {
                if self.running.remove(&id).is_some() {
                    metrics::gauge!("stockroom_subscriptions_open").decrement(1.0);
                    self.in_use.remove(&id);
                } else if self.in_use.contains(&id) {
                    self.cancelled.insert(id);
                }
                Ok(Vec::new())
            }
        }
    }

    /// An operation finished starting: refused (`error`), or running; then the pongs that
    /// waited for it.
    fn started(&mut self, sequence: u64, id: String, started: Started) -> Vec<Message> {
        self.starting.remove(&sequence);
        let mut replies = self.start(id, started);
        let oldest_starting = self.starting.first().copied().unwrap_or(u64::MAX);
        while let Some((after, _)) = self.owed_pongs.front() {
            if *after > oldest_starting {
                break;
            }
            if let Some((_, pong)) = self.owed_pongs.pop_front() {
                replies.push(pong);
            }
        }
        replies
    }

    /// The replies to one operation having started.
    fn start(&mut self, id: String, started: Started) -> Vec<Message> {
        if self.cancelled.remove(&id) {
            self.in_use.remove(&id);
            return Vec::new();
        }
        match started {
            Started::Refused(errors) => {
                self.in_use.remove(&id);
                vec![error_frame(&id, &errors)]
            }
            Started::Responses(responses) => {
                metrics::gauge!("stockroom_subscriptions_open").increment(1.0);
                let prefix = next_prefix(&id);
                let items = responses
                    .map(move |payload| Outgoing::Next(next_frame(&prefix, &payload)))
                    .chain(futures_util::stream::once(async { Outgoing::Complete }));
                self.running.insert(id, items.boxed());
                Vec::new()
            }
        }
    }

    /// A response (or the end) of a running operation.
    fn forward(&mut self, id: String, item: Outgoing) -> Vec<Message> {
        match item {
            Outgoing::Next(frame) => vec![frame],
            Outgoing::Complete => {
                self.running.remove(&id);
                self.in_use.remove(&id);
                metrics::gauge!("stockroom_subscriptions_open").decrement(1.0);
                vec![complete_frame(&id)]
            }
        }
    }
}
