//! `reservations`: units held for a customer until confirmed, cancelled or expired.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A reservation row; `status` is one of PENDING, CONFIRMED, CANCELLED, EXPIRED.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub batch_id: Option<Uuid>,
    pub product_id: Uuid,
    pub store_id: String,
    pub quantity: i32,
    pub status: String,
    pub customer_id: Option<String>,
    pub reason: Option<String>,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Relations are joined by hand in the domain layer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
