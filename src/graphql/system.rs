//! Service status over GraphQL: `health` and `outbox`.

use async_graphql::{Context, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::state;
use crate::events::outbox;

/// Whether the service's parts answer.
#[derive(SimpleObject)]
pub struct Health {
    /// `ok` or `down`.
    pub database: String,
    /// `ok`, `down` or `memory` (the in-process broker).
    pub broker: String,
    /// The server's version.
    pub version: String,
}

/// The outbox relay's state.
#[derive(SimpleObject)]
pub struct OutboxStatus {
    /// Events not yet published.
    pub pending: i32,
    /// Events given up on; `redriveEvents` puts them back.
    pub dead: i32,
    /// Age of the oldest pending event in milliseconds.
    pub oldest_pending_age_ms: Option<i32>,
    /// When the relay last published.
    pub last_published_at: Option<DateTime<Utc>>,
    /// `ok`, `down` or `memory`.
    pub broker: String,
}

/// Status queries.
#[derive(Default)]
pub struct SystemQuery;

/// Status queries.
#[Object]
impl SystemQuery {
    /// Whether the database and the broker answer: `database` is `ok`, `down`, or `failing`
    /// (it answers, but writes cannot be stored: disk full, read-only).
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let app = state(ctx);
        let database = if !crate::db::ping(&app.db.conn).await {
            "down"
        } else if app.db.storage_failure().is_some() {
            "failing"
        } else {
            "ok"
        };
        Health {
            database: database.to_owned(),
            broker: app.broker_status().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The outbox: what waits, what is dead, how old the oldest pending event is.
    async fn outbox(&self, ctx: &Context<'_>) -> Result<OutboxStatus> {
        let app = state(ctx);
        let figures = outbox::figures(&app.db.conn)
            .await
            .map_err(crate::error::AppError::from)?;
        let narrow = |n: u64| n.min(i32::MAX as u64) as i32;
        let age = figures.oldest_pending.map(|t| {
            (Utc::now() - t)
                .num_milliseconds()
                .clamp(0, i64::from(i32::MAX)) as i32
        });
        Ok(OutboxStatus {
            pending: narrow(figures.pending),
            dead: narrow(figures.dead),
            oldest_pending_age_ms: age,
            last_published_at: figures.last_published,
            broker: app.broker_status().to_owned(),
        })
    }
}
