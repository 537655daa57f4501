//! Stock levels: initialize, set, adjust and transfer under optimistic locking.
//!
//! Every write is `UPDATE … SET …, version = version + 1 WHERE id = ? AND version = ? AND
//! <guard>`. Zero rows means another writer won: re-read and retry (bounded), or return
//! `VERSION_CONFLICT` when the client named the version it expected. The guard in SQL keeps
//! `quantity >= reserved >= 0` even if the checks above it had a bug, and CHECK constraints
//! back it up once more.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::idempotency::{self, IdempotencyClaim};
use super::paging::{Page, PageRequest, split};
use super::{now, products, stores};
use crate::entity::stock_level::{self, Column};
use crate::error::{AppError, AppResult, is_unique_violation};
use crate::events::{self, NewEvent, types};

/// How often a stock write is retried after losing an optimistic race.
const MAX_ATTEMPTS: usize = 16;

/// Identifies a stock level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LevelKey {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: String,
}

/// `initializeStock` input.
#[derive(Debug, Clone, Serialize)]
pub struct InitializeStock {
    /// Which level.
    pub key: LevelKey,
    /// Starting quantity (≥ 0).
    pub quantity: i32,
    /// Reorder point (≥ 0); default 0.
    pub reorder_point: Option<i32>,
}

