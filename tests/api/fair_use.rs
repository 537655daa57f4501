//! Fair use: WebSocket connections, subscriptions and live selections capped per key and per
//! process; cost buckets per key with role defaults; an abusive key refused while other keys
//! are served. Every refusal is `THROTTLED` (or the WebSocket's 1013 close) and counted.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::ws::{Item, TRANSPORT_WS, WAIT, WsClient};
use crate::common::*;

const OTHER_READ_KEY: &str = "read-key-00002";

/// The harness's keys plus a second `read` key.
fn two_readers(extra: &[(&str, &str)]) -> Options {
    let keys = format!("admin:{ADMIN_KEY},write:{WRITE_KEY},read:{READ_KEY},read:{OTHER_READ_KEY}");
    Options::default()
        .env(&[("STOCKROOM_API_KEYS", &keys)])
        .env(extra)
}

const LEVELS: &str = "subscription($s: ID) {
  stockLevelChanged(storeId: $s) { productId storeId quantity } }";
const ADJUST: &str = "mutation($p: UUID!, $s: ID!, $d: Int!) {
  adjustStock(input: {productId: $p, storeId: $s, delta: $d}) { version } }";

/// The `error` a subscription got: its first error's code and message.
async fn refusal(ws: &mut WsClient, id: &str) -> (String, String) {
    match ws.item(id, WAIT).await {
        Ok(Item::Error(errors)) => (
            errors[0]["extensions"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            errors[0]["message"].as_str().unwrap_or_default().to_owned(),
        ),
        other => panic!("expected an error for {id}, got {other:?}"),
    }
}

/// A WebSocket upgrade request, answered with a status (429 when refused).
async fn upgrade(base: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/graphql/ws"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "graphql-transport-ws")
        .send()
        .await
        .expect("an answer")
}

#[tokio::test]
async fn websocket_connections_are_capped_per_key_and_per_process() {
    let server = Server::start_with(two_readers(&[
        ("STOCKROOM_WS_MAX_CONNECTIONS_PER_KEY", "2"),
        ("STOCKROOM_WS_MAX_CONNECTIONS", "3"),
    ]));
    let admin = server.admin();
    let first = WsClient::open(&server.url, READ_KEY).await;
    let _second = WsClient::open(&server.url, READ_KEY).await;
    let mut third = WsClient::connect(&server.url, TRANSPORT_WS).await;
    let closed = third.init(json!({ "apiKey": READ_KEY })).await.unwrap_err();
    assert_eq!(closed.code, 1013, "Try Again Later: {closed:?}");
    assert!(
        closed.reason.contains("--ws-max-connections-per-key"),
        "{closed:?}"
    );
    // Another key is not held back by the first one's cap.
    let _other = WsClient::open(&server.url, OTHER_READ_KEY).await;
    // The process is full: refused at the upgrade, over HTTP.
    let refused = upgrade(&server.url).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "THROTTLED");
    assert!(
        metric(
            &admin,
            "stockroom_fair_use_refusals_total{limit=\"connections_per_key\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &admin,
            "stockroom_fair_use_refusals_total{limit=\"connections_per_process\"}"
        )
        .await
            >= 1.0
    );
    // A closed connection gives its place back.
    first.close().await;
    eventually(WAIT, "the connection to close", || async {
        let open = metric(&admin, "stockroom_ws_connections").await;
        if open <= 2.0 {
            Ok(())
        } else {
            Err(format!("{open} open"))
        }
    })
    .await;
    eventually(WAIT, "the place to come back", || async {
        let mut again = WsClient::connect(&server.url, TRANSPORT_WS).await;
        let init = again.init(json!({ "apiKey": READ_KEY })).await;
        init.map(|()| again).map_err(|closed| format!("{closed:?}"))
    })
    .await;
}

