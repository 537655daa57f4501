//! Events over GraphQL: the audit log query, `redriveEvents`, and the live subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, InputObject, Json, Object, Result, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::auth::{Principal, Role, RoleGuard};
use super::live::{self, source::Interest};
use super::state;
use super::stock::StockLevel;
use crate::domain::paging;
use crate::error::AppError;
use crate::events::broker::{Envelope, entry_id, parse_entry_id};
use crate::events::log::read_log;
use crate::events::outbox::EventSelector;
use crate::events::types;

/// One entry of the event log.
pub struct InventoryEvent(pub Envelope);

/// One entry of the event log.
#[Object]
impl InventoryEvent {
    /// Unique id (UUID v7).
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The event's place in the log, `<position>-0`: the same text as its Redis stream entry ID.
    async fn cursor(&self) -> String {
        entry_id(self.0.position.unwrap_or_default())
    }
    /// Position in the log (1, 2, 3, …).
    async fn position(&self) -> Option<i64> {
        self.0.position
    }
    /// `stock.updated`, `reservation.created`, …
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// `stock_level` or `reservation`.
    async fn aggregate_type(&self) -> &str {
        &self.0.aggregate_type
    }
    /// Id of the aggregate (`PRODUCT:STORE` for stock levels, the reservation id).
    async fn aggregate_id(&self) -> &str {
        &self.0.aggregate_id
    }
    /// Store concerned.
    async fn store_id(&self) -> Option<ID> {
        self.0.store_id.clone().map(ID)
    }
    /// Product concerned.
    async fn product_id(&self) -> Option<Uuid> {
        self.0.product_id
    }
    /// Post-change state; see docs/API.md (Events) for the fields of each type.
    async fn payload(&self) -> Json<serde_json::Value> {
        Json(self.0.payload.clone())
    }
    /// When the change was committed.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
    /// When the relay delivered it to the broker.
    async fn published_at(&self) -> Option<DateTime<Utc>> {
        self.0.published_at
    }
}

/// Which events to return.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Only these types, e.g. `["stock.low", "stock.depleted"]`.
    pub types: Option<Vec<String>>,
    /// Only this store.
    pub store_id: Option<ID>,
    /// Only this product.
    pub product_id: Option<Uuid>,
}

impl EventFilter {
    fn into_selector(self) -> Result<EventSelector, AppError> {
        let types = self.types.unwrap_or_default();
        if let Some(unknown) = types
            .iter()
            .find(|t| !types::ALL_TYPES.contains(&t.as_str()))
        {
            return Err(AppError::bad_input(format!(
                "unknown event type {unknown:?}; known: {}",
                types::ALL_TYPES.join(", ")
            )));
        }
        Ok(EventSelector {
            types,
            store_id: self.store_id.map(|s| s.0),
            product_id: self.product_id,
        })
    }
}

fn selector(filter: Option<EventFilter>) -> Result<EventSelector, AppError> {
    filter.unwrap_or_default().into_selector()
}

fn position_after(after: Option<&str>) -> Result<Option<i64>, AppError> {
    after
        .map(|cursor| {
            parse_entry_id(cursor)
                .ok_or_else(|| AppError::bad_input(format!("invalid event cursor {cursor:?}")))
        })
        .transpose()
}

/// Event queries.
#[derive(Default)]
pub struct EventQuery;

/// Event queries.
#[Object]
impl EventQuery {
    /// The audit log in log order. `after` is an event cursor (`<position>-0`).
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
        filter: Option<EventFilter>,
    ) -> Result<Connection<String, InventoryEvent>> {
        let size = paging::page_size(first, super::page_limit(ctx))?;
        let after = position_after(after.as_deref())?;
        let selector = selector(filter)?;
        let mut rows =
            read_log(&state(ctx).db.conn, after.unwrap_or(0), &selector, size + 1).await?;
        let has_next = rows.len() as u64 > size;
        rows.truncate(size as usize);
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|e| {
            Edge::new(
                entry_id(e.position.unwrap_or_default()),
                InventoryEvent(e.into()),
            )
        }));
        Ok(connection)
    }
}

/// Event mutations (admin).
#[derive(Default)]
pub struct EventMutation;

