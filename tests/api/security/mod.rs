//! Attacks a `read` key (or a web page, in the open first-run mode) could make: documents built
//! to explode, list fan-out, cross-origin requests, DNS rebinding, configurations that would
//! fail open, and the smaller leaks. Each is refused fast with a code, and the server keeps
//! answering meanwhile.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::ws::{Item, TRANSPORT_WS, WsClient, ws_url};
use crate::common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

mod configuration;

/// N fragments, each spreading the next twice: about 40 bytes per fragment, 2^N fields.
fn fragment_bomb(n: usize) -> String {
    let mut query = String::from("query Bomb { ...f0 }");
    for i in 0..n {
        query += &format!(" fragment f{i} on Query {{ ...f{j} ...f{j} }}", j = i + 1);
    }
    query += &format!(" fragment f{n} on Query {{ health {{ version }} }}");
    query
}

/// Nested lists inside the depth and field limits whose rows multiply.
const FAN_OUT: &str = "{ products(first: 100) { edges { node { stockLevels { product {
  stockLevels { product { stockLevels { product { stockLevels { quantity } } } } } } } } } } }";

/// A refusal that must come back quickly: (elapsed, code, message).
async fn refused(client: &Client, query: &str) -> (Duration, String, String) {
    let started = Instant::now();
    let body = client.request(query, json!({})).await;
    let elapsed = started.elapsed();
    assert!(body["data"].is_null(), "refused before execution: {body}");
    let error = &body["errors"][0];
    (
        elapsed,
        error["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Polls `/healthz` until `done`; returns the slowest answer.
async fn slowest_healthz(client: Client, done: tokio::sync::watch::Receiver<bool>) -> Duration {
    let mut slowest = Duration::ZERO;
    while !*done.borrow() {
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), client.get("/healthz"))
            .await
            .map(|r| r.status().as_u16());
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, Ok(200), "/healthz must keep answering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_are_refused_by_their_size_before_anything_expands_them() {
    let server = Server::start();
    let admin = server.admin();
    seed(&admin, "s1", "BOMB", 5).await;
    let reader = server.client(Some(READ_KEY));
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(slowest_healthz(server.client(None), done));

    // 2^28 fields in about 1 KB: this froze the server before.
    let bomb = fragment_bomb(28);
    assert!(
        bomb.len() < 1300,
        "a kilobyte-sized document: {}",
        bomb.len()
    );
    let (elapsed, code, message) = refused(&reader, &bomb).await;
    assert_eq!(code, "BAD_USER_INPUT", "{message}");
    assert!(message.contains("too many fields"), "{message}");
    assert!(
        message.contains("--max-fields"),
        "names the limit: {message}"
    );
    assert!(elapsed < Duration::from_secs(2), "refused in {elapsed:?}");

    let (_, code, message) = refused(&reader, FAN_OUT).await;
    assert_eq!(code, "BAD_USER_INPUT", "{message}");
    assert!(message.contains("too complex"), "{message}");
    assert!(
        message.contains("--max-complexity"),
        "names the limit: {message}"
    );

    // Thirty aliases of the fan-out: still one fast refusal.
    let aliased: String = (0..30)
        .map(|i| format!("a{i}: products(first: 100) {{ edges {{ node {{ stockLevels {{ product {{ stockLevels {{ quantity }} }} }} }} }} }} "))
        .collect();
    let (_, code, message) = refused(&reader, &format!("{{ {aliased} }}")).await;
    assert_eq!(code, "BAD_USER_INPUT", "{message}");

    let (_, code, message) = refused(
        &reader,
        "{ ...a } fragment a on Query { ...b } fragment b on Query { ...a }",
    )
    .await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("fragment cycle"), "{message}");

    // The same bomb over the WebSocket gets an `error` for its id.
    let mut socket = WsClient::open(&server.url, READ_KEY).await;
    socket
        .subscribe(
            "bomb",
            &fragment_bomb(28).replace("query Bomb", "subscription Bomb"),
            json!({}),
        )
        .await;
    match socket.item("bomb", Duration::from_secs(5)).await {
        Ok(Item::Error(errors)) | Ok(Item::Next(errors)) => {
            assert!(errors.to_string().contains("too many fields"), "{errors}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    done_tx.send(true).expect("stop the watcher");
    let slowest = watcher.await.expect("watcher");
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );

    // Ordinary pages with lists still pass.
    reader
        .data(
            "{ products(first: 100) { edges { node { name stockLevels { quantity store { name } } } } } }",
            json!({}),
        )
        .await;
}

#[tokio::test]
async fn responses_over_the_byte_budget_are_refused() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_MAX_RESPONSE_BYTES".into(), "2048".into())],
        ..Default::default()
    });
    let admin = server.admin();
    for i in 0..30 {
        create_product(&admin, &format!("SKU-{i:03}")).await;
    }
    let body = admin
        .request(
            "{ products(first: 30) { edges { node { id sku name price } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("response too large"), "{message}");
    admin
        .data(
            "{ products(first: 2) { edges { node { sku } } } }",
            json!({}),
        )
        .await;
}

/// A server in the first-run mode: no keys, on loopback.
fn open_server() -> Server {
    Server::start_with(Options {
        unset: vec!["STOCKROOM_API_KEYS".into()],
        ..Default::default()
    })
}

#[tokio::test]
async fn open_mode_cannot_be_driven_by_a_web_page() {
    let server = open_server();
    let http = reqwest::Client::new();
    let query =
        r#"{"query":"mutation { createStore(input: {id: \"evil\", name: \"evil\"}) { id } }"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = http.post(format!("{}/graphql", server.url)).body(query);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    // DNS rebinding: the page's own name reaches the loopback server.
    let rebound = http
        .post(format!("{}/graphql", server.url))
        .header("host", "evil.example:8000")
        .header("content-type", "application/json")
        .body(query)
        .send()
        .await
        .expect("POST");
    assert_eq!(rebound.status().as_u16(), 403);
    // A foreign page's WebSocket.
    let mut request = ws_url(&server.url).into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(TRANSPORT_WS),
    );
    headers.insert("origin", HeaderValue::from_static("https://evil.example"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403)
        }
        other => panic!("a foreign origin's WebSocket must be refused: {other:?}"),
    }
    // Nothing was created; the local client still works.
    let local = server.client(None);
    let stores = local.data("{ stores { id } }", json!({})).await;
    assert_eq!(stores["stores"], json!([]));
    let mut socket = WsClient::connect(&server.url, TRANSPORT_WS).await;
    socket
        .init(json!({}))
        .await
        .expect("a client without Origin is served");
}

