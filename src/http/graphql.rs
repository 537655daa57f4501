//! GraphQL over HTTP and WebSocket, with API-key authentication; browsers get the playground.

use std::future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use async_graphql::{Data, ErrorExtensions, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::{HttpState, assets, browsers};
use crate::auth::{ApiKeys, Principal, key_from_headers};
use crate::error::AppError;
use crate::graphql::events::SubscriptionSlots;

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A GraphQL-shaped error response with `extensions.code`.
fn error_response(status: StatusCode, error: AppError) -> Response {
    let server_error = ServerError::new(error.to_string(), None);
    let mut gql = async_graphql::Response::from_errors(vec![server_error]);
    for e in &mut gql.errors {
        e.extensions = async_graphql::Error::new("")
            .extend_with(|_, x| x.set("code", error.code()))
            .extensions;
    }
    (status, GraphQLResponse::from(gql)).into_response()
}

/// `POST /graphql`: one JSON request `{query, variables, operationName}`.
pub async fn post_graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !browsers::is_json_body(&headers) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::bad_input(
                "send the request as JSON: content-type application/json (or \
                 application/graphql-response+json)",
            ),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let error = AppError::bad_input(format!(
                "unreadable request body: {}",
                rejection.body_text()
            ));
            return error_response(rejection.status(), error);
        }
    };
    let key = key_from_headers(
        header_text(&headers, "authorization"),
        header_text(&headers, "x-api-key"),
    );
    let principal = match state.app.keys.authenticate(key.as_deref()) {
        Ok(principal) => principal,
        Err(error) => return error_response(StatusCode::UNAUTHORIZED, error),
    };
    let requests = match parse_body(&body, state.max_batch) {
        Ok(requests) => requests,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    let batched = requests.len() > 1 || body.trim_ascii_start().starts_with(b"[");
    let mut responses = Vec::with_capacity(requests.len());
    for request in requests {
        responses.push(execute(&state, request, principal).await);
    }
    if batched {
        let batch = async_graphql::BatchResponse::Batch(responses);
        return bounded_json(&batch, state.max_response_bytes);
    }
    let response = responses.pop().unwrap_or_default();
    bounded_json(&response, state.max_response_bytes)
}

/// A buffer that refuses to grow past its budget, so serialization stops there.
struct CappedBuffer {
    bytes: Vec<u8>,
    max: usize,
}

impl std::io::Write for CappedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > self.max {
            return Err(std::io::Error::other("over the response budget"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serializes a GraphQL response; one larger than `max_bytes` is replaced by an error that
/// says so. Serialization stops at the budget: the client is never sent, and the server never
/// buffers, more than that.
fn bounded_json(response: &impl serde::Serialize, max_bytes: usize) -> Response {
    let mut buffer = CappedBuffer {
        bytes: Vec::new(),
        max: max_bytes,
    };
    if let Err(error) = serde_json::to_writer(&mut buffer, response) {
        if !error.is_io() {
            let error = AppError::Internal(format!("serializing a response: {error}"));
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error);
        }
        metrics::counter!("stockroom_responses_too_large_total").increment(1);
        let error = AppError::bad_input(format!(
            "response too large: more than {max_bytes} bytes (--max-response-bytes); ask for \
             fewer items or fields"
        ));
        return error_response(StatusCode::OK, error);
    }
    let body = buffer.bytes;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/graphql-response+json",
        )],
        body,
    )
        .into_response()
}

