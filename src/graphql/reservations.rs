//! Reservations over GraphQL: the `Reservation` type, its queries and lifecycle mutations.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::auth::{Role, RoleGuard};
use super::loaders;
use super::products::Product;
use super::{connection, state};
use crate::batcher::{self, ReservationBatcher};
use crate::domain::reservations::{self, Line, Reserve, Status};
use crate::domain::{paging, stock::LevelKey};
use crate::entity::reservation;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Where a reservation is in its lifecycle.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReservationStatus {
    /// Holding units until confirmed, cancelled or expired.
    Pending,
    /// The units were sold.
    Confirmed,
    /// Released on request.
    Cancelled,
    /// Released when the TTL ran out.
    Expired,
}

impl From<ReservationStatus> for Status {
    fn from(status: ReservationStatus) -> Self {
        match status {
            ReservationStatus::Pending => Status::Pending,
            ReservationStatus::Confirmed => Status::Confirmed,
            ReservationStatus::Cancelled => Status::Cancelled,
            ReservationStatus::Expired => Status::Expired,
        }
    }
}

/// Units of one product in one store held for a customer.
pub struct Reservation(pub reservation::Model);

/// Units of one product in one store held for a customer.
#[Object]
impl Reservation {
    /// Unique id.
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The product.
    async fn product_id(&self) -> Uuid {
        self.0.product_id
    }
    /// The store.
    async fn store_id(&self) -> ID {
        ID(self.0.store_id.clone())
    }
    /// The product, batched across a page.
    async fn product(&self, ctx: &Context<'_>) -> Result<Product> {
        loaders::product(ctx, self.0.product_id)
            .await?
            .map(Product)
            .ok_or_else(|| AppError::not_found("the product of this reservation is gone").into())
    }
    /// Units held.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// Lifecycle state.
    async fn status(&self) -> Result<ReservationStatus> {
        match Status::parse(&self.0.status) {
            Some(Status::Pending) => Ok(ReservationStatus::Pending),
            Some(Status::Confirmed) => Ok(ReservationStatus::Confirmed),
            Some(Status::Cancelled) => Ok(ReservationStatus::Cancelled),
            Some(Status::Expired) => Ok(ReservationStatus::Expired),
            None => Err(AppError::Internal(format!("unknown status {:?}", self.0.status)).into()),
        }
    }
    /// Who the units are held for.
    async fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }
    /// The batch this reservation is a line of, if any.
    async fn batch_id(&self) -> Option<Uuid> {
        self.0.batch_id
    }
    /// Why it was cancelled or expired.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// When a PENDING reservation is released by itself.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When its state last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Counts of reservations by state.
#[derive(SimpleObject)]
pub struct ReservationStats {
    /// PENDING reservations.
    pub pending: i32,
    /// CONFIRMED reservations.
    pub confirmed: i32,
    /// CANCELLED reservations.
    pub cancelled: i32,
    /// EXPIRED reservations.
    pub expired: i32,
    /// Units held by PENDING reservations.
    pub reserved_quantity: i32,
}

/// Filters for `reservations`.
#[derive(InputObject, Default)]
pub struct ReservationFilter {
    /// Only this state.
    pub status: Option<ReservationStatus>,
    /// Only this store.
    pub store_id: Option<ID>,
    /// Only this product.
    pub product_id: Option<Uuid>,
    /// Only this customer.
    pub customer_id: Option<String>,
}

/// Holds units of one product in one store.
#[derive(InputObject)]
pub struct ReserveStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Units (> 0).
    pub quantity: i32,
    /// Who the units are held for.
    pub customer_id: Option<String>,
    /// Lifetime in seconds, 1–86400, default 900.
    pub ttl_seconds: Option<i32>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}

/// One line of a batch reservation.
#[derive(InputObject)]
pub struct ReserveLineInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Units (> 0).
    pub quantity: i32,
}

/// Holds several lines at once: all or none.
#[derive(InputObject)]
pub struct ReserveStockBatchInput {
    /// 1–100 lines.
    pub lines: Vec<ReserveLineInput>,
    /// Who the units are held for.
    pub customer_id: Option<String>,
    /// Lifetime in seconds, 1–86400, default 900.
    pub ttl_seconds: Option<i32>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}

/// Reservation queries.
#[derive(Default)]
pub struct ReservationQuery;

/// Reservation queries.
#[Object]
impl ReservationQuery {
    /// A reservation by id.
    async fn reservation(&self, ctx: &Context<'_>, id: Uuid) -> Result<Option<Reservation>> {
        Ok(reservations::find(&state(ctx).db.conn, id)
            .await?
            .map(Reservation))
    }

