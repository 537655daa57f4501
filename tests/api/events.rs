//! The event log: every change appends its events in its own transaction, in log order.

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn every_mutation_appends_its_events_with_post_change_state() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "a", "EVT", 10).await;
    create_store(&admin, "b").await;
    init_stock(&admin, &p, "b", 0, 0).await;
    admin
        .data("mutation($p: UUID!) { setStock(input: {productId: $p, storeId: \"a\", quantity: 12, reason: \"recount\"}) { version } }", json!({ "p": p }))
        .await;
    admin
        .data("mutation($p: UUID!) { transferStock(input: {productId: $p, fromStoreId: \"a\", toStoreId: \"b\", quantity: 2, reason: \"rebalance\"}) { quantity } }", json!({ "p": p }))
        .await;
    let r = admin
        .data("mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"a\", quantity: 1, customerId: \"c9\"}) { id } }", json!({ "p": p }))
        .await["reserveStock"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .data(
            "mutation($id: UUID!) { cancelReservation(id: $id, reason: \"oops\") { id } }",
            json!({ "id": r }),
        )
        .await;

    let log = events(&admin, 6).await;
    assert_eq!(
        types(&log),
        [
            "stock.created",
            "stock.created",
            "stock.updated",
            "stock.transferred",
            "reservation.created",
            "reservation.cancelled"
        ]
    );
    for (i, event) in log.iter().enumerate() {
        assert_eq!(
            event["cursor"],
            format!("{}-0", i + 1),
            "cursors are consecutive log positions"
        );
        assert!(event["occurredAt"].is_string());
    }
    let updated = &log[2]["payload"];
    assert_eq!(
        (
            updated["previous_quantity"].as_i64(),
            updated["new_quantity"].as_i64(),
            updated["change"].as_i64()
        ),
        (Some(10), Some(12), Some(2))
    );
    assert_eq!(updated["reason"], "recount");
    assert_eq!(updated["version"], 2);
    let transferred = &log[3]["payload"];
    assert_eq!(
        (
            transferred["from_store"].as_str(),
            transferred["to_store"].as_str()
        ),
        (Some("a"), Some("b"))
    );
    assert_eq!(transferred["quantity"], 2);
    let created = &log[4];
    assert_eq!(created["aggregateType"], "reservation");
    assert_eq!(created["aggregateId"], r.as_str());
    assert_eq!(created["payload"]["customer_id"], "c9");
    assert_eq!(created["payload"]["levels"][0]["reserved"], 1);
    assert_eq!(log[5]["payload"]["reason"], "oops");
    assert_eq!(log[5]["payload"]["levels"][0]["reserved"], 0);
}

#[tokio::test]
async fn refused_mutations_append_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "a", "NOTHING", 1).await;
    let before = events(&admin, 1).await.len();
    let refused = [
        "mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"a\", delta: -5}) { version } }",
        "mutation($p: UUID!) { setStock(input: {productId: $p, storeId: \"a\", quantity: 4, expectedVersion: 9}) { version } }",
        "mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"zz\", delta: 1}) { version } }",
    ];
    for query in refused {
        admin.error_code(query, json!({ "p": p })).await;
    }
    // Let the relay position anything that might have been appended.
    admin.data("mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"a\", delta: 1}) { version } }", json!({ "p": p })).await;
    let log = events(&admin, before + 1).await;
    assert_eq!(types(&log), ["stock.created", "stock.updated"]);
}

