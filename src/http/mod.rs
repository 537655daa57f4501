//! The axum router: `/graphql`, `/graphql/ws`, playground, dashboard, health and metrics.

mod assets;
mod graphql;
mod status;

use axum::Router;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::graphql::AppSchema;

/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// State of every handler.
#[derive(Clone)]
pub struct HttpState {
    /// Shared services.
    pub app: AppState,
    /// The GraphQL schema.
    pub schema: AppSchema,
}

/// Builds the router.
pub fn router(app: AppState, schema: AppSchema) -> Router {
    Router::new()
        .route(
            "/graphql",
            get(graphql::get_graphql).post(graphql::post_graphql),
        )
        .route("/graphql/ws", get(graphql::websocket))
        .route("/", get(assets::playground))
        .route("/dashboard", get(assets::dashboard))
        .route("/playground/{*path}", get(assets::asset))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(HttpState { app, schema })
}
