//! Events: types and payloads, the outbox append, brokers, the relay and the live feed.

pub mod broker;
pub mod feed;
pub mod log;
pub mod outbox;
pub mod relay;
pub mod types;

pub use outbox::{NewEvent, append};
