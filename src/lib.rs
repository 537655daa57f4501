//! Stockroom: an inventory service with a GraphQL API over SeaORM and a transactional outbox.

/// Building and running the service.
pub mod app;
/// API keys and roles.
pub mod auth;
/// The reservation batcher (its queue and task).
pub mod batcher;
/// The clock every timestamp comes from.
pub mod clock;
/// Settings from flags and environment.
pub mod config;
/// Connection setup and the write-transaction helper.
pub mod db;
/// Business rules per aggregate.
pub mod domain;
/// SeaORM entities.
pub mod entity;
/// The one application error type.
pub mod error;
/// Outbox, relay, brokers and the live feed.
pub mod events;
/// Fair use: caps, cost buckets and load shedding.
pub mod fair_use;
/// The GraphQL schema.
pub mod graphql;
/// The HTTP router.
pub mod http;
/// The services every request shares.
pub mod state;
