//! Shared live subscriptions over `graphql-transport-ws`: one rendering per event and
//! selection, byte for byte what async-graphql sends on its own, members that fall behind
//! going on by themselves, one push per change of a level, the live event equal to the logged
//! one, and the protocol's refusals.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::ws::{Item, LEGACY_WS, WAIT, WsClient};
use crate::common::*;

const ADJUST: &str = "mutation($p: UUID!, $d: Int!) {
  adjustStock(input: {productId: $p, storeId: \"s1\", delta: $d}) { version } }";
const EVENTS: &str =
    "subscription { inventoryEvents { id position type payload occurredAt publishedAt } }";

async fn adjust(admin: &Client, product: &str, delta: i32) {
    admin
        .data(ADJUST, json!({ "p": product, "d": delta }))
        .await;
}

/// Waits until `count` subscriptions are open on the server.
async fn subscribed(admin: &Client, count: usize) {
    eventually(WAIT, "subscriptions open", || async {
        match metric(admin, "stockroom_subscriptions_open").await {
            open if open == count as f64 => Ok(()),
            open => Err(open.to_string()),
        }
    })
    .await;
}

/// Waits until everything written is published, so "live from now" is past it.
async fn published(admin: &Client) {
    wait_for_outbox(admin, json!({ "pending": 0 })).await;
}

#[tokio::test]
async fn identical_subscriptions_render_each_event_once() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "SHARE", 100).await;
    published(&admin).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = WsClient::open(&server.url, READ_KEY).await;
        ws.subscribe("a", EVENTS, json!({})).await;
        clients.push(ws);
    }
    // Another selection: a cohort of its own.
    clients[0]
        .subscribe("b", "subscription { inventoryEvents { id } }", json!({}))
        .await;
    subscribed(&admin, 6).await;
    assert_eq!(metric(&admin, "stockroom_subscriptions_shared").await, 6.0);
    let before = metric(&admin, "stockroom_live_renders_total").await;
    for delta in [1, 2, 3] {
        adjust(&admin, &p, delta).await;
    }
    let mut seen = Vec::new();
    for ws in &mut clients {
        seen.push(ws.take_data("a", 3).await);
    }
    assert!(
        seen.iter().all(|s| s == &seen[0]),
        "every member got the same events"
    );
    assert_eq!(clients[0].take_data("b", 3).await.len(), 3);
    let renders = metric(&admin, "stockroom_live_renders_total").await - before;
    assert_eq!(
        renders, 6.0,
        "3 events × 2 selections, whatever the number of subscribers"
    );
}

/// Selections the shared path must render exactly as async-graphql does on its own. The flag
/// says whether async-graphql itself renders them the same way every time: it writes an
/// object's fields in the order their resolvers finish, so fields that await a loader
/// (`product`, `store`) come in either order on either path, and only the values can be
/// compared there.
const SELECTIONS: &[(&str, bool, &str)] = &[
    (
        "aliases, fragments, __typename, directives, variables",
        true,
        "subscription S($withPayload: Boolean!, $skipType: Boolean!) {
           inventoryEvents {
             __typename
             eventId: id
             ...Where
             type @skip(if: $skipType)
             payload @include(if: $withPayload)
             publishedAt
           } }
         fragment Where on InventoryEvent { cursor position storeId productId aggregateId }",
    ),
    (
        "nested objects",
        false,
        "subscription($s: ID) {
           stockLevelChanged(storeId: $s) {
             __typename quantity reserved available version lowStock updatedAt
             product { __typename sku name category }
             store { id name }
           } }",
    ),
    (
        "a filter in variables",
        true,
        "subscription($f: EventFilter) { inventoryEvents(filter: $f) { type position } }",
    ),
];

#[tokio::test]
async fn the_shared_path_sends_exactly_what_async_graphql_sends() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "EXACT", 100).await;
    published(&admin).await;
    let variables = json!({
        "withPayload": true, "skipType": false, "s": "s1",
        "f": { "types": ["stock.updated"], "storeId": "s1" }
    });
    // The legacy protocol is async-graphql's own WebSocket handling, subscriber by subscriber.
    let mut shared = WsClient::open(&server.url, READ_KEY).await;
    let mut generic = WsClient::connect(&server.url, LEGACY_WS).await;
    generic
        .init(json!({ "apiKey": READ_KEY }))
        .await
        .expect("acked");
    for (i, (_, _, query)) in SELECTIONS.iter().enumerate() {
        shared
            .subscribe(&i.to_string(), query, variables.clone())
            .await;
        generic
            .subscribe(&i.to_string(), query, variables.clone())
            .await;
    }
    subscribed(&admin, 2 * SELECTIONS.len()).await;
    assert_eq!(
        metric(&admin, "stockroom_subscriptions_shared").await,
        SELECTIONS.len() as f64
    );
    adjust(&admin, &p, 5).await;
    adjust(&admin, &p, -2).await;
    for (i, (what, deterministic, _)) in SELECTIONS.iter().enumerate() {
        let id = i.to_string();
        assert_eq!(
            shared.take_data(&id, 2).await,
            generic.take_data(&id, 2).await,
            "{what}: the same values"
        );
        let (ours, theirs) = (shared.raw_payloads(&id), generic.raw_payloads(&id));
        assert_eq!(ours.len(), 2);
        if *deterministic {
            assert_eq!(ours, theirs, "{what}: the same bytes");
        }
    }
}

