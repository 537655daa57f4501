//! What the code uses, derived from the settings: durations, the WebSocket limits, the
//! database kind.

use std::time::Duration;

use super::Settings;

impl Settings {
    /// Sweeper interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(10))
    }

    /// How long relay leadership outlives its holder's silence (at least 200 ms).
    pub fn relay_lease(&self) -> Duration {
        Duration::from_millis(self.relay_lease_ms.max(200))
    }

    /// The WebSocket limits.
    pub fn websocket(&self) -> WebSocketLimits {
        WebSocketLimits {
            max_subscriptions: self.ws_max_subscriptions.max(1),
            init_timeout: Duration::from_millis(self.ws_init_timeout_ms.max(1)),
            keepalive: (self.ws_keepalive_ms > 0)
                .then(|| Duration::from_millis(self.ws_keepalive_ms.max(10))),
            max_message_bytes: self.ws_max_message_bytes.max(1024),
        }
    }

    /// True when the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// Limits of GraphQL WebSocket connections.
#[derive(Debug, Clone)]
pub struct WebSocketLimits {
    /// Most subscriptions open at once per connection.
    pub max_subscriptions: usize,
    /// Time allowed between the upgrade and `connection_init`.
    pub init_timeout: Duration,
    /// Interval of server keepalive messages; `None` sends none.
    pub keepalive: Option<Duration>,
    /// Largest message accepted from a client, in bytes.
    pub max_message_bytes: usize,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        WebSocketLimits {
            max_subscriptions: 100,
            init_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(15)),
            max_message_bytes: 64 * 1024,
        }
    }
}