/// `setStock` input.
#[derive(Debug, Clone, Serialize)]
pub struct SetStock {
    /// Which level.
    pub key: LevelKey,
    /// New absolute quantity (≥ 0).
    pub quantity: i32,
    /// Refuse unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// `adjustStock` input.
#[derive(Debug, Clone, Serialize)]
pub struct AdjustStock {
    /// Which level.
    pub key: LevelKey,
    /// Signed change; not zero.
    pub delta: i32,
    /// Refuse unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Replays the first result when repeated.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

/// `transferStock` input.
#[derive(Debug, Clone, Serialize)]
pub struct TransferStock {
    /// The product moved.
    pub product_id: Uuid,
    /// Source store.
    pub from_store_id: String,
    /// Destination store.
    pub to_store_id: String,
    /// Units moved (> 0).
    pub quantity: i32,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Replays the first result when repeated.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

/// Result of a transfer: both levels after the move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transfer {
    /// Source level after the move.
    pub from: stock_level::Model,
    /// Destination level after the move.
    pub to: stock_level::Model,
    /// Units moved.
    pub quantity: i32,
}

/// A change to apply to a level: added to `quantity` and to `reserved`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    /// Added to quantity.
    pub quantity: i32,
    /// Added to reserved.
    pub reserved: i32,
}

/// A level before and after one write.
#[derive(Debug, Clone)]
pub struct Change {
    /// State read before the write.
    pub before: stock_level::Model,
    /// State written.
    pub after: stock_level::Model,
}

/// Which stock levels to list.
#[derive(Debug, Clone, Default)]
pub struct LevelQuery {
    /// Only this store.
    pub store_id: Option<String>,
    /// Only this product.
    pub product_id: Option<Uuid>,
    /// Only low (`true`) or only not low (`false`).
    pub low_stock: Option<bool>,
}

fn non_negative(field: &str, value: i32) -> AppResult<i32> {
    if value < 0 {
        return Err(AppError::bad_input(format!(
            "{field} must not be negative, got {value}"
        )));
    }
    Ok(value)
}

/// Checks a quantity that must be positive.
pub fn positive(field: &str, value: i32) -> AppResult<i32> {
    if value <= 0 {
        return Err(AppError::bad_input(format!(
            "{field} must be positive, got {value}"
        )));
    }
    Ok(value)
}

/// A level, if it exists.
pub async fn find(
    conn: &impl ConnectionTrait,
    key: &LevelKey,
) -> AppResult<Option<stock_level::Model>> {
    Ok(stock_level::Entity::find()
        .filter(Column::ProductId.eq(key.product_id))
        .filter(Column::StoreId.eq(key.store_id.clone()))
        .one(conn)
        .await?)
}

/// A level, or `NOT_FOUND`.
pub async fn require(conn: &impl ConnectionTrait, key: &LevelKey) -> AppResult<stock_level::Model> {
    find(conn, key).await?.ok_or_else(|| {
        AppError::not_found(format!(
            "no stock level for product {} in store {:?}",
            key.product_id, key.store_id
        ))
    })
}

/// Applies `delta` to `level` if nobody changed it since it was read. False when someone did.
async fn write_if_unchanged(
    conn: &impl ConnectionTrait,
    level: &stock_level::Model,
    delta: Delta,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<bool> {
    let quantity_after = Expr::col(Column::Quantity).add(delta.quantity);
    let reserved_after = Expr::col(Column::Reserved).add(delta.reserved);
    let result = stock_level::Entity::update_many()
        .col_expr(Column::Quantity, quantity_after.clone())
        .col_expr(Column::Reserved, reserved_after.clone())
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(level.id))
        .filter(Column::Version.eq(level.version))
        .filter(reserved_after.clone().gte(0))
        .filter(quantity_after.gte(reserved_after))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Applies a change planned from the current state, retrying when another writer wins the race.
/// `plan` sees the state just read and refuses or returns the delta.
pub async fn change_level(
    conn: &impl ConnectionTrait,
    key: &LevelKey,
    expected_version: Option<i32>,
    plan: impl Fn(&stock_level::Model) -> AppResult<Delta>,
) -> AppResult<Change> {
    for _ in 0..MAX_ATTEMPTS {
        let before = require(conn, key).await?;
        if let Some(expected) = expected_version.filter(|v| *v != before.version) {
            return Err(AppError::VersionConflict {
                expected,
                current: before.version,
            });
        }
        let delta = plan(&before)?;
        let after = stock_level::Model {
            quantity: checked("quantity", before.quantity, delta.quantity)?,
            reserved: checked("reserved", before.reserved, delta.reserved)?,
            version: before.version + 1,
            updated_at: now(),
            ..before.clone()
        };
        if write_if_unchanged(conn, &before, delta, after.updated_at).await? {
            return Ok(Change { before, after });
        }
    }
    Err(AppError::Internal(format!(
        "stock level {}:{} stayed contended after {MAX_ATTEMPTS} attempts",
        key.product_id, key.store_id
    )))
}

fn checked(field: &str, value: i32, delta: i32) -> AppResult<i32> {
    value
        .checked_add(delta)
        .ok_or_else(|| AppError::bad_input(format!("{field} would overflow")))
}

/// Plan for removing `units` from available stock.
pub fn take_available(units: i32) -> impl Fn(&stock_level::Model) -> AppResult<Delta> {
    move |level| {
        if level.available() < units {
            return Err(AppError::InsufficientStock {
                requested: units,
                available: level.available(),
            });
        }
        Ok(Delta {
            quantity: -units,
            reserved: 0,
        })
    }
}

/// `stock.updated` plus any threshold events for a change.
fn updated_events(change: &Change, reason: &Option<String>) -> Vec<NewEvent> {
    let Change { before, after } = change;
    let mut events = vec![types::stock_event(
        types::STOCK_UPDATED,
        after,
        json!({
            "product_id": after.product_id,
            "store_id": after.store_id,
            "previous_quantity": before.quantity,
            "new_quantity": after.quantity,
            "change": after.quantity - before.quantity,
            "reserved": after.reserved,
            "available": after.available(),
            "version": after.version,
            "reason": reason,
        }),
    )];
    events.extend(types::threshold_events(before, after));
    events
}

/// Creates a stock level for an existing product and store.
pub async fn initialize(
    conn: &impl ConnectionTrait,
    input: InitializeStock,
) -> AppResult<stock_level::Model> {
    let quantity = non_negative("quantity", input.quantity)?;
    let reorder_point = non_negative("reorderPoint", input.reorder_point.unwrap_or(0))?;
    products::require(conn, input.key.product_id).await?;
    stores::require(conn, &input.key.store_id).await?;
    let at = now();
    let row = stock_level::ActiveModel {
        product_id: Set(input.key.product_id),
        store_id: Set(input.key.store_id.clone()),
        quantity: Set(quantity),
        reserved: Set(0),
        reorder_point: Set(reorder_point),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    };
    let level = row.insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            AppError::AlreadyExists(format!(
                "product {} already has a stock level in store {:?}",
                input.key.product_id, input.key.store_id
            ))
        } else {
            e.into()
        }
    })?;
    let event = types::stock_event(
        types::STOCK_CREATED,
        &level,
        json!({
            "product_id": level.product_id,
            "store_id": level.store_id,
            "quantity": level.quantity,
            "reserved": level.reserved,
            "available": level.available(),
            "reorder_point": level.reorder_point,
            "version": level.version,
            "reason": "initialized",
        }),
    );
    events::append(conn, vec![event]).await?;
    Ok(level)
}

/// Sets the absolute quantity; it may not drop below what is reserved.
pub async fn set(conn: &impl ConnectionTrait, input: SetStock) -> AppResult<stock_level::Model> {
    let target = non_negative("quantity", input.quantity)?;
    let change = change_level(conn, &input.key, input.expected_version, |level| {
        if target < level.reserved {
            return Err(AppError::InsufficientStock {
                requested: level.quantity - target,
                available: level.available(),
            });
        }
        Ok(Delta {
            quantity: target - level.quantity,
            reserved: 0,
        })
    })
    .await?;
    events::append(conn, updated_events(&change, &input.reason)).await?;
    Ok(change.after)
}

