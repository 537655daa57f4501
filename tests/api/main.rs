//! The integration tests: one binary, one harness (`common`). Each module drives the real
//! `stockroom` binary on a random port over HTTP and WebSocket, against a SQLite file in a temp
//! dir, PostgreSQL, `redis-server` processes the tests start themselves, and RabbitMQ.

mod common;

mod abuse;
mod catalog;
mod connections;
mod durability;
mod events;
mod fair_use;
mod fencing;
mod graphql_http;
mod leadership;
mod live;
mod migrations;
mod postgres;
mod query_plans;
mod rabbitmq;
mod relay;
mod reservation_counts;
mod reservations;
mod schema;
mod search;
mod security;
mod settings;
mod sqlite_build;
mod stock;
mod stream_identity;
mod subscriptions;
