//! `GET /graphql`: the playground for a browser (`Accept: text/html`); for everyone else, a
//! GraphQL query in the URL (`query`, `variables`, `operationName`, `extensions`, the last two
//! JSON-encoded), with the same keys, limits and error codes as POST. Only queries: a mutation
//! or subscription over GET is refused with 405 and `Allow: POST`, since a GET must not change
//! anything (caches and prefetchers replay GETs freely). A query may be named by its hash
//! (automatic persisted queries, see `persisted`), which is what makes GETs short and cacheable.

use async_graphql::parser::types::OperationType;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::media::Media;
use super::{error_response, execute, persisted, reply};
use crate::error::AppError;
use crate::http::{HttpState, assets, header_text, presented_key};

/// The parameters of a GET request.
#[derive(Deserialize)]
pub struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`.
pub async fn get_graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let wants_html = header_text(&headers, "accept").is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return assets::playground(headers).await;
    }
    let key = presented_key(&headers);
    let principal = match state.app.keys.authenticate(key.as_deref()) {
        Ok(principal) => principal,
        Err(error) => return error_response(StatusCode::UNAUTHORIZED, error),
    };
    let request = match params
        .map_err(|rejection| {
            AppError::bad_input(format!("unreadable URL: {}", rejection.body_text()))
        })
        .and_then(|Query(params)| request_of(params))
    {
        Ok(request) => request,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error),
    };
    let mut request = request;
    if let Err(persisted::Refusal::NotFound(error) | persisted::Refusal::Invalid(error)) =
        state.persisted.apply(&mut request)
    {
        let response = async_graphql::Response::from_errors(vec![error]);
        return reply::respond(&state, Media::negotiate(&headers), vec![response], false);
    }
    if let Some(OperationType::Mutation | OperationType::Subscription) =
        state.schema.operation_type(&request)
    {
        let mut refused = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            AppError::bad_input("only queries may be sent with GET; send mutations with POST"),
        );
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return refused;
    }
    let response = execute(&state, request, principal).await;
    reply::respond(&state, Media::negotiate(&headers), vec![response], false)
}

/// The request the URL's parameters describe.
fn request_of(params: GetParams) -> Result<async_graphql::Request, AppError> {
    let query = params.query.filter(|q| !q.trim().is_empty());
    let persisted = params
        .extensions
        .as_deref()
        .is_some_and(|e| e.contains("persistedQuery"));
    if query.is_none() && !persisted {
        return Err(AppError::bad_input("the URL needs a `query` parameter"));
    }
    let mut request = async_graphql::Request::new(query.unwrap_or_default());
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables.filter(|v| !v.is_empty()) {
        let variables: serde_json::Value = serde_json::from_str(&variables)
            .map_err(|e| AppError::bad_input(format!("`variables` must be a JSON object: {e}")))?;
        if !variables.is_object() {
            return Err(AppError::bad_input("`variables` must be a JSON object"));
        }
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(extensions) = params.extensions.filter(|e| !e.is_empty()) {
        let extensions: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&extensions).map_err(|e| {
                AppError::bad_input(format!("`extensions` must be a JSON object: {e}"))
            })?;
        for (name, value) in extensions {
            if let Ok(value) = async_graphql::Value::from_json(value) {
                request.extensions.insert(name, value);
            }
        }
    }
    Ok(request)
}
