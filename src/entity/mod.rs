//! SeaORM entities, one file per table (and `event` over the `event_log` view).

pub mod event;
pub mod event_delivery;
pub mod event_row;
pub mod idempotency_key;
pub mod product;
pub mod relay_lease;
pub mod reservation;
pub mod reservation_batch;
pub mod reservation_count;
pub mod stock_level;
pub mod store;
