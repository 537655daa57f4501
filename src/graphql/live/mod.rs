//! Live subscriptions that share their work. Subscribers whose subscriptions are the same
//! selection (document, operation, variables, role) form a cohort; each event is rendered once
//! per cohort, by async-graphql itself (the subscription resolver runs in
//! [`LiveMode::Render`] for that one event), and every member gets the same bytes. What is left
//! per subscriber is a queue push and its frame.
//!
//! - **Which subscriptions share**: live subscriptions (no `after`) whose probe went well. A
//!   probe runs the operation once in [`LiveMode::Probe`]: it validates the document, checks the
//!   arguments and the role, and records the subscription's [`Interest`]. Everything else
//!   (replays, queries and mutations over the socket) runs on its own, as before.
//! - **Index**: cohorts are filed by the store their filter names, so an event is looked at only
//!   by the cohorts that may want it (`hub`).
//! - **Behind**: each cohort keeps its last `--live-ring` rendered events in a ring that its members
//!   read at their own pace; the hub never waits for anyone. A member that falls further behind
//!   than the ring goes on by itself from its last event ([`LiveMode::ResumeAfter`]: the log
//!   first, then live), so nothing is lost, repeated or reordered, and memory stays bounded.

mod hub;
mod member;
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Executor, Request, Response, ServerError, Variables};
use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use source::{Interest, LiveMode};

use super::gateway::validated;
use super::metered::server_error;
use super::{Gateway, assign_codes};
use crate::auth::{Principal, Role};
use crate::events::feed::Feed;
use crate::fair_use::{FairUse, Permit, Resource};

/// One event rendered for one selection: the JSON of each response it makes (none, one, or
/// one per stock level for `stockLevelChanged`).
pub struct Rendered {
    /// The event's position.
    pub position: i64,
    /// Serialized GraphQL responses.
    pub payloads: Vec<Bytes>,
}

/// How an operation started.
pub enum Started {
    /// It failed validation (or could not be parsed): the errors, for an `error` message.
    Refused(Vec<ServerError>),
    /// Its responses, serialized; the stream ends when the operation does.
    Responses(BoxStream<'static, Bytes>),
}

/// Everything that makes two subscriptions render alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CohortKey {
    role: Role,
    query: String,
    operation: Option<String>,
    variables: String,
}

/// The request of an operation, rebuilt for every execution.
#[derive(Clone)]
struct Operation {
    query: String,
    operation: Option<String>,
    variables: Variables,
}

impl Operation {
    fn request(&self) -> Request {
        let mut request = Request::new(self.query.clone()).variables(self.variables.clone());
        if let Some(name) = &self.operation {
            request = request.operation_name(name.clone());
        }
        request
    }
}

/// Subscribers sharing one selection.
struct Cohort {
    key: CohortKey,
    interest: Interest,
    operation: Operation,
    session: Arc<Data>,
    /// The rendered events, newest last; each member reads it at its own pace.
    ring: broadcast::Sender<Arc<Rendered>>,
    /// Members reading the ring (under the registry's lock).
    members: AtomicUsize,
    /// The place of this selection under the selection caps, held by the key that created it.
    _selection: Permit,
}

/// Cohorts and the hub's place in the log.
#[derive(Default)]
struct Registry {
    /// True while the hub reads the feed: members join only then.
    running: bool,
    /// Position of the last event the hub took; a member joining now starts after it.
    position: i64,
    cohorts: HashMap<CohortKey, Arc<Cohort>>,
    /// Cohorts by the store their filter names (`None`: any store).
    by_store: HashMap<Option<String>, Vec<Arc<Cohort>>>,
    /// Members, and joiners waiting for the hub.
    members: usize,
    waiting: usize,
}

/// The shared-subscription engine of one process.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Gateway,
    feed: Feed,
    fair_use: FairUse,
    registry: Mutex<Registry>,
    /// Wakes the hub when the registry gains its first joiner or loses its last member.
    demand: Notify,
    running: watch::Sender<bool>,
    /// Rendered events each cohort keeps.
    ring: usize,
}

