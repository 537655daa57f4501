//! SeaORM entities, one file per table.

pub mod event;
pub mod idempotency_key;
pub mod product;
pub mod relay_lease;
pub mod reservation;
pub mod reservation_batch;
pub mod stock_level;
pub mod store;
