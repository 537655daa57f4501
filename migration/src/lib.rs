//! Schema migrations for Stockroom. Never edit a migration that has been applied; add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_catalog;
mod m20261123_000002_create_stock_and_reservations;
mod m20261123_000003_create_outbox;
mod m20261123_000004_pending_events_index;
mod m20261123_000005_event_delivery;
mod m20261201_000006_relay_term;
mod m20261201_000007_unpositioned_index;
mod m20261201_000008_list_indexes;
mod m20261201_000009_event_filter_keys;
mod m20261201_000010_reservation_counts;
mod m20261201_000011_product_search;

/// The ordered list of migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_catalog::Migration),
            Box::new(m20261123_000002_create_stock_and_reservations::Migration),
            Box::new(m20261123_000003_create_outbox::Migration),
            Box::new(m20261123_000004_pending_events_index::Migration),
            Box::new(m20261123_000005_event_delivery::Migration),
            Box::new(m20261201_000006_relay_term::Migration),
            Box::new(m20261201_000007_unpositioned_index::Migration),
            Box::new(m20261201_000008_list_indexes::Migration),
            Box::new(m20261201_000009_event_filter_keys::Migration),
            Box::new(m20261201_000010_reservation_counts::Migration),
            Box::new(m20261201_000011_product_search::Migration),
        ]
    }
}
