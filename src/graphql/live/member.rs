//! Joining a cohort, and a member's stream: the cohort's shared responses while it keeps up
//! with the ring, then, once it fell behind it, its own execution from its last event on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{Data, ServerError};
use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Cohort, CohortKey, Inner, Interest, Live, LiveMode, Operation, Rendered};
use crate::auth::Principal;
use crate::fair_use::Resource;
use crate::graphql::metered::server_error;

impl Live {
    /// Joins the cohort of `key` (made with `operation` when it has none yet, if `principal`'s
    /// key may create one more selection), once the hub reads the feed; the member's responses.
    pub(super) async fn join(
        &self,
        key: CohortKey,
        interest: Interest,
        operation: Operation,
        session: Arc<Data>,
        principal: Principal,
    ) -> Result<BoxStream<'static, Bytes>, Vec<ServerError>> {
        let inner = &self.inner;
        let mut running = inner.running.subscribe();
        let mut waiting = false;
        let (member, receiver) = loop {
            {
                let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
                if registry.running {
                    if waiting {
                        registry.waiting -= 1;
                    }
                    let cohort = match registry.cohorts.get(&key) {
                        Some(cohort) => cohort.clone(),
                        None => {
                            let selection = inner
                                .fair_use
                                .admit(principal, Resource::Selection)
                                .map_err(|error| super::refusal(vec![server_error(error)]));
                            let selection = match selection {
                                Ok(selection) => selection,
                                Err(refused) => {
                                    let idle = registry.members == 0 && registry.waiting == 0;
                                    drop(registry);
                                    if idle {
                                        // Nobody else wants the hub: let it go back to sleep.
                                        inner.demand.notify_one();
                                    }
                                    return Err(refused);
                                }
                            };
                            let cohort = Arc::new(Cohort {
                                key: key.clone(),
                                interest: interest.clone(),
                                operation: operation.clone(),
                                session: session.clone(),
                                ring: broadcast::Sender::new(inner.ring),
                                members: AtomicUsize::new(0),
                                _selection: selection,
                            });
                            registry.cohorts.insert(key.clone(), cohort.clone());
                            registry
                                .by_store
                                .entry(interest.selector.store_id.clone())
                                .or_default()
                                .push(cohort.clone());
                            cohort
                        }
                    };
                    cohort.members.fetch_add(1, Ordering::Relaxed);
                    registry.members += 1;
                    let member = MemberState {
                        last: registry.position,
                        cohort: cohort.clone(),
                        inner: inner.clone(),
                    };
                    break (member, cohort.ring.subscribe());
                }
                if !waiting {
                    registry.waiting += 1;
                    waiting = true;
                }
            }
            inner.demand.notify_one();
            if running.wait_for(|running| *running).await.is_err() {
                return Ok(stream::empty().boxed());
            }
        };
        metrics::gauge!("stockroom_subscriptions_shared").increment(1.0);
        Ok(member_stream(member, receiver))
    }
}

/// A member, as its own stream sees it; leaves its cohort when dropped.
struct MemberState {
    /// Position of the last event received (at first, the hub's when it joined).
    last: i64,
    cohort: Arc<Cohort>,
    inner: Arc<Inner>,
}

impl Drop for MemberState {
    fn drop(&mut self) {
        metrics::gauge!("stockroom_subscriptions_shared").decrement(1.0);
        leave(&self.inner, &self.cohort);
    }
}

/// A member leaves `cohort`; the cohort goes once it has none left.
fn leave(inner: &Inner, cohort: &Arc<Cohort>) {
    let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
    registry.members = registry.members.saturating_sub(1);
    let left = cohort.members.fetch_sub(1, Ordering::Relaxed) - 1;
    if left == 0 && registry.cohorts.remove(&cohort.key).is_some() {
        if let Some(filed) = registry
            .by_store
            .get_mut(&cohort.interest.selector.store_id)
        {
            filed.retain(|c| !Arc::ptr_eq(c, cohort));
        }
        registry.by_store.retain(|_, filed| !filed.is_empty());
    }
    let idle = registry.members == 0 && registry.waiting == 0;
    drop(registry);
    if idle {
        inner.demand.notify_one();
    }
}

/// What a member's stream works through.
struct Flow {
    member: MemberState,
    receiver: broadcast::Receiver<Arc<Rendered>>,
    ready: VecDeque<Bytes>,
    /// Its own execution, once it fell behind.
    alone: Option<BoxStream<'static, Bytes>>,
}

fn member_stream(
    member: MemberState,
    receiver: broadcast::Receiver<Arc<Rendered>>,
) -> BoxStream<'static, Bytes> {
    let flow = Flow {
        member,
        receiver,
        ready: VecDeque::new(),
        alone: None,
    };
    stream::unfold(flow, |mut flow| async move {
        let next = flow.next().await?;
        Some((next, flow))
    })
    .boxed()
}

impl Flow {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Some(payload);
            }
            if let Some(alone) = &mut self.alone {
                return alone.next().await;
            }
            match self.receiver.recv().await {
                // Rendered before this member joined.
                Ok(rendered) if rendered.position <= self.member.last => {}
                Ok(rendered) => {
                    self.member.last = rendered.position;
                    self.ready.extend(rendered.payloads.iter().cloned());
                }
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!("stockroom_subscriptions_fell_behind_total").increment(1);
                    let cohort = &self.member.cohort;
                    let request = cohort
                        .operation
                        .request()
                        .data(LiveMode::ResumeAfter(self.member.last));
                    self.alone = Some(super::alone(
                        &self.member.inner.gateway,
                        request,
                        cohort.session.clone(),
                    ));
                }
                // The cohort is gone: the process is shutting down.
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
