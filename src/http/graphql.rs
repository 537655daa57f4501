//! GraphQL over HTTP: `POST /graphql` (JSON bodies, API keys, batches, a response budget,
//! metrics per operation) and `GET /graphql` (the playground for browsers).

use std::time::Instant;

use async_graphql::{ErrorExtensions, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, assets, browsers, header_text, presented_key};
use crate::auth::Principal;
use crate::error::AppError;

/// A GraphQL-shaped error response with `extensions.code`.
pub(super) fn error_response(status: StatusCode, error: AppError) -> Response {
    let server_error = ServerError::new(error.to_string(), None);
    let mut gql = async_graphql::Response::from_errors(vec![server_error]);
    for e in &mut gql.errors {
        e.extensions = async_graphql::Error::new("")
            .extend_with(|_, x| {
                x.set("code", error.code());
                for (name, value) in error.details() {
                    x.set(name, value);
                }
            })
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
    let key = presented_key(&headers);
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
    // 429 only when nothing ran: a client must not retry a batch whose other parts ran.
    let throttled = responses
        .iter()
        .map(retry_after)
        .collect::<Option<Vec<_>>>()
        .and_then(|waits| waits.into_iter().max());
    let mut reply = if batched {
        let batch = async_graphql::BatchResponse::Batch(responses);
        bounded_json(&batch, state.max_response_bytes)
    } else {
        let response = responses.pop().unwrap_or_default();
        bounded_json(&response, state.max_response_bytes)
    };
    if let Some(wait) = throttled {
        throttle(&mut reply, wait);
    }
    reply
}

/// How long a response refused with `THROTTLED` asks to wait, in milliseconds.
fn retry_after(response: &async_graphql::Response) -> Option<u64> {
    response.errors.iter().find_map(|error| {
        let extensions = error.extensions.as_ref()?;
        if extensions.get("code")? != &async_graphql::Value::from("THROTTLED") {
            return None;
        }
        match extensions.get("retryAfterMs") {
            Some(async_graphql::Value::Number(ms)) => ms.as_u64(),
            _ => Some(1000),
        }
    })
}

/// Makes `reply` a 429 with `Retry-After` (whole seconds, rounded up).
fn throttle(reply: &mut Response, wait_ms: u64) {
    *reply.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let seconds = wait_ms.div_ceil(1000).max(1);
    if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
        reply
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
}

/// A `THROTTLED` refusal before any GraphQL runs (a WebSocket upgrade over a cap).
pub(super) fn throttled_response(error: AppError) -> Response {
    let wait = match &error {
        AppError::Throttled { retry_after_ms, .. } => *retry_after_ms,
        _ => 1000,
    };
    let mut reply = error_response(StatusCode::TOO_MANY_REQUESTS, error);
    throttle(&mut reply, wait);
    reply
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
    let response = state
        .schema
        .execute_metered(request, principal, &state.app.fair_use)
        .await;
    // Only a document that validated names an operation it holds.
    let operation = if crate::graphql::gateway::validated(&response) {
        state.operation_labels.label(name.as_deref())
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

/// The operation names used as metric labels so far (one set per router).
#[derive(Clone, Default)]
pub struct OperationLabels(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl OperationLabels {
    /// The operation name as a metric label: a valid GraphQL name among the first
    /// `MAX_OPERATION_LABELS` seen, else `anonymous` or `other`, so clients cannot blow up the
    /// number of series.
    pub fn label(&self, name: Option<&str>) -> String {
        let Some(name) = name.filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) else {
            return "anonymous".to_owned();
        };
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(name)
            || (seen.len() < MAX_OPERATION_LABELS && seen.insert(name.to_owned()))
        {
            name.to_owned()
        } else {
            "other".to_owned()
        }
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
