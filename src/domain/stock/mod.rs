//! Stock levels: initialize, set, adjust and transfer under optimistic locking.
//!
//! Every write is `UPDATE … SET …, version = version + 1 WHERE id = ? AND version = ? AND
//! <guard>`. Zero rows means another writer won: re-read and retry (bounded), or return
//! `VERSION_CONFLICT` when the client named the version it expected. The guard in SQL keeps
//! `quantity >= reserved >= 0` even if the checks above it had a bug, and CHECK constraints
//! back it up once more.
//!
//! This file holds the types, lookups and listings; `change` the guarded write every command
//! goes through; `commands` initialize, set, adjust and transfer.

mod change;
mod commands;

pub use change::{Change, Delta, change_level, needs_available, take_available};
pub use commands::{adjust, initialize, set, transfer};

use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::idempotency::{self, IdempotencyClaim};
use super::paging::{Page, PageRequest, keyset, split};
use super::{now, products, stores};
use crate::entity::stock_level::{self, Column};
use crate::error::{AppError, AppResult, is_unique_violation};
use crate::events::{self, NewEvent, types};

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

/// A page of stock levels in creation order.
pub async fn list(
    conn: &impl ConnectionTrait,
    query: &LevelQuery,
    page: &PageRequest<i64>,
) -> AppResult<Page<stock_level::Model>> {
    let mut select = stock_level::Entity::find();
    if let Some(after) = page.after {
        select = select.filter(Column::Id.gt(after));
    }
    if let Some(store) = &query.store_id {
        select = select.filter(Column::StoreId.eq(store.clone()));
    }
    if let Some(product) = query.product_id {
        select = select.filter(Column::ProductId.eq(product));
    }
    // The generated column `quantity - reserved <= reorder_point` (migration 8), named bare so
    // that the partial indexes over low levels (`WHERE low_stock`) match the condition.
    let low = Expr::col((stock_level::Entity, Alias::new("low_stock")));
    select = match query.low_stock {
        Some(true) => select.filter(low),
        Some(false) => select.filter(low.not()),
        None => select,
    };
    // Levels that are not low are most of them: the walk in id order finds a page at once.
    let filtered =
        query.store_id.is_some() || query.product_id.is_some() || query.low_stock == Some(true);
    let rows = keyset(conn, select, Column::Id, filtered, page.size).await?;
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
