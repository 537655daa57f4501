//! The connection: keys at `connection_init`, the legacy protocol, the per-connection cap,
//! timeouts, keepalives, message size, and SIGTERM.

use super::*;

#[tokio::test]
async fn missing_or_unknown_keys_are_refused() {
    let server = Server::start();
    // No key.
    let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
    let closed = ws.init(json!({})).await.unwrap_err();
    assert_eq!(closed.code, 4403, "{closed:?}");
    // Unknown key, both spellings.
    let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
    let closed = ws.init(json!({ "apiKey": "nope" })).await.unwrap_err();
    assert_eq!(closed.code, 4403);
    let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
    let closed = ws
        .init(json!({ "Authorization": "Bearer nope" }))
        .await
        .unwrap_err();
    assert_eq!(closed.code, 4403);
    // The header spelling of a good key works.
    let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
    ws.init(json!({ "Authorization": format!("Bearer {READ_KEY}") }))
        .await
        .expect("acked");
    // Subscribing before connection_init.
    let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
    ws.subscribe("1", EVENTS, json!({})).await;
    assert_eq!(ws.wait_closed(WAIT).await.code, 4401);
    // Legacy protocol: connection_error, then the close.
    let mut ws = WsClient::connect(&server.url, LEGACY_WS).await;
    let closed = ws.init(json!({ "apiKey": "nope" })).await.unwrap_err();
    assert_eq!(closed.code, 4403, "{closed:?}");
    // No subprotocol at all.
    let refused = tokio_tungstenite::connect_async(crate::common::ws::ws_url(&server.url)).await;
    assert!(
        refused.is_err(),
        "an upgrade without a GraphQL subprotocol is refused"
    );
}

