//! The legacy `graphql-ws` protocol (subscriptions-transport-ws), served by async-graphql's
//! state machine: authentication in `connection_init`, keepalives (`ka`), the cap on
//! subscriptions, and its close codes.

use std::future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use super::{ConnectionGauge, close, key_from_init};
use crate::auth::{ApiKeys, Principal};
use crate::graphql::events::SubscriptionSlots;
use crate::http::HttpState;

/// How the `connection_init` went, seen from outside async-graphql's state machine.
#[derive(Default)]
struct Handshake {
    accepted: AtomicBool,
    refused: AtomicBool,
    /// Why a fair-use cap refused the connection, if one did.
    throttled: std::sync::Mutex<Option<String>>,
    /// The connection's place under the fair-use connection caps.
    permit: std::sync::Mutex<Option<crate::fair_use::Permit>>,
}

/// Rewrites async-graphql's close codes into the protocol's: a refused key is 4403, a
/// subscription before the handshake 4401.
fn close_frame(code: u16, reason: String, handshake: &Handshake) -> Message {
    let throttled = handshake
        .throttled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (code, reason) = if let Some(reason) = throttled {
        (super::TRY_AGAIN_LATER, reason)
    } else if handshake.refused.load(Ordering::Acquire) {
        (4403, "Forbidden: a valid API key is required".to_owned())
    } else if code == 1011 && !handshake.accepted.load(Ordering::Acquire) {
        (4401, "Unauthorized: send connection_init first".to_owned())
    } else {
        (code, reason)
    };
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The server's keepalive message for `protocol`.
fn keepalive_message(protocol: WebSocketProtocols) -> Message {
    match protocol {
        WebSocketProtocols::GraphQLWS => Message::Text(r#"{"type":"ping"}"#.into()),
        WebSocketProtocols::SubscriptionsTransportWS => Message::Text(r#"{"type":"ka"}"#.into()),
    }
}

/// Runs one GraphQL WebSocket connection: authentication in `connection_init` (closed within
/// the init timeout otherwise), keepalive messages, a cap on open subscriptions, and a
/// `1001` close when the server shuts down.
pub(super) async fn serve(socket: WebSocket, state: HttpState, protocol: WebSocketProtocols) {
    let _connection = state.app.feed.connection();
    let _gauge = ConnectionGauge::open();
    let shutdown = state.app.feed.shutdown().clone();
    let limits = state.app.websocket.clone();
    let (mut sink, source) = socket.split();
    let input = source
        .take_while(|message| future::ready(message.is_ok()))
        .filter_map(|message| {
            future::ready(match message {
                Ok(Message::Text(text)) => Some(Bytes::from(text)),
                Ok(Message::Binary(bytes)) => Some(bytes),
                _ => None,
            })
        });

    let handshake = Arc::new(Handshake::default());
    let keys: ApiKeys = state.app.keys.clone();
    let fair_use = state.app.fair_use.clone();
    let outcome = handshake.clone();
    let max_subscriptions = limits.max_subscriptions;
    let mut messages = async_graphql::http::WebSocket::new(state.schema.clone(), input, protocol)
        .on_connection_init(move |payload| async move {
            let key = key_from_init(&payload);
            match keys.authenticate(key.as_deref()) {
                Ok(principal) => {
                    let permit = fair_use.admit(principal, crate::fair_use::Resource::Connection);
                    let permit = match permit {
                        Ok(permit) => permit,
                        Err(refused) => {
                            let reason = refused.to_string();
                            *outcome.throttled.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(reason.clone());
                            return Err(async_graphql::Error::new(reason));
                        }
                    };
                    *outcome.permit.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                    let mut data = Data::default();
                    data.insert::<Principal>(principal);
                    data.insert(SubscriptionSlots::new(max_subscriptions));
                    outcome.accepted.store(true, Ordering::Release);
                    Ok(data)
                }
                Err(error) => {
                    outcome.refused.store(true, Ordering::Release);
                    Err(async_graphql::Error::new(error.to_string()))
                }
            }
        });

    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    let period = limits.keepalive.unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_on = limits.keepalive.is_some();

    let farewell = loop {
        let accepted = handshake.accepted.load(Ordering::Acquire);
        let message = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                break Some(close(1001, "server shutting down"));
            }
            _ = &mut init_deadline, if !accepted && !handshake.refused.load(Ordering::Acquire) => {
                break Some(close(4408, "Connection initialisation timeout"));
            }
            _ = keepalive.tick(), if keepalive_on && accepted => keepalive_message(protocol),
            message = messages.next() => match message {
                Some(WsMessage::Text(text)) => Message::Text(text.into()),
                Some(WsMessage::Close(code, reason)) => {
                    break Some(close_frame(code, reason, &handshake));
                }
                // Legacy protocol after a refused key or cap: say so with a close code too.
                None if handshake.refused.load(Ordering::Acquire)
                    || handshake.throttled.lock().map(|t| t.is_some()).unwrap_or(false) =>
                {
                    break Some(close_frame(1002, String::new(), &handshake));
                }
                None => break Some(close(1000, "")),
            },
        };
        let sent = tokio::select! {
            sent = sink.send(message) => sent.is_ok(),
            _ = shutdown.cancelled() => break Some(close(1001, "server shutting down")),
        };
        if !sent {
            break None;
        }
    };
    if let Some(frame) = farewell {
        // A client that stopped reading must not hold the connection open.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
    }
}