#[tokio::test]
async fn subscriptions_and_live_selections_are_capped_per_key_and_per_process() {
    let server = Server::start_with(two_readers(&[
        ("STOCKROOM_MAX_SUBSCRIPTIONS_PER_KEY", "3"),
        ("STOCKROOM_MAX_LIVE_SELECTIONS_PER_KEY", "2"),
        ("STOCKROOM_MAX_SUBSCRIPTIONS", "4"),
    ]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "CAPPED", 10).await;
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("1", LEVELS, json!({ "s": "s1" })).await;
    ws.subscribe("2", LEVELS, json!({ "s": "s1" })).await;
    ws.subscribe("3", LEVELS, json!({ "s": "s2" })).await;
    ws.subscribe("4", LEVELS, json!({ "s": "s1" })).await;
    let (code, message) = refusal(&mut ws, "4").await;
    assert_eq!(code, "THROTTLED");
    assert!(message.contains("--max-subscriptions-per-key"), "{message}");
    // A place comes back with `complete`; a third distinct selection is over its own cap.
    ws.complete("2").await;
    // The pong comes once "2" has started (and so ended, as the client completed it).
    ws.ping(json!("2 is gone")).await.expect("pong");
    ws.subscribe("5", LEVELS, json!({ "s": "s3" })).await;
    let (code, message) = refusal(&mut ws, "5").await;
    assert_eq!(code, "THROTTLED");
    assert!(
        message.contains("--max-live-selections-per-key"),
        "{message}"
    );
    // Another key joins an existing selection, then meets the process cap.
    let mut other = WsClient::open(&server.url, OTHER_READ_KEY).await;
    other.subscribe("a", LEVELS, json!({ "s": "s1" })).await;
    other.subscribe("b", LEVELS, json!({ "s": "s1" })).await;
    other.subscribe("c", LEVELS, json!({ "s": "s1" })).await;
    let (code, message) = refusal(&mut other, "c").await;
    assert_eq!(code, "THROTTLED");
    assert!(message.contains("--max-subscriptions)"), "{message}");
    // What was admitted keeps working (once started: the pongs say so).
    ws.ping(json!("started")).await.expect("pong");
    other.ping(json!("started")).await.expect("pong");
    admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": 1 }))
        .await;
    assert_eq!(ws.next_data("1").await["stockLevelChanged"]["quantity"], 11);
    assert_eq!(
        other.next_data("a").await["stockLevelChanged"]["quantity"],
        11
    );
    for limit in [
        "subscriptions_per_key",
        "selections_per_key",
        "subscriptions_per_process",
    ] {
        let series = format!("stockroom_fair_use_refusals_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&admin, &series).await, 1.0, "{series}");
    }
}

/// Posts `query` with `key`; the status, the `Retry-After` header and the body.
async fn post(
    server: &Server,
    key: &str,
    query: &str,
    variables: Value,
) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(key)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn each_key_pays_for_its_operations_from_a_bucket_that_refills() {
    let server = Server::start_with(two_readers(&[
        ("STOCKROOM_COST_RATE_READ", "100"),
        ("STOCKROOM_COST_BURST_READ", "300"),
        ("STOCKROOM_COST_RATE_WRITE", "1"),
        ("STOCKROOM_COST_BURST_WRITE", "40"),
    ]));
    let admin = server.admin();
    create_store(&admin, "s1").await;
    let mut products = Vec::new();
    for i in 0..20 {
        let product = create_product(&admin, &format!("COST-{i:02}")).await;
        init_stock(&admin, &product, "s1", 10, 0).await;
        products.push(product);
    }
    // Requested: 1 + 20 × 3 = 61; actual: 1 + 1 + 20 × 2 = 42, the rest refunded.
    let page = "{ stockLevels(first: 20) { edges { node { quantity } } } }";
    let (status, _, body) = post(&server, READ_KEY, page, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let cost = &body["extensions"]["cost"];
    assert_eq!(cost["requestedQueryCost"], 61, "{body}");
    assert_eq!(cost["actualQueryCost"], 42, "{body}");
    assert_eq!(cost["throttleStatus"]["maximumAvailable"], 300);
    assert_eq!(cost["throttleStatus"]["restoreRate"], 100);
    let available = cost["throttleStatus"]["currentlyAvailable"]
        .as_u64()
        .expect("level");
    assert!(
        (255..=260).contains(&available),
        "300 - 42, plus what refilled: {available}"
    );
    // Spend it all: THROTTLED, 429 with Retry-After, and the wait in the extensions.
    let throttled = loop {
        let (status, retry, body) = post(&server, READ_KEY, page, json!({})).await;
        if status == 429 {
            break (retry, body);
        }
        assert_eq!(status, 200, "{body}");
    };
    let (retry, body) = throttled;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "THROTTLED",
        "{body}"
    );
    assert!(body["data"].is_null());
    assert_eq!(
        retry.as_deref(),
        Some("1"),
        "a fraction of a second, rounded up"
    );
    let wait = body["errors"][0]["extensions"]["retryAfterMs"]
        .as_u64()
        .expect("wait");
    assert!((1..=610).contains(&wait), "{wait}");
    // Another key, even of the same role, has its own bucket.
    let (status, _, _) = post(&server, OTHER_READ_KEY, page, json!({})).await;
    assert_eq!(status, 200);
    // The bucket refills at its rate.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let (status, _, body) = post(&server, READ_KEY, page, json!({})).await;
    assert_eq!(status, 200, "{body}");

    // A write that cannot be paid for changes nothing. adjustStock { version } costs 12.
    let adjust = |d: i32| json!({ "p": products[0], "s": "s1", "d": d });
    for _ in 0..3 {
        let (status, _, body) = post(&server, WRITE_KEY, ADJUST, adjust(1)).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let before = level(&admin, &products[0], "s1").await;
    let events_before = events(&admin, 0).await.len();
    let (status, _, body) = post(&server, WRITE_KEY, ADJUST, adjust(1)).await;
    assert_eq!(
        (status, &body["errors"][0]["extensions"]["code"]),
        (429, &json!("THROTTLED"))
    );
    assert_eq!(
        level(&admin, &products[0], "s1").await,
        before,
        "nothing changed"
    );
    assert_eq!(
        events(&admin, 0).await.len(),
        events_before,
        "no event either"
    );
    // Admin keys keep their own (default) bucket: checkout is not starved by the others.
    admin.data(ADJUST, adjust(1)).await;
    assert!(metric(&admin, "stockroom_fair_use_refusals_total{limit=\"cost\"}").await >= 2.0);
}

#[tokio::test]
async fn an_abusive_key_is_refused_while_other_keys_are_served() {
    let server = Server::start_with(two_readers(&[
        ("STOCKROOM_WS_MAX_CONNECTIONS_PER_KEY", "5"),
        ("STOCKROOM_MAX_SUBSCRIPTIONS_PER_KEY", "50"),
    ]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "ABUSED", 10).await;
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    // The abuser opens connections until refused, and subscribes on each until refused.
    let mut abuser = Vec::new();
    loop {
        let mut ws = WsClient::connect(&server.url, TRANSPORT_WS).await;
        match ws.init(json!({ "apiKey": READ_KEY })).await {
            Ok(()) => abuser.push(ws),
            Err(closed) => {
                assert_eq!(closed.code, 1013);
                break;
            }
        }
        assert!(abuser.len() <= 5, "the per-key cap holds");
    }
    let mut admitted = 0;
    'connections: for ws in &mut abuser {
        for n in 0..20 {
            let id = n.to_string();
            ws.subscribe(&id, LEVELS, json!({ "s": "s1" })).await;
            // Ordered: the pong comes once the subscription started or was refused.
            ws.ping(json!(n)).await.expect("pong");
            if let Ok(Item::Error(errors)) = ws.item(&id, Duration::from_millis(1)).await {
                assert_eq!(errors[0]["extensions"]["code"], "THROTTLED");
                break 'connections;
            }
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50, "the per-key subscription cap holds");
    // Another reader and a writer are served as usual.
    let mut reader = WsClient::open(&server.url, OTHER_READ_KEY).await;
    reader.subscribe("mine", LEVELS, json!({ "s": "s1" })).await;
    reader.ping(json!("live")).await.expect("pong");
    let writer = server.client(Some(WRITE_KEY));
    writer
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": 2 }))
        .await;
    assert_eq!(
        reader.next_data("mine").await["stockLevelChanged"]["quantity"],
        12
    );
    // Once the abuser leaves, its key may connect again.
    for ws in abuser {
        ws.close().await;
    }
    eventually(WAIT, "the abuser's places to come back", || async {
        let mut again = WsClient::connect(&server.url, TRANSPORT_WS).await;
        let init = again.init(json!({ "apiKey": READ_KEY })).await;
        init.map(|()| again).map_err(|closed| format!("{closed:?}"))
    })
    .await;
}

#[tokio::test]
async fn a_saturated_server_sheds_new_subscriptions_and_expensive_reads_but_not_writes() {
    // A process frozen for a while wakes up with its request runtime far behind its timers:
    // that is the saturation signal, for the few hundred milliseconds it takes to decay.
    let server = Server::start_with(Options::default().env(&[
        ("STOCKROOM_SHED_LAG_MS", "50"),
        ("STOCKROOM_SHED_READ_COST", "100"),
    ]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "SHED", 10).await;
    let expensive = "{ stockLevels(first: 50) { nodes { quantity } } }";
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    server.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.resume();
    let (status, retry, body) = post(&server, READ_KEY, expensive, json!({})).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--shed-lag-ms"), "{message}");
    ws.subscribe("new", LEVELS, json!({ "s": "s1" })).await;
    let (code, message) = refusal(&mut ws, "new").await;
    assert_eq!(code, "THROTTLED");
    assert!(message.contains("new subscriptions"), "{message}");
    // Writes and cheap reads go on.
    let (status, _, body) = post(
        &server,
        WRITE_KEY,
        ADJUST,
        json!({ "p": p, "s": "s1", "d": 1 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = post(&server, READ_KEY, "{ health { database } }", json!({})).await;
    assert_eq!(status, 200);
    assert!(metric(&admin, "stockroom_fair_use_refusals_total{limit=\"shed\"}").await >= 2.0);
    // Once it caught up, the same read is served.
    eventually(WAIT, "the server to stop shedding", || async {
        let (status, _, body) = post(&server, READ_KEY, expensive, json!({})).await;
        if status == 200 {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn a_full_process_refuses_new_selections_but_lets_keys_join_existing_ones() {
    let server = Server::start_with(two_readers(&[("STOCKROOM_MAX_LIVE_SELECTIONS", "1")]));
    let admin = server.admin();
    let p = seed(&admin, "s1", "SHARED", 10).await;
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let mut first = WsClient::open(&server.url, READ_KEY).await;
    first.subscribe("1", LEVELS, json!({ "s": "s1" })).await;
    first.ping(json!("started")).await.expect("pong");
    let mut second = WsClient::open(&server.url, OTHER_READ_KEY).await;
    second
        .subscribe("other", LEVELS, json!({ "s": "s2" }))
        .await;
    let (code, message) = refusal(&mut second, "other").await;
    assert_eq!(code, "THROTTLED");
    assert!(message.contains("--max-live-selections)"), "{message}");
    second.subscribe("same", LEVELS, json!({ "s": "s1" })).await;
    // The pong comes once "same" has started: the change below reaches it.
    second.ping(json!("started")).await.expect("pong");
    admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": 1 }))
        .await;
    assert_eq!(
        second.next_data("same").await["stockLevelChanged"]["quantity"],
        11
    );
    assert_eq!(
        first.next_data("1").await["stockLevelChanged"]["quantity"],
        11
    );
    let series = "stockroom_fair_use_refusals_total{limit=\"selections_per_process\"}";
    assert_eq!(metric(&admin, series).await, 1.0);
}