#[tokio::test]
async fn without_introspection_errors_suggest_no_field_names() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_INTROSPECTION".into(), "false".into())],
        ..Default::default()
    });
    let body = server
        .admin()
        .request("{ prodcts { edges { node { id } } } }", json!({}))
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("prodcts"), "{message}");
    assert!(!message.contains("Did you mean"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_is_cancelled_not_finished_in_the_background() {
    // Limits opened wide so that only the timeout stands in the way of a heavy request.
    let server = Server::start_with(Options {
        env: vec![
            ("STOCKROOM_REQUEST_TIMEOUT_MS".into(), "200".into()),
            ("STOCKROOM_MAX_COMPLEXITY".into(), "1000000000".into()),
            ("STOCKROOM_MAX_RESPONSE_BYTES".into(), "1000000000".into()),
            ("STOCKROOM_COST_RATE_ADMIN".into(), "0".into()),
        ],
        ..Default::default()
    });
    let admin = server.admin();
    for s in 0..10 {
        create_store(&admin, &format!("s{s}")).await;
    }
    let seeders: Vec<_> = (0..4)
        .map(|worker| {
            let admin = admin.clone();
            tokio::spawn(async move {
                for i in (worker..100).step_by(4) {
                    let product = create_product(&admin, &format!("HEAVY-{i:03}")).await;
                    for s in 0..10 {
                        init_stock(&admin, &product, &format!("s{s}"), 5, 0).await;
                    }
                }
            })
        })
        .collect();
    for seeder in seeders {
        seeder.await.expect("seeding");
    }
    // 100 products × 10 levels × 10 × 10: a hundred thousand levels to resolve.
    let heavy = "query Heavy { products(first: 100) { edges { node { stockLevels { product {
      stockLevels { product { stockLevels { quantity } } } } } } } } }";
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "query": heavy }))
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(
        status,
        408,
        "the request is stopped at its time: {:?} {}",
        started.elapsed(),
        &body[..body.len().min(300)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.admin().get("/healthz").await.status(), 200);
    // Had the work gone on in the background, it would finish and count itself here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = metrics_text(&server, None).await;
    assert!(
        !metrics.contains(r#"operation="Heavy""#),
        "the cancelled request finished anyway:\n{metrics}"
    );
    // A request within its time still counts, so the check above could see it.
    admin
        .http_post_with_operation("query Light { stores { id } }", "Light")
        .await;
    let (_, metrics) = metrics_text(&server, None).await;
    assert!(metrics.contains(r#"operation="Light""#), "{metrics}");
}

async fn metrics_text(server: &Server, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("GET /metrics");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}
