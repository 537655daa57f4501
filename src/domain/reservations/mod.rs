//! Reservations: PENDING → CONFIRMED | CANCELLED | EXPIRED. Reserving moves units from available
//! to reserved; confirming sells them; cancelling or expiring releases them.
//!
//! This file holds the types, validation, reserving, lookups and listings; `lifecycle` the moves
//! out of PENDING (confirm, cancel, expire).

pub mod counts;
mod lifecycle;

pub use counts::stats;
pub use lifecycle::{cancel, confirm, expire_due};

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::Serialize;
use uuid::Uuid;

use super::idempotency::{self, IdempotencyClaim};
use super::paging::{Page, PageRequest, keyset, split};
use super::stock::{self, Change, Delta, LevelKey, positive};
use super::{now, optional_text};
use crate::entity::reservation::{self, Column};
use crate::entity::{reservation_batch, stock_level};
use crate::error::{AppError, AppResult};
use crate::events::{self, types};

/// Default reservation lifetime.
pub const DEFAULT_TTL_SECONDS: i32 = 900;
/// Longest reservation lifetime.
pub const MAX_TTL_SECONDS: i32 = 86_400;
/// Most lines in one batch.
pub const MAX_BATCH_LINES: usize = 100;

/// The four states of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Holding units until confirmed, cancelled or expired.
    Pending,
    /// Units sold.
    Confirmed,
    /// Units released by request.
    Cancelled,
    /// Units released by the TTL.
    Expired,
}

impl Status {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Cancelled => "CANCELLED",
            Status::Expired => "EXPIRED",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Confirmed,
            Status::Cancelled,
            Status::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One line to reserve.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Which level.
    pub key: LevelKey,
    /// Units (> 0).
    pub quantity: i32,
}

/// `reserveStock` / `reserveStockBatch` input.
#[derive(Debug, Clone, Serialize)]
pub struct Reserve {
    /// The lines; one for `reserveStock`.
    pub lines: Vec<Line>,
    /// Who the units are held for.
    pub customer_id: Option<String>,
    /// Lifetime in seconds, 1..=86400, default 900.
    pub ttl_seconds: Option<i32>,
    /// Replays the first result when repeated.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

/// Which reservations to list.
#[derive(Debug, Clone, Default)]
pub struct ReservationQuery {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this store.
    pub store_id: Option<String>,
    /// Only this product.
    pub product_id: Option<Uuid>,
    /// Only this customer.
    pub customer_id: Option<String>,
}

/// Counts by status and the units currently held.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// PENDING count.
    pub pending: i64,
    /// CONFIRMED count.
    pub confirmed: i64,
    /// CANCELLED count.
    pub cancelled: i64,
    /// EXPIRED count.
    pub expired: i64,
    /// Units held by PENDING reservations.
    pub reserved_quantity: i64,
}

fn ttl(seconds: Option<i32>) -> AppResult<Duration> {
    let seconds = seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(AppError::bad_input(format!(
            "ttlSeconds must be between 1 and {MAX_TTL_SECONDS}, got {seconds}"
        )));
    }
    Ok(Duration::seconds(seconds.into()))
}

pub(crate) fn validate(input: &Reserve) -> AppResult<Duration> {
    if input.lines.is_empty() {
        return Err(AppError::bad_input("at least one line is required"));
    }
    if input.lines.len() > MAX_BATCH_LINES {
        return Err(AppError::bad_input(format!(
            "at most {MAX_BATCH_LINES} lines per batch"
        )));
    }
    let mut total: i32 = 0;
    for line in &input.lines {
        positive("quantity", line.quantity)?;
        total = total.checked_add(line.quantity).ok_or_else(|| {
            AppError::bad_input(format!("the lines' quantities add up past {}", i32::MAX))
        })?;
    }
    optional_text("customerId", input.customer_id.clone(), 200)?;
    ttl(input.ttl_seconds)
}

