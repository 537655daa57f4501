//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use crate::events::outbox;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the database answers and writes reach storage, with broker and
/// outbox state. While the latest write failed for lack of storage (disk full, read-only), 503
/// with `"database": "failing"` and the cause in `databaseError`.
pub async fn readyz(State(state): State<HttpState>) -> Response {
    let app = &state.app;
    let figures = outbox::figures(&app.db.conn).await;
    let storage_failure = app.db.storage_failure();
    let database = match (&figures, &storage_failure) {
        (Err(_), _) => "down",
        (Ok(_), Some(_)) => "failing",
        (Ok(_), None) => "ok",
    };
    let database_ok = database == "ok";
    let mut body = json!({
        "database": database,
        "broker": app.broker_status(),
        "outboxPending": figures.map(|f| f.pending).unwrap_or_default(),
    });
    if let Some(cause) = storage_failure {
        body["databaseError"] = json!(cause);
    }
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<HttpState>) -> Response {
    let body = state
        .app
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
