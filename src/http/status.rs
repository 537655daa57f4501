//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{HttpState, presented_key};
use crate::auth::Role;
use crate::events::outbox;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the database answers and writes reach storage, with broker,
/// outbox and relay state (`"relay": "active"` on the process that relays, `"standby"` on the
/// others). While writes fail for lack of storage (disk full, read-only; see
/// `db::WriteHealth`), 503 with `"database": "failing"` and the cause in `databaseError`.
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
        "relay": if app.relay.is_active() { "active" } else { "standby" },
    });
    if let Some(cause) = storage_failure {
        body["databaseError"] = json!(cause);
    }
    if let Some(conflict) = app.broker_conflict() {
        body["brokerError"] = json!(conflict);
    }
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format. With `--metrics-key`, only for that key or an admin
/// API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`).
pub async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(required) = &state.metrics_key {
        let presented = presented_key(&headers);
        let metrics_key = presented
            .as_deref()
            .is_some_and(|k| bool::from(k.as_bytes().ct_eq(required.as_bytes())));
        let admin = state
            .app
            .keys
            .authenticate(presented.as_deref())
            .is_ok_and(|p| p.role == Role::Admin && !state.app.keys.is_open());
        if !(metrics_key || admin) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs the metrics key or an admin API key\n",
            )
                .into_response();
        }
    }
    let body = state
        .app
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
