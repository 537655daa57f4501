//! Stockroom: an inventory service with a GraphQL API over SeaORM and a transactional outbox.

/// Building and running the service.
pub mod app;
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
/// The GraphQL schema.
pub mod graphql;
/// The HTTP router.
pub mod http;
