//! Joining a cohort, and a member's stream: the cohort's shared responses while it keeps up,
//! then, once it fell behind, its own execution from its last event on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Data;
use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::mpsc;

use super::{Cohort, CohortKey, Inner, Interest, Live, LiveMode, Member, Operation, Rendered};

impl Live {
    /// Joins the cohort of `key` (made with `operation` when it has none yet), once the hub
    /// reads the feed; the member's responses.
    pub(super) async fn join(
        &self,
        key: CohortKey,
        interest: Interest,
        operation: Operation,
        session: Arc<Data>,
    ) -> BoxStream<'static, Bytes> {
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
                            let cohort = Arc::new(Cohort {
                                key: key.clone(),
                                interest: interest.clone(),
                                operation: operation.clone(),
                                session: session.clone(),
                                members: Mutex::new(Vec::new()),
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
                    let (sender, receiver) = mpsc::channel(super::MEMBER_QUEUE);
                    let member = Member {
                        id: inner.next_member.fetch_add(1, Ordering::Relaxed),
                        start: registry.position,
                        sender,
                        behind: Arc::new(AtomicBool::new(false)),
                    };
                    let state = MemberState {
                        id: member.id,
                        behind: member.behind.clone(),
                        last: member.start,
                        cohort: cohort.clone(),
                        inner: inner.clone(),
                    };
                    cohort
                        .members
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(member);
                    registry.members += 1;
                    break (state, receiver);
                }
                if !waiting {
                    registry.waiting += 1;
                    waiting = true;
                }
            }
            inner.demand.notify_one();
            if running.wait_for(|running| *running).await.is_err() {
                return stream::empty().boxed();
            }
        };
        metrics::gauge!("stockroom_subscriptions_shared").increment(1.0);
        member_stream(member, receiver)
    }
}

/// A member, as its own stream sees it; leaves its cohort when dropped.
struct MemberState {
    id: u64,
    behind: Arc<AtomicBool>,
    /// Position of the last event received.
    last: i64,
    cohort: Arc<Cohort>,
    inner: Arc<Inner>,
}

impl Drop for MemberState {
    fn drop(&mut self) {
        metrics::gauge!("stockroom_subscriptions_shared").decrement(1.0);
        leave(&self.inner, &self.cohort, &[self.id]);
    }
}

/// Removes members `ids` from `cohort` (those still in it), and the cohort once empty.
pub(super) fn leave(inner: &Inner, cohort: &Arc<Cohort>, ids: &[u64]) {
    let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
    let mut members = cohort.members.lock().unwrap_or_else(|e| e.into_inner());
    let before = members.len();
    members.retain(|m| !ids.contains(&m.id));
    registry.members -= before - members.len();
    if members.is_empty() && registry.cohorts.remove(&cohort.key).is_some() {
        if let Some(filed) = registry
            .by_store
            .get_mut(&cohort.interest.selector.store_id)
        {
            filed.retain(|c| !Arc::ptr_eq(c, cohort));
        }
        registry.by_store.retain(|_, filed| !filed.is_empty());
    }
    let idle = registry.members == 0 && registry.waiting == 0;
    drop(members);
    drop(registry);
    if idle {
        inner.demand.notify_one();
    }
}

/// What a member's stream works through.
struct Flow {
    member: MemberState,
    receiver: mpsc::Receiver<Arc<Rendered>>,
    ready: VecDeque<Bytes>,
    /// Its own execution, once it fell behind.
    alone: Option<BoxStream<'static, Bytes>>,
}

fn member_stream(
    member: MemberState,
    receiver: mpsc::Receiver<Arc<Rendered>>,
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
                Some(rendered) => {
                    self.member.last = rendered.position;
                    self.ready.extend(rendered.payloads.iter().cloned());
                }
                None if self.member.behind.load(Ordering::Acquire) => {
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
                // The hub stopped: the process is shutting down.
                None => return None,
            }
        }
    }
}
