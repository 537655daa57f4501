//! `event_log`: the view readers use, each event (`events`) with its delivery state
//! (`event_delivery`). `position` is given by the relay, in commit-visible order.
//!
//! Read-only: events are appended through [`super::event_row`], and the relay writes delivery
//! state through [`super::event_delivery`].

use sea_orm::entity::prelude::*;

/// An event with its delivery state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub store_id: Option<String>,
    pub product_id: Option<Uuid>,
    pub payload: Json,
    pub occurred_at: DateTimeUtc,
    pub position: Option<i64>,
    pub published_at: Option<DateTimeUtc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
