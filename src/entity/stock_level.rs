//! `stock_levels`: quantity and reservations of one product in one store, version-locked.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A stock level row. `available = quantity - reserved`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stock_levels")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub product_id: Uuid,
    pub store_id: String,
    pub quantity: i32,
    pub reserved: i32,
    pub reorder_point: i32,
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl Model {
    /// Units that can still be reserved or removed.
    pub fn available(&self) -> i32 {
        self.quantity - self.reserved
    }

    /// True when available stock is at or below the reorder point.
    pub fn is_low(&self) -> bool {
        self.available() <= self.reorder_point
    }
}

/// Relations are joined by hand in the domain layer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
