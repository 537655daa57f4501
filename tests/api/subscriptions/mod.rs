//! Live subscriptions over a real WebSocket (`graphql-transport-ws`, and the legacy
//! `graphql-ws`): order, filters, resume with `after`, slow subscribers, `stockLevelChanged`,
//! authentication, limits, cross-process delivery through Redis and RabbitMQ, and shutdown.

use std::time::{Duration, Instant};

use crate::common::rabbitmq::{Exchange, broker_url};
use crate::common::redis_server::RedisServer;
use crate::common::ws::{Closed, Item, LEGACY_WS, TRANSPORT_WS, WAIT, WsClient};
use crate::common::*;
use serde_json::{Value, json};

mod connection;
mod delivery;

const EVENTS: &str = "subscription($after: String, $filter: EventFilter) {
  inventoryEvents(after: $after, filter: $filter) {
    id cursor position type storeId productId payload occurredAt } }";
const LEVELS: &str = "subscription($p: UUID, $s: ID) {
  stockLevelChanged(productId: $p, storeId: $s) {
    productId storeId quantity reserved available version lowStock } }";
const ADJUST: &str = "mutation($p: UUID!, $s: ID!, $d: Int!) {
  adjustStock(input: {productId: $p, storeId: $s, delta: $d}) { version } }";
const RESERVE: &str = "mutation($p: UUID!, $s: ID!, $q: Int!) {
  reserveStock(input: {productId: $p, storeId: $s, quantity: $q}) { id } }";
const BATCH: &str = "mutation($lines: [ReserveLineInput!]!) {
  reserveStockBatch(input: {lines: $lines}) { id } }";

/// Variables of a subscription to `stock.updated` only.
static UPDATES: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "filter": { "types": ["stock.updated"] } }));

fn env(pairs: &[(&str, &str)]) -> Options {
    Options::default().env(pairs)
}

/// Waits until the server holds `count` open subscriptions, so that "live from now" starts
/// before the test writes.
async fn wait_subscribed(client: &Client, count: usize) {
    let deadline = Instant::now() + WAIT;
    while metric(client, "stockroom_subscriptions_open").await < count as f64 {
        assert!(Instant::now() < deadline, "subscriptions did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_subscribed_exactly(client: &Client, count: usize) {
    let deadline = Instant::now() + WAIT;
    while metric(client, "stockroom_subscriptions_open").await != count as f64 {
        assert!(Instant::now() < deadline, "subscriptions did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn adjust(client: &Client, product: &str, store: &str, delta: i32) {
    client
        .data(ADJUST, json!({ "p": product, "s": store, "d": delta }))
        .await;
}

/// Waits until every event written so far is published, so that a live subscription opened now
/// starts after them.
async fn published(client: &Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let outbox = client.data("{ outbox { pending } }", json!({})).await;
        if outbox["outbox"]["pending"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server's feed (reading while a subscriber listens) has forwarded the first
/// `count` events of the log.
async fn settle(client: &Client, count: usize) {
    let deadline = Instant::now() + WAIT;
    while metric(client, "stockroom_feed_position").await < count as f64 {
        assert!(Instant::now() < deadline, "the feed did not reach {count}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `inventoryEvents` nodes of `data` payloads.
fn nodes(data: Vec<Value>) -> Vec<Value> {
    data.into_iter()
        .map(|d| d["inventoryEvents"].clone())
        .collect()
}

/// Positions strictly increasing by one.
fn assert_contiguous(events: &[Value]) {
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().expect("position"))
        .collect();
    for pair in positions.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no gap, no duplicate: {positions:?}");
    }
}

async fn wait_subscribed_below(client: &Client, count: usize) {
    let deadline = Instant::now() + WAIT;
    while metric(client, "stockroom_subscriptions_open").await >= count as f64 {
        assert!(Instant::now() < deadline, "subscriptions did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
