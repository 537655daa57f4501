//! The answer to GraphQL over HTTP: the responses serialized within the response budget, in
//! the negotiated media type; a request error as 400 without `data` for clients that accept
//! `application/graphql-response+json`; `THROTTLED` as 429 with `Retry-After`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error_response;
use super::media::Media;
use crate::error::AppError;
use crate::graphql::gateway::validated;
use crate::http::HttpState;

/// The answer to `responses` (a batch when `batched`).
pub(super) fn respond(
    state: &HttpState,
    media: Media,
    mut responses: Vec<async_graphql::Response>,
    batched: bool,
) -> Response {
    // 429 only when nothing ran: a client must not retry a batch whose other parts ran.
    let throttled = responses
        .iter()
        .map(retry_after)
        .collect::<Option<Vec<_>>>()
        .and_then(|waits| waits.into_iter().max());
    let mut reply = if batched {
        let batch = async_graphql::BatchResponse::Batch(responses);
        bounded_json(&batch, state.max_response_bytes, media)
    } else {
        let response = responses.pop().unwrap_or_default();
        if media == Media::GraphQLResponse
            && throttled.is_none()
            && !validated(&response)
            && !persisted_query_not_found(&response)
        {
            // A request error: the operation never ran, so there is no `data` to speak of.
            let body = RequestError {
                errors: &response.errors,
                extensions: &response.extensions,
            };
            let mut reply = bounded_json(&body, state.max_response_bytes, media);
            *reply.status_mut() = StatusCode::BAD_REQUEST;
            return reply;
        }
        bounded_json(&response, state.max_response_bytes, media)
    };
    if let Some(wait) = throttled {
        throttle(&mut reply, wait);
    }
    reply
}

/// Whether `response` asks the client to send the query behind a hash: 200, as Apollo's
/// clients expect (they send the query next).
fn persisted_query_not_found(response: &async_graphql::Response) -> bool {
    response.errors.iter().any(|error| {
        error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .is_some_and(|code| code == &async_graphql::Value::from("PERSISTED_QUERY_NOT_FOUND"))
    })
}

/// A response to a request that failed before execution: errors (and extensions), no `data`.
#[derive(serde::Serialize)]
struct RequestError<'a> {
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
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
pub(in crate::http) fn throttled_response(error: AppError) -> Response {
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
fn bounded_json(response: &impl serde::Serialize, max_bytes: usize, media: Media) -> Response {
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
    ([(header::CONTENT_TYPE, media.content_type())], body).into_response()
}
