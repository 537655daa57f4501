//! GraphQL over HTTP and WebSocket, with API-key authentication; browsers get the playground.

use std::time::{Duration, Instant};

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, ErrorExtensions, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, assets};
use crate::error::AppError;
use crate::graphql::auth::{ApiKeys, Principal, key_from_headers};

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
    body: Bytes,
) -> Response {
    let key = key_from_headers(
        header_text(&headers, "authorization"),
        header_text(&headers, "x-api-key"),
    );
    let principal = match state.app.keys.authenticate(key.as_deref()) {
        Ok(principal) => principal,
        Err(error) => return error_response(StatusCode::UNAUTHORIZED, error),
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let error =
                AppError::bad_input(format!("the body must be a JSON object with a query: {e}"));
            return error_response(StatusCode::BAD_REQUEST, error);
        }
    };
    let operation = request
        .operation_name
        .clone()
        .unwrap_or_else(|| "anonymous".into());
    let started = Instant::now();
    let request =
        crate::graphql::loaders::attach_request_loaders(request.data(principal), &state.app.db);
    let response = state.schema.execute(request).await;
    metrics::counter!("stockroom_graphql_requests_total", "operation" => operation.clone())
        .increment(1);
    metrics::histogram!("stockroom_graphql_request_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    GraphQLResponse::from(response).into_response()
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
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let keys: ApiKeys = state.app.keys.clone();
    let schema = state.schema.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .keepalive_timeout(Duration::from_secs(30))
                .on_connection_init(move |payload| async move {
                    let key = key_from_init(&payload);
                    let principal: Principal = keys
                        .authenticate(key.as_deref())
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    let mut data = Data::default();
                    data.insert(principal);
                    Ok(data)
                })
                .serve()
        })
}