/// Parses one request object, or a JSON array of at most `max_batch` of them.
fn parse_body(body: &[u8], max_batch: usize) -> Result<Vec<async_graphql::Request>, AppError> {
    if body.trim_ascii_start().starts_with(b"[") {
        if max_batch == 0 {
            return Err(AppError::bad_input(
                "batched requests are disabled; send one JSON object",
            ));
        }
        let batch: Vec<async_graphql::Request> = serde_json::from_slice(body).map_err(|e| {
            AppError::bad_input(format!("the body must be a JSON array of requests: {e}"))
        })?;
        if batch.is_empty() || batch.len() > max_batch {
            return Err(AppError::bad_input(format!(
                "a batch holds 1 to {max_batch} requests, got {}",
                batch.len()
            )));
        }
        return Ok(batch);
    }
    serde_json::from_slice(body)
        .map(|request| vec![request])
        .map_err(|e| {
            AppError::bad_input(format!("the body must be a JSON object with a query: {e}"))
        })
}

/// Runs one operation with the caller's principal and per-request loaders; records metrics.
async fn execute(
    state: &HttpState,
    request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Response {
    let name = request.operation_name.clone();
    let started = Instant::now();
    let request =
        crate::graphql::loaders::attach_request_loaders(request.data(principal), &state.app.db);
    let response = async_graphql::Executor::execute(&state.schema, request).await;
    // Only a document that validated names an operation it holds.
    let operation = if crate::graphql::gateway::validated(&response) {
        metric_label(name.as_deref())
    } else {
        "invalid".to_owned()
    };
    let outcome = if response.is_ok() { "ok" } else { "error" };
    metrics::counter!("stockroom_graphql_requests_total", "operation" => operation.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("stockroom_graphql_request_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Most distinct operation names kept as metric labels; later ones count as `other`.
const MAX_OPERATION_LABELS: usize = 200;

/// The operation name as a metric label: a valid GraphQL name among the first
/// `MAX_OPERATION_LABELS` seen, else `anonymous` or `other`, so clients cannot blow up the
/// number of series.
fn metric_label(name: Option<&str>) -> String {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let Some(name) = name.filter(|n| {
        !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) else {
        return "anonymous".to_owned();
    };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(Default::default);
    if seen.contains(name) || (seen.len() < MAX_OPERATION_LABELS && seen.insert(name.to_owned())) {
        name.to_owned()
    } else {
        "other".to_owned()
    }
}

/// `GET /graphql`: the playground for browsers.
pub async fn get_graphql(headers: HeaderMap) -> Response {
    let wants_html = header_text(&headers, "accept").is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return assets::playground().await;
    }
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        AppError::bad_input(
            "send GraphQL requests with POST; GET serves the playground to browsers",
        ),
    )
}

/// Reads the key from a `connection_init` payload: `{"apiKey": KEY}` or
/// `{"Authorization": "Bearer KEY"}`.
fn key_from_init(payload: &serde_json::Value) -> Option<String> {
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
            serve_socket(socket, state, protocol).await
        })
}

/// How the `connection_init` went, seen from outside async-graphql's state machine.
#[derive(Default)]
struct Handshake {
    accepted: AtomicBool,
    refused: AtomicBool,
}

/// Counts open WebSocket connections in the metrics while alive.
struct ConnectionGauge;

impl ConnectionGauge {
    fn open() -> Self {
        metrics::gauge!("stockroom_ws_connections").increment(1.0);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("stockroom_ws_connections").decrement(1.0);
    }
}

/// Rewrites async-graphql's close codes into the protocol's: a refused key is 4403, a
/// subscription before the handshake 4401.
fn close_frame(code: u16, reason: String, handshake: &Handshake) -> Message {
    let (code, reason) = if handshake.refused.load(Ordering::Acquire) {
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
async fn serve_socket(socket: WebSocket, state: HttpState, protocol: WebSocketProtocols) {
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
    let outcome = handshake.clone();
    let max_subscriptions = limits.max_subscriptions;
    let mut messages = async_graphql::http::WebSocket::new(state.schema.clone(), input, protocol)
        .on_connection_init(move |payload| async move {
            let key = key_from_init(&payload);
            match keys.authenticate(key.as_deref()) {
                Ok(principal) => {
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
                // Legacy protocol after a refused key: say so with a close code too.
                None if handshake.refused.load(Ordering::Acquire) => {
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

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