/// Adds a signed delta; a negative one may not take more than is available.
pub async fn adjust(
    conn: &impl ConnectionTrait,
    input: AdjustStock,
) -> AppResult<stock_level::Model> {
    if input.delta == 0 {
        return Err(AppError::bad_input("delta must not be zero"));
    }
    let claim = IdempotencyClaim::new("adjustStock", input.idempotency_key.as_deref(), &input)?;
    if let Some(first) = idempotency::replay(conn, &claim).await? {
        return Ok(first);
    }
    let delta = input.delta;
    let change = if delta < 0 {
        let units = delta.checked_neg().ok_or_else(|| {
            AppError::bad_input(format!("delta must be greater than {}", i32::MIN))
        })?;
        change_level(
            conn,
            &input.key,
            input.expected_version,
            take_available(units),
        )
        .await?
    } else {
        change_level(conn, &input.key, input.expected_version, |_| {
            Ok(Delta {
                quantity: delta,
                reserved: 0,
            })
        })
        .await?
    };
    events::append(conn, updated_events(&change, &input.reason)).await?;
    idempotency::remember(conn, &claim, &change.after).await?;
    Ok(change.after)
}

/// Moves units between two stores of one product, in the caller's transaction.
pub async fn transfer(conn: &impl ConnectionTrait, input: TransferStock) -> AppResult<Transfer> {
    let quantity = positive("quantity", input.quantity)?;
    if input.from_store_id == input.to_store_id {
        return Err(AppError::bad_input("fromStoreId and toStoreId must differ"));
    }
    let claim = IdempotencyClaim::new("transferStock", input.idempotency_key.as_deref(), &input)?;
    if let Some(first) = idempotency::replay(conn, &claim).await? {
        return Ok(first);
    }
    let from_key = LevelKey {
        product_id: input.product_id,
        store_id: input.from_store_id.clone(),
    };
    let to_key = LevelKey {
        product_id: input.product_id,
        store_id: input.to_store_id.clone(),
    };
    require(conn, &to_key).await?;
    let source = change_level(conn, &from_key, None, take_available(quantity)).await?;
    let destination = change_level(conn, &to_key, None, |_| {
        Ok(Delta {
            quantity,
            reserved: 0,
        })
    })
    .await?;
    let mut events = vec![types::stock_event(
        types::STOCK_TRANSFERRED,
        &source.after,
        json!({
            "product_id": input.product_id,
            "from_store": input.from_store_id,
            "to_store": input.to_store_id,
            "quantity": quantity,
            "reason": input.reason,
        }),
    )];
    events[0].payload["levels"] = json!([
        types::level_state(&source.after),
        types::level_state(&destination.after)
    ]);
    events.extend(types::threshold_events(&source.before, &source.after));
    events::append(conn, events).await?;
    let transfer = Transfer {
        from: source.after,
        to: destination.after,
        quantity,
    };
    idempotency::remember(conn, &claim, &transfer).await?;
    Ok(transfer)
}

/// A page of stock levels in creation order.
pub async fn list(
    conn: &impl ConnectionTrait,
    query: &LevelQuery,
    page: &PageRequest<i64>,
) -> AppResult<Page<stock_level::Model>> {
    let mut select = stock_level::Entity::find().order_by_asc(Column::Id);
    if let Some(after) = page.after {
        select = select.filter(Column::Id.gt(after));
    }
    if let Some(store) = &query.store_id {
        select = select.filter(Column::StoreId.eq(store.clone()));
    }
    if let Some(product) = query.product_id {
        select = select.filter(Column::ProductId.eq(product));
    }
    let low = Expr::col(Column::Quantity)
        .sub(Expr::col(Column::Reserved))
        .lte(Expr::col(Column::ReorderPoint));
    select = match query.low_stock {
        Some(true) => select.filter(low),
        Some(false) => select.filter(low.not()),
        None => select,
    };
    let rows = select.limit(page.size + 1).all(conn).await?;
    Ok(split(rows, page.size))
}

/// Stock levels of the given products, for the loader.
pub async fn for_products(
    conn: &impl ConnectionTrait,
    ids: &[Uuid],
) -> AppResult<Vec<stock_level::Model>> {
    Ok(stock_level::Entity::find()
        .filter(Column::ProductId.is_in(ids.iter().copied()))
        .order_by_asc(Column::Id)
        .all(conn)
        .await?)
}
