//! The inputs of the stock queries and mutations.

use async_graphql::{ID, InputObject};
use uuid::Uuid;

/// Filters for `stockLevels`.
#[derive(InputObject, Default)]
pub struct StockLevelFilter {
    /// Only this store.
    pub store_id: Option<ID>,
    /// Only this product.
    pub product_id: Option<Uuid>,
    /// Only low (`true`) or only not low (`false`) levels.
    pub low_stock: Option<bool>,
}

/// Creates the stock level of a product in a store.
#[derive(InputObject)]
pub struct InitializeStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Starting quantity (≥ 0).
    pub quantity: i32,
    /// Reorder point (≥ 0), default 0.
    pub reorder_point: Option<i32>,
}

/// Sets the absolute quantity.
#[derive(InputObject)]
pub struct SetStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// New quantity (≥ reserved).
    pub quantity: i32,
    /// Refuse with `VERSION_CONFLICT` unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// Adds a signed delta.
#[derive(InputObject)]
pub struct AdjustStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Signed change, not zero.
    pub delta: i32,
    /// Refuse with `VERSION_CONFLICT` unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}

/// Moves units of one product between two stores, atomically.
#[derive(InputObject)]
pub struct TransferStockInput {
    /// The product.
    pub product_id: Uuid,
    /// Source store.
    pub from_store_id: ID,
    /// Destination store (must already stock the product).
    pub to_store_id: ID,
    /// Units to move (> 0).
    pub quantity: i32,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}
