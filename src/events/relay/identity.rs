//! The stream must hold this database's history. Redis refusing an entry ID at or below the
//! stream's top proves an event was published only while the stream was written from this
//! database: a database restored from an older copy, or a fresh one pointed at a stream another
//! database wrote, would otherwise count its events as published while none reach the stream.
//! At start, and after any conflict, the stream's last entry is compared with the event this
//! database has at that position; a publish that meets another event at its place is a conflict
//! too (see the broker). While there is a conflict nothing is published or marked, the events
//! stay pending, and `/readyz` and `health` say `"broker": "conflict"` with the reason.

use std::sync::atomic::Ordering;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::RelayError;
use super::positions::top_position;
use crate::entity::event;

impl super::Worker {
    /// Checks the stream's top against the log, unless checked since start or the last
    /// conflict. A conflict fails the round.
    pub(super) async fn verify_stream(&self) -> Result<(), RelayError> {
        if self.verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let top = self
            .broker
            .top()
            .await
            .map_err(|e| RelayError::Broker(e.0))?;
        if let Some((position, id)) = top {
            let ours = event::Entity::find()
                .filter(event::Column::Position.eq(position))
                .one(&self.db.conn)
                .await?;
            let destination = self.broker.destination();
            match ours {
                Some(e) if e.id == id => {}
                Some(e) => {
                    return Err(self.report_conflict(format!(
                        "{destination} ends with event {id} at position {position}, this database \
                         has event {} there",
                        e.id
                    )));
                }
                None => {
                    let highest = top_position(&self.db.conn).await?;
                    return Err(self.report_conflict(format!(
                        "{destination} ends at position {position}, beyond the highest position \
                         this database has given ({})",
                        highest.map_or_else(|| "none".to_owned(), |h| h.to_string())
                    )));
                }
            }
        }
        self.verified.store(true, Ordering::Release);
        let cleared = self
            .conflict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if cleared.is_some() {
            tracing::info!("the stream holds this database's history again; publishing resumes");
            metrics::gauge!("stockroom_relay_stream_conflict").set(0.0);
        }
        Ok(())
    }

    /// Records a conflict (logged and counted when it starts) and returns the round's error.
    pub(super) fn report_conflict(&self, reason: String) -> RelayError {
        self.verified.store(false, Ordering::Release);
        let mut conflict = self.conflict.lock().unwrap_or_else(|e| e.into_inner());
        if conflict.as_deref() != Some(reason.as_str()) {
            tracing::error!(
                destination = %self.broker.destination(),
                %reason,
                "the stream holds another history: nothing is published or marked published \
                 until it is this database's (point --stream at another key, or delete or \
                 rename the stream)"
            );
            metrics::counter!("stockroom_relay_stream_conflicts_total").increment(1);
            metrics::gauge!("stockroom_relay_stream_conflict").set(1.0);
        }
        *conflict = Some(reason.clone());
        RelayError::Conflict(reason)
    }
}
