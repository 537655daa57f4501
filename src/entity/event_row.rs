//! `events`: the outbox and audit log, what happened, written once. A trigger gives every new
//! row its [`super::event_delivery`] row in the same transaction.

use sea_orm::entity::prelude::*;

/// An event as appended.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub store_id: Option<String>,
    pub product_id: Option<Uuid>,
    pub payload: Json,
    pub occurred_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