/// Event mutations (admin).
#[Object]
impl EventMutation {
    /// Puts dead events back to pending so the relay tries them again: the given ids, or all.
    /// Returns how many were redriven.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn redrive_events(&self, ctx: &Context<'_>, ids: Option<Vec<Uuid>>) -> Result<i32> {
        let app = state(ctx);
        let count = app.relay.redrive_events(&app.db, ids).await?;
        Ok(count.min(i32::MAX as u64) as i32)
    }
}

/// The subscriptions open on one WebSocket connection, up to a cap. The connection puts one in
/// its context data; each subscription holds a slot until its stream is dropped (completed,
/// stopped by the client, or the connection closed).
#[derive(Clone, Debug)]
pub struct SubscriptionSlots {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl SubscriptionSlots {
    /// Slots for at most `max` subscriptions at once.
    pub fn new(max: usize) -> Self {
        SubscriptionSlots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    fn acquire(&self) -> Result<Slot, AppError> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| {
                AppError::bad_input(format!(
                    "too many subscriptions on this connection (at most {}); complete one first",
                    self.max
                ))
            })?;
        metrics::gauge!("stockroom_subscriptions_open").increment(1.0);
        Ok(Slot {
            open: self.open.clone(),
            fair_use_permit: None,
        })
    }
}

/// One open subscription; gives its slot back when dropped.
struct Slot {
    open: Arc<AtomicUsize>,
    /// Its place under the per-key and per-process subscription caps.
    fair_use_permit: Option<crate::fair_use::Permit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("stockroom_subscriptions_open").decrement(1.0);
    }
}

/// A slot on this connection, when the connection has a cap (the legacy WebSocket protocol),
/// and a place under the fair-use subscription caps.
fn take_slot(ctx: &Context<'_>) -> Result<Option<Slot>, AppError> {
    let Some(slots) = ctx.data_opt::<SubscriptionSlots>() else {
        return Ok(None);
    };
    let permit = match ctx.data_opt::<Principal>() {
        Some(principal) => Some(
            state(ctx)
                .fair_use
                .admit(*principal, crate::fair_use::Resource::Subscription)?,
        ),
        None => None,
    };
    let mut slot = slots.acquire()?;
    slot.fair_use_permit = permit;
    Ok(Some(slot))
}

/// Live subscriptions.
#[derive(Default)]
pub struct EventSubscription;

/// Live subscriptions.
#[Subscription]
impl EventSubscription {
    /// Every event in log order. With `after`, first replays the log after that cursor, then
    /// continues live with no gap and no duplicate; without it, starts live.
    async fn inventory_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        filter: Option<EventFilter>,
    ) -> Result<impl Stream<Item = Result<InventoryEvent>> + use<>> {
        let after = position_after(after.as_deref())?;
        let interest = Interest {
            selector: selector(filter)?,
            ..Interest::default()
        };
        let events = live::source::events(ctx, after, interest).await?;
        let slot = take_slot(ctx)?;
        Ok(events.map(move |item| {
            let _held = &slot;
            item.map(InventoryEvent).map_err(Into::into)
        }))
    }

    /// The stock level after every change to a matching level, from the event's post-change
    /// state: once per change (`stock.low` and `stock.depleted` repeat a change, and are not
    /// pushed again).
    async fn stock_level_changed(
        &self,
        ctx: &Context<'_>,
        product_id: Option<Uuid>,
        store_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<StockLevel>> + use<>> {
        let store_id = store_id.map(|s| s.0);
        let interest = Interest {
            selector: EventSelector {
                types: Vec::new(),
                store_id: None,
                product_id,
            },
            level_store: store_id.clone(),
            replays: false,
        };
        let events = live::source::events(ctx, None, interest).await?;
        let slot = take_slot(ctx)?;
        let levels = events.flat_map(move |item| {
            let _held = &slot;
            let levels: Vec<Result<StockLevel>> = match item {
                Ok(event) if !types::changes_levels(&event) => Vec::new(),
                Ok(event) => types::levels_in(&event)
                    .into_iter()
                    .filter(|l| product_id.is_none_or(|p| p == l.product_id))
                    .filter(|l| store_id.as_ref().is_none_or(|s| s == &l.store_id))
                    .map(|l| Ok(StockLevel(l)))
                    .collect(),
                Err(e) => vec![Err(e.into())],
            };
            futures_util::stream::iter(levels)
        });
        Ok(levels)
    }
}
