//! `relay_leases`: which process currently runs the relay for this database.

use sea_orm::entity::prelude::*;

/// A lease row: `holder` owns the relay until `expires_at`, in its `term` (which grows by one
/// at every takeover).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "relay_leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub holder: String,
    pub expires_at: DateTimeUtc,
    pub term: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