impl Live {
    /// The engine for `gateway`'s schema, fed by `feed`, admitting subscriptions under
    /// `fair_use`, keeping `ring` rendered events per cohort; its hub runs in `tasks` until
    /// `shutdown`.
    pub fn start(
        gateway: Gateway,
        feed: Feed,
        fair_use: FairUse,
        ring: usize,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let live = Live {
            inner: Arc::new(Inner {
                gateway,
                feed,
                fair_use,
                registry: Mutex::new(Registry::default()),
                demand: Notify::new(),
                running: watch::Sender::new(false),
                ring: ring.max(1),
            }),
        };
        tasks.spawn(hub::run(live.inner.clone(), shutdown));
        live
    }

    /// Starts `request` for a caller with `principal`: shared when it is a live subscription,
    /// on its own otherwise.
    pub async fn start_operation(&self, request: Request, principal: Principal) -> Started {
        let mut session = Data::default();
        session.insert(principal);
        let session = Arc::new(session);
        let gateway = &self.inner.gateway;
        match gateway.operation_type(&request) {
            Some(OperationType::Subscription) => {}
            Some(_) => {
                let response = gateway
                    .execute_metered(request.data(principal), principal, &self.inner.fair_use)
                    .await;
                return match validated(&response) {
                    true => Started::Responses(stream::iter(serialize(&response)).boxed()),
                    false => Started::Refused(response.errors),
                };
            }
            // Unparsable, or no such operation: the gateway says why.
            None => return Started::Refused(gateway.execute(request).await.errors),
        }
        let permit = match self.admit(&request, principal) {
            Ok(permit) => permit,
            Err(refusal) => return Started::Refused(refusal),
        };
        let operation = Operation {
            query: request.query.clone(),
            operation: request.operation_name.clone(),
            variables: request.variables.clone(),
        };
        let slot = Arc::new(Mutex::new(None));
        let probe = request.data(LiveMode::Probe(slot.clone()));
        let answers: Vec<Response> = gateway
            .execute_stream(probe, Some(session.clone()))
            .collect()
            .await;
        if let Some(refused) = answers.iter().find(|r| !validated(r)) {
            return Started::Refused(refused.errors.clone());
        }
        if !answers.is_empty() {
            // The resolver refused its arguments: one response with the error, then the end.
            let payloads: Vec<Bytes> = answers.iter().filter_map(serialize).collect();
            return Started::Responses(stream::iter(payloads).boxed());
        }
        let interest = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let responses = match interest {
            Some(interest) if !interest.replays => {
                let key = CohortKey {
                    role: principal.role,
                    query: operation.query.clone(),
                    operation: operation.operation.clone(),
                    variables: serde_json::to_string(&operation.variables).unwrap_or_default(),
                };
                match self
                    .join(key, interest, operation, session, principal)
                    .await
                {
                    Ok(responses) => responses,
                    Err(refused) => return Started::Refused(refused),
                }
            }
            _ => alone(gateway, operation.request(), session),
        };
        // The subscription keeps its place under the caps while its stream lives.
        Started::Responses(
            responses
                .map(move |payload| {
                    let _held = &permit;
                    payload
                })
                .boxed(),
        )
    }

    /// A place under the subscription caps, unless load is shed or the caller's bucket cannot
    /// pay for the subscription's selection; else the refusal, as protocol errors.
    fn admit(&self, request: &Request, principal: Principal) -> Result<Permit, Vec<ServerError>> {
        let fair_use = &self.inner.fair_use;
        let refused = |error| refusal(vec![server_error(error)]);
        let permit = fair_use
            .admit(principal, Resource::Subscription)
            .map_err(refused)?;
        fair_use.shed("new subscriptions").map_err(refused)?;
        // A document that does not parse is refused by the probe, with its reason.
        if let Ok(Some(measured)) = self.inner.gateway.measure(request) {
            fair_use.charge(principal, measured.cost).map_err(refused)?;
        }
        Ok(permit)
    }
}

/// Errors as the protocol sends them: each with its `extensions.code`.
fn refusal(errors: Vec<ServerError>) -> Vec<ServerError> {
    assign_codes(Response::from_errors(errors)).errors
}

/// Runs an operation by itself; its responses, serialized.
fn alone(gateway: &Gateway, request: Request, session: Arc<Data>) -> BoxStream<'static, Bytes> {
    gateway
        .execute_stream(request, Some(session))
        .flat_map(|response| stream::iter(serialize(&response)))
        .boxed()
}

/// A response as the protocol's `payload`.
fn serialize(response: &Response) -> Option<Bytes> {
    match serde_json::to_vec(response) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(error) => {
            tracing::error!(%error, "could not serialize a response");
            None
        }
    }
}