#[tokio::test]
async fn legacy_graphql_ws_protocol_streams_events() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "LEGACY", 10).await;
    published(&admin).await;
    let mut ws = WsClient::connect(&server.url, LEGACY_WS).await;
    ws.init(json!({ "apiKey": READ_KEY })).await.expect("acked");
    ws.subscribe("1", EVENTS, UPDATES.clone()).await;
    wait_subscribed(&admin, 1).await;
    adjust(&admin, &p, "s1", 2).await;
    adjust(&admin, &p, "s1", -1).await;
    let got = nodes(ws.take_data("1", 2).await);
    assert_eq!(ids(&got), ids(&events(&admin, 3).await[1..]));
    ws.complete("1").await;
    assert!(matches!(ws.item("1", WAIT).await, Ok(Item::Complete)));
    wait_subscribed_below(&admin, 1).await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let server = Server::start_with(env(&[("STOCKROOM_WS_MAX_SUBSCRIPTIONS", "3")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "CAP", 10).await;
    published(&admin).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    for id in ["1", "2", "3"] {
        ws.subscribe(id, EVENTS, json!({})).await;
    }
    wait_subscribed(&admin, 3).await;
    ws.subscribe("4", LEVELS, json!({})).await;
    // The protocol's `error` message: the operation is refused, and nothing else follows for it.
    match ws.item("4", WAIT).await {
        Ok(Item::Error(errors)) => {
            assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT");
            assert!(
                errors[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("too many subscriptions")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    ws.assert_quiet("4", Duration::from_millis(200)).await;
    // Another connection has its own allowance.
    let mut other = WsClient::open(&server.url, READ_KEY).await;
    other.subscribe("1", EVENTS, json!({})).await;
    wait_subscribed(&admin, 4).await;
    // Completing one frees a slot.
    // The client's `complete` ends it; the server sends nothing more for it.
    ws.complete("2").await;
    wait_subscribed_below(&admin, 4).await;
    ws.assert_quiet("2", Duration::from_millis(100)).await;
    ws.subscribe("5", EVENTS, json!({})).await;
    wait_subscribed(&admin, 4).await;
    adjust(&admin, &p, "s1", 1).await;
    for id in ["1", "3", "5"] {
        let event = ws.next_data(id).await;
        assert_eq!(event["inventoryEvents"]["type"], "stock.updated");
    }
    other.next_data("1").await;
}

#[tokio::test]
async fn init_timeout_keepalive_and_message_size() {
    let server = Server::start_with(env(&[
        ("STOCKROOM_WS_INIT_TIMEOUT_MS", "300"),
        ("STOCKROOM_WS_KEEPALIVE_MS", "100"),
        ("STOCKROOM_WS_MAX_MESSAGE_BYTES", "4096"),
    ]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "KEEP", 10).await;

    // No connection_init in time.
    let started = Instant::now();
    let mut silent = WsClient::connect(&server.url, TRANSPORT_WS).await;
    let closed = silent.wait_closed(WAIT).await;
    assert_eq!(closed.code, 4408, "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Pings keep coming while the client only listens, and the connection stays open.
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("1", EVENTS, json!({})).await;
    wait_subscribed(&admin, 1).await;
    ws.assert_quiet("1", Duration::from_millis(1200)).await;
    assert!(ws.keepalives >= 5, "pings: {}", ws.keepalives);
    adjust(&admin, &p, "s1", 1).await;
    ws.next_data("1").await;

    // Legacy clients get `ka`.
    let mut legacy = WsClient::connect(&server.url, LEGACY_WS).await;
    legacy
        .init(json!({ "apiKey": READ_KEY }))
        .await
        .expect("acked");
    legacy.assert_quiet("x", Duration::from_millis(500)).await;
    assert!(legacy.keepalives >= 2);

    // A message over the limit ends the connection.
    let query = format!(
        "subscription {{ inventoryEvents {{ id }} }} #{}",
        "x".repeat(8000)
    );
    ws.send(json!({ "id": "big", "type": "subscribe", "payload": { "query": query } }))
        .await;
    let closed = ws.wait_closed(WAIT).await;
    assert_ne!(closed.code, 0, "closed: {closed:?}");
}

#[tokio::test]
async fn sigterm_closes_open_subscriptions_and_exits_promptly() {
    let mut server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "TERM", 10).await;
    published(&admin).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("1", EVENTS, json!({})).await;
    ws.subscribe("2", LEVELS, json!({})).await;
    wait_subscribed(&admin, 2).await;
    adjust(&admin, &p, "s1", 1).await;
    ws.next_data("1").await;

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    })
    .await
    .unwrap()
    .0;
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let closed: Closed = ws.wait_closed(WAIT).await;
    assert!(
        closed.code == 1001 || closed.code == 1006,
        "closed with {closed:?}"
    );
    eprintln!("exited in {took:?}; connection closed with {closed:?}");
}

#[tokio::test]
async fn a_pong_means_the_subscriptions_before_it_are_live() {
    // A dashboard subscribes, pings, and reads its snapshot after the pong: every subscription
    // sent before the ping must be running by then, and a change made after it must reach them
    // all, with no retry and no wait on the client's side. Ninety subscriptions take a while to
    // start; each round starts cold (nobody subscribed), when starting takes longest.
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "BARRIER", 100).await;
    published(&admin).await;
    let ids: Vec<String> = (0..90).map(|i| i.to_string()).collect();
    for round in 0..3 {
        let mut ws = WsClient::open(&server.url, READ_KEY).await;
        for id in &ids {
            ws.subscribe(id, LEVELS, json!({ "s": "s1" })).await;
        }
        ws.ping(json!({ "round": round })).await.expect("pong");
        // Read once, right away: no polling.
        let running = metric(&admin, "stockroom_subscriptions_open").await;
        assert_eq!(running, 90.0, "round {round}: running when the pong came");
        adjust(&admin, &p, "s1", 1).await;
        for id in &ids {
            let level = ws.next_data(id).await;
            assert_eq!(
                level["stockLevelChanged"]["quantity"],
                101 + round,
                "round {round}, subscription {id}"
            );
        }
        ws.close().await;
        wait_subscribed_below(&admin, 1).await;
    }
}
