//! GraphQL over HTTP, as the GraphQL-over-HTTP specification says: `POST /graphql` (JSON
//! bodies, API keys, batches, metrics per operation), `GET /graphql` (queries in the URL; the
//! playground for browsers: see `get`), answers in the media type the client accepts
//! (`media`), with a response budget and `THROTTLED` as 429 (`reply`).

mod get;
mod media;
mod persisted;
mod reply;

pub use get::get_graphql;
pub use persisted::PersistedQueries;
pub(super) use reply::throttled_response;

use std::time::Instant;

use async_graphql::{ErrorExtensions, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use self::media::Media;
use super::{HttpState, browsers, presented_key};
use crate::auth::Principal;
use crate::error::AppError;

/// A GraphQL-shaped error response with `extensions.code`.
pub(in crate::http) fn error_response(status: StatusCode, error: AppError) -> Response {
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
        responses.push(execute_persisted(&state, request, principal).await);
    }
    reply::respond(&state, Media::negotiate(&headers), responses, batched)
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

/// Runs one operation, its query filled in from the persisted queries when it names one by hash
/// (see `persisted`).
pub(super) async fn execute_persisted(
    state: &HttpState,
    mut request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Response {
    match state.persisted.apply(&mut request) {
        Ok(()) => execute(state, request, principal).await,
        Err(persisted::Refusal::NotFound(error) | persisted::Refusal::Invalid(error)) => {
            async_graphql::Response::from_errors(vec![error])
        }
    }
}

/// Runs one operation with the caller's principal and per-request loaders; records metrics.
pub(super) async fn execute(
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