#[tokio::test]
async fn a_member_that_falls_behind_goes_on_by_itself_without_loss() {
    // A short ring: the slow member falls off it.
    let server = Server::start_with(Options::default().env(&[("STOCKROOM_LIVE_RING", "64")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "BEHIND", 1_000_000).await;
    published(&admin).await;
    // Large frames (the payload 24 times, ~10 KB), so the socket buffers hold only a few
    // hundred.
    let aliases: Vec<String> = (1..=24).map(|i| format!("p{i}: payload")).collect();
    let query = format!(
        "subscription {{ inventoryEvents {{ position type {} }} }}",
        aliases.join(" ")
    );
    let query = query.as_str();
    let mut slow = WsClient::open_small_buffer(&server.url, READ_KEY, 8 * 1024).await;
    let mut fast = WsClient::open(&server.url, READ_KEY).await;
    slow.subscribe("1", query, json!({})).await;
    fast.subscribe("1", query, json!({})).await;
    subscribed(&admin, 2).await;
    // More events than a member's queue and the socket buffers hold, while `slow` reads nothing.
    const WRITES: usize = 1_500;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (admin, p) = (admin.clone(), p.clone());
            tokio::spawn(async move {
                for _ in 0..WRITES / 4 {
                    adjust(&admin, &p, 1).await;
                }
            })
        })
        .collect();
    let got_fast = fast.take_data("1", WRITES).await;
    for writer in writers {
        writer.await.expect("writer");
    }
    let got_slow = slow.take_data("1", WRITES).await;
    let behind = metric(&admin, "stockroom_subscriptions_fell_behind_total").await;
    assert!(behind >= 1.0, "the slow member fell behind");
    let positions = |got: &[Value]| -> Vec<i64> {
        got.iter()
            .map(|d| d["inventoryEvents"]["position"].as_i64().expect("position"))
            .collect()
    };
    let expected: Vec<i64> = (2..2 + WRITES as i64).collect();
    assert_eq!(
        positions(&got_fast),
        expected,
        "in order, none missing or repeated"
    );
    assert_eq!(
        positions(&got_slow),
        expected,
        "in order, none missing or repeated"
    );
    slow.assert_quiet("1", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_level_is_pushed_once_per_change_and_live_events_equal_the_log() {
    let server = Server::start();
    let admin = server.admin();
    // Reorder point 5: going from 10 to 3 available crosses it (stock.updated, then stock.low).
    let p = create_product(&admin, "ONCE").await;
    create_store(&admin, "s1").await;
    init_stock(&admin, &p, "s1", 10, 5).await;
    published(&admin).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe(
        "levels",
        "subscription { stockLevelChanged { version available } }",
        json!({}),
    )
    .await;
    ws.subscribe("events", EVENTS, json!({})).await;
    subscribed(&admin, 2).await;
    adjust(&admin, &p, -7).await;
    adjust(&admin, &p, 1).await;
    let levels = ws.take_data("levels", 2).await;
    assert_eq!(
        levels,
        vec![
            json!({ "stockLevelChanged": { "version": 2, "available": 3 } }),
            json!({ "stockLevelChanged": { "version": 3, "available": 4 } }),
        ]
    );
    ws.assert_quiet("levels", Duration::from_millis(300)).await;
    let live = ws.take_data("events", 3).await;
    let logged = events(&admin, 4).await;
    let types: Vec<&str> = live
        .iter()
        .map(|e| e["inventoryEvents"]["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["stock.updated", "stock.low", "stock.updated"]);
    for (live, logged) in live.iter().zip(&logged[1..]) {
        let live = &live["inventoryEvents"];
        for field in ["id", "type", "payload", "occurredAt", "publishedAt"] {
            assert_eq!(live[field], logged[field], "{field} of {}", logged["id"]);
        }
    }
}

#[tokio::test]
async fn protocol_refusals_follow_the_graphql_transport_ws_document() {
    let server = Server::start();
    let admin = server.admin();
    seed(&admin, "s1", "PROTO", 1).await;

    // Validation errors: `error`, and nothing else for that id.
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe(
        "bad",
        "subscription { inventoryEvents { noSuchField } }",
        json!({}),
    )
    .await;
    match ws.item("bad", WAIT).await {
        Ok(Item::Error(errors)) => {
            assert_eq!(
                errors[0]["extensions"]["code"], "BAD_USER_INPUT",
                "{errors}"
            );
        }
        other => panic!("expected error, got {other:?}"),
    }
    ws.assert_quiet("bad", Duration::from_millis(200)).await;

    // An id already in use: 4409.
    ws.subscribe("1", EVENTS, json!({})).await;
    subscribed(&admin, 1).await;
    ws.subscribe("1", EVENTS, json!({})).await;
    let closed = ws.wait_closed(WAIT).await;
    assert_eq!(closed.code, 4409, "{closed:?}");
    assert_eq!(closed.reason, "Subscriber for 1 already exists");

    // Not JSON, or not a known message: 4400 with a valid close frame.
    for text in [
        "not json".to_owned(),
        json!({ "type": "subscribe" }).to_string(),
        json!({ "type": "no_such_type", "x": "y".repeat(500) }).to_string(),
    ] {
        let mut ws = WsClient::open(&server.url, READ_KEY).await;
        ws.send_text(text.clone()).await;
        let closed = ws.wait_closed(WAIT).await;
        assert_eq!(closed.code, 4400, "{text}: {closed:?}");
        assert!(closed.reason.len() <= 123, "{closed:?}");
    }

    // A second connection_init: 4429.
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.send(json!({ "type": "connection_init", "payload": { "apiKey": READ_KEY } }))
        .await;
    assert_eq!(ws.wait_closed(WAIT).await.code, 4429);
}
