//! Connection-level abuse: slow clients that never finish their request head (slowloris), more
//! of them than the process has file descriptors, against a server that must keep serving
//! everyone else; and the arithmetic edges of quantities.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Raises this test process's own open-files limit (with the service's own function): it
/// holds more sockets than 1,024.
fn raise_own_open_files_limit() {
    let limit = stockroom::http::server::raise_open_files_limit();
    assert!(
        limit >= 2_500,
        "the test needs 2,500 open files, has {limit}"
    );
}

/// What the server did with a slow connection within `within`: `Some(bytes it sent)` once it
/// closed it, `None` while it is still open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buffer = [0u8; 512];
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_beyond_the_open_files_limit_cannot_starve_others() {
    raise_own_open_files_limit();
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_HEADER_READ_TIMEOUT_MS".into(), "2000".into())],
        open_files: Some(1024),
        ..Default::default()
    });
    let logs = server.logs();
    assert!(
        logs.contains("open_files=1024") && logs.contains("max_connections=896"),
        "the process logs its open-files limit and the cap it allows:\n{logs}"
    );
    let address: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let admin = server.admin();
    let product = seed(&admin, "s1", "SLOW", 10).await;

    let attack_started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..1_100 {
        if let Some(stream) = stockroom_harness::slow_connection(address).await {
            slow.push(stream);
        }
    }
    assert!(
        slow.len() >= 1_000,
        "opened {} slow connections",
        slow.len()
    );

    // Everyone else is served meanwhile: fresh connections and a keep-alive one.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let query = json!({ "query": "{ stockLevel(productId: \"P\", storeId: \"s1\") { quantity } }"
        .replace('P', &product) });
    for _ in 0..20 {
        let response = fresh
            .post(format!("{}/graphql", server.url))
            .bearer_auth(ADMIN_KEY)
            .json(&query)
            .send()
            .await
            .expect("a fresh connection is served during the attack");
        assert_eq!(response.status(), 200);
        assert_eq!(level(&admin, &product, "s1").await["quantity"], 10);
    }

    // The server closes every slow connection it accepted within the header-read timeout
    // (2 s, plus the time the attack took to open them and some slack); the ones over the
    // per-address cap were refused at once with a 503.
    let mut refused = 0;
    let mut timed_out = 0;
    let budget = Duration::from_secs(4) + attack_started.elapsed();
    let deadline = attack_started + budget;
    for stream in &mut slow {
        let left = deadline.saturating_duration_since(Instant::now());
        match closed_within(stream, left).await {
            Some(sent) if sent.starts_with(b"HTTP/1.1 503") => refused += 1,
            Some(_) => timed_out += 1,
            None => panic!("a slow connection was still open after {budget:?}"),
        }
    }
    assert!(
        refused > 0,
        "connections over the per-address cap are refused"
    );
    assert!(
        timed_out > 0,
        "accepted slow connections are closed by the header timeout"
    );
    let counted = metric(
        &admin,
        "stockroom_http_connections_refused_total{cap=\"address\"}",
    )
    .await;
    assert!(
        counted >= refused as f64,
        "every refusal is counted: {counted} counted, {refused} seen"
    );
    assert_eq!(admin.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn quantity_arithmetic_edges_are_bad_input_and_change_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let product = seed(&admin, "s1", "EDGE", 10).await;
    create_store(&admin, "s2").await;
    init_stock(&admin, &product, "s2", i32::MAX - 1, 0).await;
    let adjust = "mutation($p: UUID!, $s: ID!, $d: Int!) {
      adjustStock(input: {productId: $p, storeId: $s, delta: $d}) { quantity } }";
    let set = "mutation($p: UUID!, $q: Int!) {
      setStock(input: {productId: $p, storeId: \"s1\", quantity: $q}) { quantity } }";
    let transfer = "mutation($p: UUID!, $q: Int!) {
      transferStock(input: {productId: $p, fromStoreId: \"s1\", toStoreId: \"s2\", quantity: $q}) { quantity } }";
    let reserve = "mutation($p: UUID!, $q: Int!) {
      reserveStock(input: {productId: $p, storeId: \"s1\", quantity: $q}) { id } }";
    let batch = "mutation($p: UUID!, $q: Int!) {
      reserveStockBatch(input: {lines: [{productId: $p, storeId: \"s1\", quantity: $q},
                                        {productId: $p, storeId: \"s1\", quantity: $q}]}) { id } }";
    let cases = [
        (
            "adjust by i32::MIN",
            adjust,
            json!({ "p": product, "s": "s1", "d": i32::MIN }),
            "BAD_USER_INPUT",
        ),
        (
            "adjust by i32::MAX",
            adjust,
            json!({ "p": product, "s": "s1", "d": i32::MAX }),
            "BAD_USER_INPUT",
        ),
        (
            "adjust past i32::MAX",
            adjust,
            json!({ "p": product, "s": "s2", "d": 5 }),
            "BAD_USER_INPUT",
        ),
        (
            "set i32::MIN",
            set,
            json!({ "p": product, "q": i32::MIN }),
            "BAD_USER_INPUT",
        ),
        (
            "transfer into a full level",
            transfer,
            json!({ "p": product, "q": 5 }),
            "BAD_USER_INPUT",
        ),
        (
            "transfer i32::MIN",
            transfer,
            json!({ "p": product, "q": i32::MIN }),
            "BAD_USER_INPUT",
        ),
        (
            "reserve i32::MAX",
            reserve,
            json!({ "p": product, "q": i32::MAX }),
            "INSUFFICIENT_STOCK",
        ),
        (
            "reserve i32::MIN",
            reserve,
            json!({ "p": product, "q": i32::MIN }),
            "BAD_USER_INPUT",
        ),
        (
            "batch lines summing past i32::MAX",
            batch,
            json!({ "p": product, "q": i32::MAX }),
            "BAD_USER_INPUT",
        ),
    ];
    let before = (
        level(&admin, &product, "s1").await,
        level(&admin, &product, "s2").await,
    );
    let events_before = events(&admin, 0).await.len();
    for (name, query, variables, code) in cases {
        assert_eq!(admin.error_code(query, variables).await, code, "{name}");
    }
    let after = (
        level(&admin, &product, "s1").await,
        level(&admin, &product, "s2").await,
    );
    assert_eq!(before, after, "nothing changed");
    let logged = events(&admin, 0).await;
    let failed = logged
        .iter()
        .filter(|e| e["type"] == "reservation.failed")
        .count();
    assert_eq!(
        logged.len() - failed,
        events_before,
        "no event but reservation.failed"
    );
    assert!(
        !server.logs().contains("internal error"),
        "no internal error on the way"
    );
}
