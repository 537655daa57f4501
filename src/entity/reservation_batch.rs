//! `reservation_batches`: a group of reservation lines made all-or-nothing.

use sea_orm::entity::prelude::*;

/// A batch row; its lines are the reservations with this `batch_id`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservation_batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: Option<String>,
    pub created_at: DateTimeUtc,
}

/// Relations are joined by hand in the domain layer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
