//! GraphQL over WebSocket: the upgrade (origin and subprotocol checks), then `transport` for
//! `graphql-transport-ws` (the protocol of the graphql-ws project, served by Stockroom itself so
//! that live subscriptions share their work) or `legacy` for the old `graphql-ws` protocol
//! (served by async-graphql).

mod legacy;
mod transport;

use std::sync::Arc;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::graphql::error_response;
use super::{HttpState, browsers, header_text};
use crate::auth::key_from_headers;
use crate::error::AppError;

/// The close code for a connection refused by a fair-use cap: 1013, "Try Again Later" (IANA
/// WebSocket close codes); the reason names the cap.
pub(super) const TRY_AGAIN_LATER: u16 = 1013;

/// Reads the key from a `connection_init` payload: `{"apiKey": KEY}` or
/// `{"Authorization": "Bearer KEY"}`.
pub(super) fn key_from_init(payload: &serde_json::Value) -> Option<String> {
    let text = |name: &str| payload.get(name).and_then(|v| v.as_str());
    let authorization = text("Authorization").or_else(|| text("authorization"));
    key_from_headers(authorization, text("apiKey"))
}

/// `GET /graphql/ws`: `graphql-transport-ws` (and legacy `graphql-ws`).
pub async fn websocket(
    State(state): State<HttpState>,
    slot: Option<axum::Extension<Arc<super::server::ConnectionSlot>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !browsers::websocket_origin_allowed(&headers, &state.allowed_origins) {
        tracing::warn!(
            origin = header_text(&headers, "origin"),
            "refused a WebSocket from another origin"
        );
        return error_response(
            StatusCode::FORBIDDEN,
            AppError::Forbidden("same-origin or an allowed origin (--cors-origins)"),
        );
    }
    let Some(protocol) = header_text(&headers, "sec-websocket-protocol").and_then(|offered| {
        offered
            .split(',')
            .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
    }) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            AppError::bad_input("ask for the graphql-transport-ws (or graphql-ws) subprotocol"),
        );
    };
    if let Err(refused) = state.app.fair_use.refuse_when_connections_full() {
        return super::graphql::throttled_response(refused);
    }
    let max_bytes = state.app.websocket.max_message_bytes;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max_bytes)
        .max_frame_size(max_bytes)
        // Subscribers mostly listen: a small preallocated read buffer (it grows for a larger
        // message) keeps an idle connection at a few KiB instead of 128 KiB.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| async move {
            // The connection keeps its place under the connection caps while the socket is open.
            let _slot = slot;
            let connections = state.connections.clone();
            let served = connections.spawn(async move {
                match protocol {
                    WebSocketProtocols::GraphQLWS => transport::serve(socket, state).await,
                    legacy => legacy::serve(socket, state, legacy).await,
                }
            });
            let _ = served.await;
        })
}

/// Counts open WebSocket connections in the metrics while alive.
pub(super) struct ConnectionGauge;

impl ConnectionGauge {
    pub(super) fn open() -> Self {
        metrics::gauge!("stockroom_ws_connections").increment(1.0);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("stockroom_ws_connections").decrement(1.0);
    }
}

/// The runtime WebSocket connections run on: as many threads as cores, each at a lower
/// scheduling priority (nice 10) than the rest of the process. Requests, the database, the
/// relay and the rendering of events run at normal priority, so under overload the writers get
/// the CPU first; subscribers then fall behind, read from their cohort's ring or the log, and
/// catch up once the load drops, in order and without loss.
pub fn connection_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("stockroom-ws")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
}

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let lowered = unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10)
    };
    if lowered != 0 {
        tracing::debug!("could not lower a WebSocket thread's priority");
    }
}

/// A close frame; the reason is cut to the 123 bytes a close frame can carry.
pub(super) fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}
