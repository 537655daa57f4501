//! The hub: one task per process reads the feed while anyone shares a subscription, renders
//! each event once per cohort that may want it, and puts the bytes in the cohort's ring, which
//! members read at their own pace: the hub waits for none.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Executor;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Cohort, Inner, LiveMode, Rendered, serialize};
use crate::events::broker::Envelope;
use crate::events::outbox::EventSelector;

/// Runs until `shutdown`: idle while nobody shares a subscription.
pub(super) async fn run(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut position = None;
    loop {
        while !wanted(&inner) {
            tokio::select! {
                _ = inner.demand.notified() => {}
                _ = shutdown.cancelled() => return stop(&inner),
            }
        }
        // Live from now, or, after a failed read, from the last event taken.
        let start = match position {
            Some(position) => position,
            None => match inner.feed.live_start().await {
                Ok(start) => start,
                Err(error) => {
                    tracing::warn!(%error, "the subscription hub could not find where to start");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let mut events = match inner
            .feed
            .subscribe(Some(start), EventSelector::default())
            .await
        {
            Ok(events) => events.boxed(),
            Err(error) => {
                tracing::warn!(%error, "the subscription hub could not read the feed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
            registry.position = start;
            registry.running = true;
        }
        inner.running.send_replace(true);
        position = Some(start);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = inner.demand.notified() => {
                    if wanted(&inner) { continue }
                    // Nobody left: idle, and start live from now next time.
                    position = None;
                    break;
                }
                _ = shutdown.cancelled() => return stop(&inner),
            };
            match event {
                Some(Ok(event)) => {
                    position = event.position.or(position);
                    dispatch(&inner, event).await;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the subscription hub lost the feed; resuming");
                    break;
                }
                None => return stop(&inner),
            }
        }
        let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
        if position.is_none() && registry.members + registry.waiting > 0 {
            // Someone joined while the hub was leaving: it goes on from where it was.
            position = Some(registry.position);
        }
        registry.running = false;
        drop(registry);
        inner.running.send_replace(false);
    }
}

/// Whether anyone shares a subscription or waits to.
fn wanted(inner: &Inner) -> bool {
    let registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
    registry.members + registry.waiting > 0
}

/// At shutdown: joiners stop waiting (members end with their connections).
fn stop(inner: &Inner) {
    inner
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .running = false;
    inner.running.send_replace(false);
}

/// Renders `event` once for each cohort that may want it and queues it for their members.
async fn dispatch(inner: &Inner, event: Envelope) {
    let position = event.position.unwrap_or_default();
    let candidates: Vec<Arc<Cohort>> = {
        let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.position = position;
        let any = registry.by_store.get(&None).into_iter().flatten();
        let this_store = event
            .store_id
            .as_ref()
            .and_then(|store| registry.by_store.get(&Some(store.clone())))
            .into_iter()
            .flatten();
        any.chain(this_store).cloned().collect()
    };
    for cohort in candidates {
        if !cohort.interest.wants(&event) {
            continue;
        }
        let rendered = render(inner, &cohort, &event).await;
        if rendered.payloads.is_empty() {
            continue;
        }
        // No receiver left: the cohort is on its way out.
        let _ = cohort.ring.send(Arc::new(rendered));
    }
}

/// The cohort's responses for `event`, by async-graphql, serialized once.
async fn render(inner: &Inner, cohort: &Cohort, event: &Envelope) -> Rendered {
    let request = cohort
        .operation
        .request()
        .data(LiveMode::Render(event.clone()));
    let responses: Vec<_> = inner
        .gateway
        .execute_stream(request, Some(cohort.session.clone()))
        .collect()
        .await;
    metrics::counter!("stockroom_live_renders_total").increment(1);
    Rendered {
        position: event.position.unwrap_or_default(),
        payloads: responses.iter().filter_map(serialize).collect(),
    }
}
