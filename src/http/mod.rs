//! The axum router: `/graphql`, `/graphql/ws`, playground, dashboard, health and metrics, with
//! body-size, timeout, CORS, open-mode host and request-id layers.

mod assets;
mod browsers;
mod graphql;
pub mod server;
mod status;
pub mod websocket;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::routing::get;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::graphql::Gateway;
use crate::graphql::live::Live;
use crate::state::AppState;

/// A header's value as text, if it is there and readable.
/// Whether a header list such as `Accept` or `Accept-Encoding` (`a, b;q=0.5`) names `token`
/// with a weight above 0 (case-insensitively).
fn lists(value: &str, token: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let weight = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        name.eq_ignore_ascii_case(token) && weight > 0.0
    })
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The API key a request presents, in `Authorization: Bearer KEY` or `X-API-Key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    crate::auth::key_from_headers(
        header_text(headers, "authorization"),
        header_text(headers, "x-api-key"),
    )
}

/// Header carrying the request id (generated when the client sends none).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// HTTP-level limits and policies.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Most operations in a batched request; 0 refuses batches.
    pub max_batch: usize,
    /// Allowed CORS origins (`*` for any); empty allows none.
    pub cors_origins: Vec<String>,
    /// Key that `/metrics` requires; unset: open.
    pub metrics_key: Option<String>,
    /// Largest serialized GraphQL response, in bytes.
    pub max_response_bytes: usize,
}

impl HttpLimits {
    /// The limits configured in `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        let cors_origins = settings
            .cors_origins
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        HttpLimits {
            max_body_bytes: settings.max_body_bytes.max(1024),
            request_timeout: Duration::from_millis(settings.request_timeout_ms.max(100)),
            max_batch: settings.max_batch,
            cors_origins,
            metrics_key: settings
                .metrics_key
                .clone()
                .filter(|k| !k.trim().is_empty()),
            max_response_bytes: settings.max_response_bytes.max(1024),
        }
    }
}

/// State of every handler.
#[derive(Clone)]
pub struct HttpState {
    /// Shared services.
    pub app: AppState,
    /// The GraphQL schema behind its gateway (parsing, limits, error codes).
    pub schema: Gateway,
    /// Live subscriptions that share their work (the WebSocket's operations).
    pub live: Live,
    /// Where WebSocket connections run (see [`websocket::connection_runtime`]).
    pub connections: tokio::runtime::Handle,
    /// Queries known by their SHA-256 (automatic persisted queries).
    pub persisted: graphql::PersistedQueries,
    /// Most operations in a batched request.
    pub max_batch: usize,
    /// Origins whose pages may open the WebSocket besides same-origin and loopback pages.
    pub allowed_origins: std::sync::Arc<Vec<String>>,
    /// Key that `/metrics` requires (an admin key is accepted too); unset: open.
    pub metrics_key: Option<std::sync::Arc<str>>,
    /// Largest serialized GraphQL response, in bytes.
    pub max_response_bytes: usize,
    /// Operation names seen as metric labels (capped).
    pub operation_labels: graphql::OperationLabels,
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ])
        .max_age(Duration::from_secs(600))
}

/// One span per request, named by method and path, carrying the request id.
fn request_span(request: &Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
}

/// Builds the router.
pub fn router(
    app: AppState,
    schema: Gateway,
    live: Live,
    connections: tokio::runtime::Handle,
    limits: HttpLimits,
) -> Router {
    let state = HttpState {
        app,
        schema,
        live,
        connections,
        max_batch: limits.max_batch,
        allowed_origins: std::sync::Arc::new(limits.cors_origins.clone()),
        metrics_key: limits.metrics_key.as_deref().map(std::sync::Arc::from),
        max_response_bytes: limits.max_response_bytes,
        operation_labels: Default::default(),
        persisted: Default::default(),
    };
    Router::new()
        .route(
            "/graphql",
            get(graphql::get_graphql)
                .post(graphql::post_graphql)
                // GraphQL responses in the encoding the client accepts (never the WebSocket
                // route; the pages' files are compressed once, see `assets`).
                .layer(CompressionLayer::new()),
        )
        .route("/graphql/ws", get(websocket::websocket))
        .route("/", get(assets::playground))
        .route("/dashboard", get(assets::dashboard))
        .route("/playground/{*path}", get(assets::asset))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browsers::loopback_host_in_open_mode,
        ))
        .layer(cors(&limits.cors_origins))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