    /// Reservations in creation order, 20 per page by default, at most 100.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn reservations(
        &self,
        ctx: &Context<'_>,
        filter: Option<ReservationFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Reservation>> {
        let page = paging::request(
            first,
            super::page_limit(ctx),
            after.as_deref(),
            "reservation",
            |s| s.parse().ok(),
        )?;
        let filter = filter.unwrap_or_default();
        let query = reservations::ReservationQuery {
            status: filter.status.map(Status::from),
            store_id: filter.store_id.map(|s| s.0),
            product_id: filter.product_id,
            customer_id: filter.customer_id,
        };
        let rows = reservations::list(&state(ctx).db.conn, &query, &page).await?;
        let product = ctx
            .look_ahead()
            .field("edges")
            .field("node")
            .field("product");
        if product.exists() {
            let ids: Vec<Uuid> = rows.items.iter().map(|r| r.product_id).collect();
            loaders::prime_products(ctx, product, &ids).await?;
        }
        Ok(connection(
            rows,
            page.after.is_some(),
            |r| paging::encode("reservation", &r.id.to_string()),
            Reservation,
        ))
    }

    /// Counts by state, optionally for one store.
    async fn reservation_stats(
        &self,
        ctx: &Context<'_>,
        store_id: Option<ID>,
    ) -> Result<ReservationStats> {
        let stats =
            reservations::stats(&state(ctx).db.conn, store_id.as_ref().map(|s| s.as_str())).await?;
        let narrow = |n: i64| n.clamp(0, i64::from(i32::MAX)) as i32;
        Ok(ReservationStats {
            pending: narrow(stats.pending),
            confirmed: narrow(stats.confirmed),
            cancelled: narrow(stats.cancelled),
            expired: narrow(stats.expired),
            reserved_quantity: narrow(stats.reserved_quantity),
        })
    }
}

/// Reserves, and on `INSUFFICIENT_STOCK` records `reservation.failed` in its own transaction.
async fn reserve_recording_failure(
    state: &AppState,
    command: Reserve,
) -> AppResult<Vec<reservation::Model>> {
    if let Some(batcher) = state
        .reservations
        .as_ref()
        .filter(|_| ReservationBatcher::accepts(&command))
    {
        let outcome = batcher.reserve(command).await;
        count_outcome(&outcome);
        return outcome.map(|made| vec![made]);
    }
    let outcome = batcher::reserve_alone(&state.db, command).await;
    count_outcome(&outcome);
    outcome
}

/// Counts a reservation attempt in `stockroom_reservations_total{outcome}`.
fn count_outcome<T>(outcome: &AppResult<T>) {
    let label = match outcome {
        Ok(_) => "reserved",
        Err(AppError::InsufficientStock { .. }) => "insufficient_stock",
        Err(_) => "error",
    };
    metrics::counter!("stockroom_reservations_total", "outcome" => label).increment(1);
}

/// Reservation mutations (write).
#[derive(Default)]
pub struct ReservationMutation;

/// Reservation mutations (write).
#[Object]
impl ReservationMutation {
    /// Holds units for a customer until confirmed, cancelled or expired. Appends
    /// `reservation.created`; a refusal for lack of stock appends `reservation.failed`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn reserve_stock(
        &self,
        ctx: &Context<'_>,
        input: ReserveStockInput,
    ) -> Result<Reservation> {
        let command = Reserve {
            lines: vec![Line {
                key: LevelKey {
                    product_id: input.product_id,
                    store_id: input.store_id.0,
                },
                quantity: input.quantity,
            }],
            customer_id: input.customer_id,
            ttl_seconds: input.ttl_seconds,
            idempotency_key: input.idempotency_key,
        };
        let made = reserve_recording_failure(state(ctx), command).await?;
        made.into_iter()
            .next()
            .map(Reservation)
            .ok_or_else(|| AppError::Internal("reservation vanished".into()).into())
    }

    /// Holds every line or none.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn reserve_stock_batch(
        &self,
        ctx: &Context<'_>,
        input: ReserveStockBatchInput,
    ) -> Result<Vec<Reservation>> {
        let lines = input
            .lines
            .into_iter()
            .map(|l| Line {
                key: LevelKey {
                    product_id: l.product_id,
                    store_id: l.store_id.0,
                },
                quantity: l.quantity,
            })
            .collect();
        let command = Reserve {
            lines,
            customer_id: input.customer_id,
            ttl_seconds: input.ttl_seconds,
            idempotency_key: input.idempotency_key,
        };
        let made = reserve_recording_failure(state(ctx), command).await?;
        Ok(made.into_iter().map(Reservation).collect())
    }

    /// PENDING → CONFIRMED: the units are sold. Appends `reservation.confirmed`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn confirm_reservation(&self, ctx: &Context<'_>, id: Uuid) -> Result<Reservation> {
        let done = state(ctx)
            .db
            .write(move |txn| Box::pin(reservations::confirm(txn, id)))
            .await?;
        Ok(Reservation(done))
    }

    /// PENDING → CANCELLED: the units are released. Appends `reservation.cancelled`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn cancel_reservation(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Reservation> {
        let done = state(ctx)
            .db
            .write(move |txn| Box::pin(reservations::cancel(txn, id, reason.clone())))
            .await?;
        Ok(Reservation(done))
    }
}
