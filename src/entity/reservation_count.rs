//! `reservation_counts`: how many reservations a store has in one state, and their units, in
//! one of a few slots (rows summed on read). Kept by `domain::reservations::counts` in the
//! transaction of every change.

use sea_orm::entity::prelude::*;

/// One slot of one store's counter for one state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservation_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub store_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub status: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub slot: i32,
    /// Reservations in this state (this slot's share).
    pub reservations: i64,
    /// Their units.
    pub units: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