#[tokio::test]
async fn events_page_and_filter_in_log_order() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "a", "FILTER", 100).await;
    create_store(&admin, "b").await;
    let q = create_product(&admin, "OTHER").await;
    init_stock(&admin, &q, "b", 5, 0).await;
    for _ in 0..30 {
        admin.data("mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"a\", delta: -1}) { version } }", json!({ "p": p })).await;
    }
    let all = events(&admin, 32).await;
    assert_eq!(all.len(), 32);
    let first = admin
        .data(
            "{ events(first: 5) { edges { cursor } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(first["events"]["pageInfo"]["endCursor"], "5-0");
    let rest = admin
        .data(
            "{ events(after: \"5-0\", first: 100) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(rest["events"]["edges"].as_array().unwrap().len(), 27);
    assert_eq!(rest["events"]["edges"][0]["cursor"], "6-0");
    let store_b = admin
        .data(
            "{ events(filter: {storeId: \"b\"}) { edges { node { type storeId } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        store_b["events"]["edges"],
        json!([{ "node": { "type": "stock.created", "storeId": "b" } }])
    );
    let by_type = admin
        .data("query($p: UUID!) { events(first: 100, filter: {types: [\"stock.updated\"], productId: $p}) { edges { node { type } } } }", json!({ "p": p }))
        .await;
    assert_eq!(by_type["events"]["edges"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn the_outbox_drains_and_reports() {
    let server = Server::start();
    let admin = server.admin();
    seed(&admin, "a", "OUT", 3).await;
    let log = events(&admin, 1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let outbox = admin
            .data(
                "{ outbox { pending dead oldestPendingAgeMs lastPublishedAt broker } }",
                json!({}),
            )
            .await;
        if outbox["outbox"]["pending"] == 0 {
            assert_eq!(outbox["outbox"]["dead"], 0);
            assert!(outbox["outbox"]["oldestPendingAgeMs"].is_null());
            assert!(outbox["outbox"]["lastPublishedAt"].is_string());
            assert_eq!(outbox["outbox"]["broker"], "memory");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let drained = events(&admin, 1).await;
    assert_eq!(drained[0]["id"], log[0]["id"]);
    assert!(
        drained[0]["publishedAt"].is_string(),
        "a drained outbox has stamped its events: {}",
        drained[0]
    );
}

/// A page of 100 stock levels with their products and stores costs a fixed number of SQL
/// statements, counted from the server's statement log.
#[tokio::test]
async fn a_page_of_levels_costs_a_fixed_number_of_statements() {
    let server = Server::start_with(Options {
        env: vec![
            ("STOCKROOM_LOG_SQL".into(), "true".into()),
            ("RUST_LOG".into(), "warn,sqlx::query=info".into()),
        ],
        ..Default::default()
    });
    let admin = server.admin();
    for s in 0..5 {
        create_store(&admin, &format!("s{s}")).await;
    }
    for i in 0..100 {
        let p = create_product(&admin, &format!("N-{i}")).await;
        init_stock(&admin, &p, &format!("s{}", i % 5), 1, 0).await;
    }
    let query = "{ stockLevels(first: 100) { edges { node { quantity product { sku totalAvailable } store { name } } } } }";
    let mut counts = Vec::new();
    for _ in 0..2 {
        let before = server.logs().len();
        let data = admin.data(query, json!({})).await;
        assert_eq!(data["stockLevels"]["edges"].as_array().unwrap().len(), 100);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let logs = server.logs();
        let statements = logs[before..]
            .lines()
            .filter(|l| l.contains("sqlx::query"))
            .filter(|l| {
                ["\\\"stock_levels\\\"", "\\\"products\\\"", "\\\"stores\\\""]
                    .iter()
                    .any(|t| l.contains(t))
            })
            .count();
        counts.push(statements);
    }
    assert!(
        counts.iter().all(|c| *c == 4),
        "levels, products, stores, levels-by-product: {counts:?}"
    );
}

/// The write-ahead log is copied back into the database file while the server runs (by its
/// background checkpointer, not by whichever commit crosses a threshold, which for this much
/// data would be never): the main file grows as data is written.
#[tokio::test]
async fn the_write_ahead_log_is_checkpointed_while_serving() {
    let server = Server::start();
    let admin = server.admin();
    let main_file = || std::fs::metadata(&server.database).map_or(0, |m| m.len());
    let before = main_file();
    let p = seed(&admin, "s1", "WAL", 1_000_000).await;
    let filler = "x".repeat(2_000);
    for i in 0..150 {
        admin
            .data(
                "mutation($p: UUID!, $r: String) { adjustStock(input: { productId: $p, storeId: \"s1\", delta: 1, reason: $r }) { version } }",
                json!({ "p": p, "r": format!("{i}{filler}") }),
            )
            .await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while main_file() < before + 300_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (from {before}); the log was not checkpointed",
            main_file()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Pages through `events(filter)` three at a time; returns the cursors.
async fn filtered_cursors(admin: &Client, filter: &Value) -> Vec<String> {
    let mut cursors = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = admin
            .data(
                "query($f: EventFilter, $after: String) { events(first: 3, after: $after, filter: $f) {
                   pageInfo { hasNextPage endCursor } edges { cursor } } }",
                json!({ "f": filter, "after": after }),
            )
            .await;
        let page = &data["events"];
        cursors.extend(
            page["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["cursor"].as_str().unwrap().to_owned()),
        );
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return cursors;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// Every filter and combination of filters pages through exactly the matching events of the
/// log, in log order (each read through its own index: a product's, one range per type merged,
/// a store's).
async fn filters_page_through_the_matching_events(server: &Server) {
    let admin = server.admin();
    let p = seed(&admin, "a", "MIX-P", 20).await;
    create_store(&admin, "b").await;
    let q = create_product(&admin, "MIX-Q").await;
    init_stock(&admin, &p, "b", 3, 1).await;
    init_stock(&admin, &q, "a", 4, 1).await;
    init_stock(&admin, &q, "b", 2, 1).await;
    for (product, store) in [
        (&p, "a"),
        (&q, "b"),
        (&p, "b"),
        (&q, "a"),
        (&p, "b"),
        (&q, "b"),
    ] {
        admin.data("mutation($p: UUID!, $s: ID!) { adjustStock(input: {productId: $p, storeId: $s, delta: -1}) { version } }", json!({ "p": product, "s": store })).await;
    }
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    let log = events(&admin, 10).await;
    let filters = [
        json!({ "storeId": "b" }),
        json!({ "productId": q }),
        json!({ "productId": p, "storeId": "b" }),
        json!({ "types": ["stock.updated"] }),
        json!({ "types": ["stock.low", "stock.depleted", "stock.created"] }),
        json!({ "types": ["stock.low", "stock.updated"], "storeId": "b" }),
        json!({ "types": ["stock.updated"], "productId": q, "storeId": "a" }),
    ];
    for filter in &filters {
        let expected: Vec<String> = log
            .iter()
            .filter(|e| {
                filter["storeId"].as_str().is_none_or(|s| e["storeId"] == s)
                    && filter["productId"]
                        .as_str()
                        .is_none_or(|p| e["productId"] == p)
                    && filter["types"]
                        .as_array()
                        .is_none_or(|types| types.contains(&e["type"]))
            })
            .map(|e| e["cursor"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !expected.is_empty(),
            "{filter}: the log has matching events"
        );
        assert_eq!(filtered_cursors(&admin, filter).await, expected, "{filter}");
    }
}

#[tokio::test]
async fn every_filter_pages_through_exactly_its_events_on_sqlite() {
    let server = Server::start();
    filters_page_through_the_matching_events(&server).await;
}

#[tokio::test]
async fn every_filter_pages_through_exactly_its_events_on_postgres() {
    let url = crate::common::postgres::fresh_database().await;
    let server = Server::start_with(crate::common::postgres::on_postgres(url.clone()));
    filters_page_through_the_matching_events(&server).await;
    drop(server);
    crate::common::postgres::drop_database(&url).await;
}