/// Reserves every line or none, in the caller's transaction. Refusals for lack of stock are
/// `INSUFFICIENT_STOCK`; the caller records `reservation.failed` after rolling back.
pub async fn reserve(
    conn: &impl ConnectionTrait,
    input: Reserve,
) -> AppResult<Vec<reservation::Model>> {
    let lifetime = validate(&input)?;
    let operation = if input.lines.len() == 1 {
        "reserveStock"
    } else {
        "reserveStockBatch"
    };
    let claim = IdempotencyClaim::new(operation, input.idempotency_key.as_deref(), &input)?;
    if let Some(first) = idempotency::replay(conn, &claim).await? {
        return Ok(first);
    }
    let at = now();
    let batch_id = match input.lines.len() {
        1 => None,
        _ => Some(create_batch(conn, &input.customer_id, at).await?),
    };
    let mut made = Vec::with_capacity(input.lines.len());
    let mut events = Vec::new();
    for line in &input.lines {
        let change = stock::change_level(conn, &line.key, None, hold(line.quantity)).await?;
        let row = reservation::ActiveModel {
            id: Set(Uuid::now_v7()),
            batch_id: Set(batch_id),
            product_id: Set(line.key.product_id),
            store_id: Set(line.key.store_id.clone()),
            quantity: Set(line.quantity),
            status: Set(Status::Pending.as_str().to_owned()),
            customer_id: Set(input.customer_id.clone()),
            reason: Set(None),
            expires_at: Set(at + lifetime),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(conn)
        .await?;
        events.push(types::reservation_event(
            types::RESERVATION_CREATED,
            &row,
            &change.after,
        ));
        events.extend(types::threshold_events(&change.before, &change.after));
        made.push(row);
    }
    events::append(conn, events).await?;
    counts::record(conn, &created(&made)).await?;
    idempotency::remember(conn, &claim, &made).await?;
    Ok(made)
}

/// The counter moves of new reservations.
pub(crate) fn created(rows: &[reservation::Model]) -> Vec<counts::Move<'_>> {
    rows.iter()
        .map(|row| counts::Move {
            store_id: &row.store_id,
            from: None,
            to: Status::Pending,
            quantity: row.quantity,
        })
        .collect()
}

async fn create_batch(
    conn: &impl ConnectionTrait,
    customer_id: &Option<String>,
    at: DateTime<Utc>,
) -> AppResult<Uuid> {
    let id = Uuid::now_v7();
    reservation_batch::Entity::insert(reservation_batch::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id.clone()),
        created_at: Set(at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(id)
}

/// Plan for moving `units` from available to reserved.
fn hold(units: i32) -> impl Fn(&stock_level::Model) -> AppResult<Delta> {
    stock::needs_available(
        units,
        Delta {
            quantity: 0,
            reserved: units,
        },
    )
}

/// Records `reservation.failed` for the first line of `input` that cannot be served, in its own
/// transaction after the refused one rolled back. Lines of unknown levels are skipped.
pub async fn record_failure(conn: &impl ConnectionTrait, input: &Reserve) -> AppResult<()> {
    for line in &input.lines {
        let Some(level) = stock::find(conn, &line.key).await? else {
            continue;
        };
        if level.available() >= line.quantity {
            continue;
        }
        let event = types::reservation_failed(&level, line.quantity, &input.customer_id);
        events::append(conn, vec![event]).await?;
        return Ok(());
    }
    Ok(())
}

/// A reservation by id.
pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<reservation::Model>> {
    Ok(reservation::Entity::find_by_id(id).one(conn).await?)
}

async fn require(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<reservation::Model> {
    find(conn, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("reservation {id} does not exist")))
}

/// A page of reservations in creation order.
pub async fn list(
    conn: &impl ConnectionTrait,
    query: &ReservationQuery,
    page: &PageRequest<Uuid>,
) -> AppResult<Page<reservation::Model>> {
    let mut select = reservation::Entity::find();
    if let Some(after) = page.after {
        select = select.filter(Column::Id.gt(after));
    }
    if let Some(status) = query.status {
        select = select.filter(Column::Status.eq(status.as_str()));
    }
    if let Some(store) = &query.store_id {
        select = select.filter(Column::StoreId.eq(store.clone()));
    }
    if let Some(product) = query.product_id {
        select = select.filter(Column::ProductId.eq(product));
    }
    if let Some(customer) = &query.customer_id {
        select = select.filter(Column::CustomerId.eq(customer.clone()));
    }
    let filtered = query.status.is_some()
        || query.store_id.is_some()
        || query.product_id.is_some()
        || query.customer_id.is_some();
    let rows = keyset(conn, select, Column::Id, filtered, page.size).await?;
    Ok(split(rows, page.size))
}
