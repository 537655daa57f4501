//! The services every request shares (database, broker, feed, keys, relay handle, metrics),
//! built by `app` and read by `http` and `graphql`. It sits below both so that neither imports
//! `app`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::ApiKeys;
use crate::db::Db;
use crate::events::broker::Broker;
use crate::events::feed::Feed;
use crate::events::relay;

/// Shared services, cloned into every request.
#[derive(Clone)]
pub struct AppState {
    /// Database pool and write helper.
    pub db: Db,
    /// The broker the relay publishes to.
    pub broker: Arc<dyn Broker>,
    /// The live event feed.
    pub feed: Feed,
    /// Limits of GraphQL WebSocket connections.
    pub websocket: crate::config::WebSocketLimits,
    /// Combines concurrent single-line reservations into one write, when enabled.
    pub reservations: Option<crate::batcher::ReservationBatcher>,
    /// Configured API keys.
    pub keys: ApiKeys,
    /// Caps, cost buckets and load shedding.
    pub fair_use: crate::fair_use::FairUse,
    /// What `redriveEvents` tells this process's relay.
    pub relay: relay::RelayHandle,
    /// Prometheus renderer, when this process installed the recorder.
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// `memory`, `ok`, `down`, or `conflict` while the relay found the stream holding another
    /// history (see [`AppState::broker_conflict`]).
    pub fn broker_status(&self) -> &'static str {
        if self.relay.conflict().is_some() {
            return "conflict";
        }
        match (self.broker.kind(), self.broker.is_up()) {
            ("memory", _) => "memory",
            (_, true) => "ok",
            (_, false) => "down",
        }
    }

    /// Why the relay stopped publishing, when the stream holds another history.
    pub fn broker_conflict(&self) -> Option<String> {
        self.relay.conflict()
    }
}
