//! Where a subscription resolver gets its events. Normally from the process's feed; the shared
//! path (see [`super::Live`]) runs the same resolver in two other modes, chosen by a
//! [`LiveMode`] in the request data: a probe that only records what the subscription wants, and
//! a rendering of one event.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use crate::error::AppError;
use crate::events::broker::Envelope;
use crate::events::outbox::EventSelector;
use crate::events::types;

/// What a live subscription wants from the log: the events its selector passes, and for
/// `stockLevelChanged` only those carrying a level of one store.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    /// The events wanted.
    pub selector: EventSelector,
    /// Only events carrying a level of this store (`stockLevelChanged(storeId:)`).
    pub level_store: Option<String>,
    /// The subscription replays the log from a cursor first: it cannot share a live stream.
    pub replays: bool,
}

impl Interest {
    /// True when the subscription may send something for `event`.
    pub fn wants(&self, event: &Envelope) -> bool {
        self.selector.matches(event)
            && self.level_store.as_ref().is_none_or(|store| {
                types::changes_levels(event)
                    && types::levels_in(event)
                        .iter()
                        .any(|level| &level.store_id == store)
            })
    }
}

/// How the subscription resolvers run for the shared path.
#[derive(Clone)]
pub enum LiveMode {
    /// Record the subscription's interest and yield nothing.
    Probe(Arc<Mutex<Option<Interest>>>),
    /// Yield this one event (when the subscription wants it), then end.
    Render(Envelope),
    /// Replay the log after this position, then continue live (a shared subscriber that fell
    /// behind goes on by itself).
    ResumeAfter(i64),
}

/// The events a subscription resolver streams: from the feed (after `after`, or live), or as
/// [`LiveMode`] in the request data says.
pub async fn events(
    ctx: &async_graphql::Context<'_>,
    after: Option<i64>,
    interest: Interest,
) -> Result<BoxStream<'static, Result<Envelope, AppError>>, AppError> {
    let after = match ctx.data_opt::<LiveMode>() {
        Some(LiveMode::Probe(slot)) => {
            let replays = after.is_some();
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Interest {
                replays,
                ..interest
            });
            return Ok(stream::empty().boxed());
        }
        Some(LiveMode::Render(event)) => {
            let wanted = interest.wants(event).then(|| Ok(event.clone()));
            return Ok(stream::iter(wanted).boxed());
        }
        Some(LiveMode::ResumeAfter(position)) => after.or(Some(*position)),
        None => after,
    };
    let events = super::super::state(ctx)
        .feed
        .subscribe(after, interest.selector)
        .await?;
    Ok(events.map(|item| item.map_err(AppError::from)).boxed())
}
