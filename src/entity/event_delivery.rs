//! `event_delivery`: one narrow row per event, its place in the log and its delivery state.
//! The relay writes these twice per event (position, then publication); keeping them apart from
//! the payload makes those writes touch a few pages per batch instead of every row's page. The
//! event's filter keys are copied here too, so the log can be read by filter in position order.

use sea_orm::entity::prelude::*;

/// An event's delivery state; `seq` is the event's.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_delivery")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// Place in the log, given by the relay in commit-visible order.
    pub position: Option<i64>,
    /// When the broker confirmed it.
    pub published_at: Option<DateTimeUtc>,
    /// Times the broker rejected it.
    pub attempts: i32,
    /// The broker's last rejection.
    pub last_error: Option<String>,
    /// When it was given up on.
    pub dead_at: Option<DateTimeUtc>,
    /// The event's type, copied from `events` when it is appended: with `store_id` and
    /// `product_id`, the keys the log's filter indexes hold beside the position.
    pub event_type: Option<String>,
    /// The event's store, copied from `events`.
    pub store_id: Option<String>,
    /// The event's product, copied from `events`.
    pub product_id: Option<Uuid>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
