//! Products, stores, authentication, error codes and pagination over real HTTP.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn products_can_be_created_read_updated_and_deleted() {
    let server = Server::start();
    let admin = server.admin();
    let created = admin
        .data(
            r#"mutation { createProduct(input: {sku: "SKU-1", name: "Kettle", description: "1.7 l",
                 category: "kitchen", price: "24.90"}) { id sku name description category price createdAt updatedAt } }"#,
            json!({}),
        )
        .await["createProduct"]
        .clone();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["sku"], "SKU-1");
    assert_eq!(created["price"], "24.90");

    let by_sku = admin
        .data(
            r#"{ productBySku(sku: "SKU-1") { id name category } }"#,
            json!({}),
        )
        .await;
    assert_eq!(by_sku["productBySku"]["id"], id.as_str());

    let updated = admin
        .data(
            "mutation($id: UUID!) { updateProduct(id: $id, input: {name: \"Kettle Pro\", price: \"29.00\"}) { name price description } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        updated["updateProduct"],
        json!({ "name": "Kettle Pro", "price": "29.00", "description": "1.7 l" })
    );

    let fetched = admin.data("query($id: UUID!) { product(id: $id) { name stockLevels { quantity } totalAvailable } }", json!({ "id": id })).await;
    assert_eq!(
        fetched["product"],
        json!({ "name": "Kettle Pro", "stockLevels": [], "totalAvailable": 0 })
    );

    let deleted = admin
        .data(
            "mutation($id: UUID!) { deleteProduct(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["deleteProduct"], true);
    let gone = admin
        .data(
            "query($id: UUID!) { product(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert!(gone["product"].is_null());
}

#[tokio::test]
async fn duplicates_are_already_exists_and_change_nothing() {
    let server = Server::start();
    let admin = server.admin();
    create_store(&admin, "berlin").await;
    let product = create_product(&admin, "DUP").await;
    let dup_sku = admin
        .error_code(
            r#"mutation { createProduct(input: {sku: "DUP", name: "again"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(dup_sku, "ALREADY_EXISTS");
    let dup_store = admin
        .error_code(
            r#"mutation { createStore(input: {id: "berlin", name: "x"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(dup_store, "ALREADY_EXISTS");
    init_stock(&admin, &product, "berlin", 3, 0).await;
    let dup_level = admin
        .error_code(
            "mutation($p: UUID!) { initializeStock(input: {productId: $p, storeId: \"berlin\", quantity: 9}) { quantity } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(dup_level, "ALREADY_EXISTS");
    assert_eq!(level(&admin, &product, "berlin").await["quantity"], 3);
    let stores = admin.data("{ stores { id name } }", json!({})).await;
    assert_eq!(
        stores["stores"],
        json!([{ "id": "berlin", "name": "berlin" }])
    );
}

#[tokio::test]
async fn deleting_a_product_with_stock_is_invalid_state() {
    let server = Server::start();
    let admin = server.admin();
    let product = seed(&admin, "s1", "HELD", 2).await;
    let code = admin
        .error_code(
            "mutation($id: UUID!) { deleteProduct(id: $id) }",
            json!({ "id": product }),
        )
        .await;
    assert_eq!(code, "INVALID_STATE");
    let still = admin
        .data(
            "query($id: UUID!) { product(id: $id) { sku } }",
            json!({ "id": product }),
        )
        .await;
    assert_eq!(still["product"]["sku"], "HELD");
}

#[tokio::test]
async fn missing_things_are_null_or_not_found() {
    let server = Server::start();
    let admin = server.admin();
    let none = "00000000-0000-7000-8000-000000000000";
    let data = admin
        .data(
            "query($id: UUID!) { product(id: $id) { id } store(id: \"nope\") { id } reservation(id: $id) { id }
               stockLevel(productId: $id, storeId: \"nope\") { quantity } productBySku(sku: \"nope\") { id } }",
            json!({ "id": none }),
        )
        .await;
    for field in [
        "product",
        "store",
        "reservation",
        "stockLevel",
        "productBySku",
    ] {
        assert!(data[field].is_null(), "{field} should be null");
    }
    let code = admin
        .error_code(
            "mutation($id: UUID!) { updateProduct(id: $id, input: {name: \"x\"}) { id } }",
            json!({ "id": none }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let code = admin
        .error_code(
            "mutation($id: UUID!) { confirmReservation(id: $id) { id } }",
            json!({ "id": none }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    create_store(&admin, "s1").await;
    let code = admin
        .error_code(
            "mutation($p: UUID!) { initializeStock(input: {productId: $p, storeId: \"s1\", quantity: 1}) { quantity } }",
            json!({ "p": none }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn keys_and_roles_are_enforced() {
    let server = Server::start();
    let anonymous = server.client(None);
    let unknown = server.client(Some("not-a-real-key"));
    let reader = server.client(Some(READ_KEY));
    let writer = server.client(Some(WRITE_KEY));
    let admin = server.admin();

    assert_eq!(
        anonymous.error_code("{ stores { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        unknown.error_code("{ stores { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    assert!(reader.data("{ stores { id } }", json!({})).await["stores"].is_array());

    let create_store = r#"mutation { createStore(input: {id: "s1", name: "One"}) { id } }"#;
    assert_eq!(
        reader.error_code(create_store, json!({})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        writer.error_code(create_store, json!({})).await,
        "FORBIDDEN"
    );
    admin.data(create_store, json!({})).await;

    let product = create_product(&admin, "ROLE").await;
    let init = "mutation($p: UUID!) { initializeStock(input: {productId: $p, storeId: \"s1\", quantity: 5}) { quantity } }";
    assert_eq!(
        reader.error_code(init, json!({ "p": product })).await,
        "FORBIDDEN"
    );
    writer.data(init, json!({ "p": product })).await;
    assert_eq!(
        writer
            .error_code("mutation { redriveEvents }", json!({}))
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        admin.data("mutation { redriveEvents }", json!({})).await["redriveEvents"],
        0
    );

    // The X-API-Key header works too.
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .header("X-API-Key", READ_KEY)
        .json(&json!({ "query": "{ health { database } }" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["health"]["database"], "ok");
}

#[tokio::test]
async fn bad_input_is_refused_with_bad_user_input() {
    let server = Server::start();
    let admin = server.admin();
    let product = seed(&admin, "s1", "BAD", 5).await;
    let cases = [
        (
            r#"mutation { createProduct(input: {sku: "  ", name: "x"}) { id } }"#,
            json!({}),
        ),
        (
            r#"mutation { createProduct(input: {sku: "OK", name: "x", price: "-1"}) { id } }"#,
            json!({}),
        ),
        (
            r#"mutation { createStore(input: {id: "has space", name: "x"}) { id } }"#,
            json!({}),
        ),
        (
            "mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: 0}) { quantity } }",
            json!({ "p": product }),
        ),
        (
            "mutation($p: UUID!) { setStock(input: {productId: $p, storeId: \"s1\", quantity: -1}) { quantity } }",
            json!({ "p": product }),
        ),
        (
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 0}) { id } }",
            json!({ "p": product }),
        ),
        (
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1, ttlSeconds: 0}) { id } }",
            json!({ "p": product }),
        ),
        (
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1, ttlSeconds: 86401}) { id } }",
            json!({ "p": product }),
        ),
        (
            "mutation($p: UUID!) { transferStock(input: {productId: $p, fromStoreId: \"s1\", toStoreId: \"s1\", quantity: 1}) { quantity } }",
            json!({ "p": product }),
        ),
        ("{ products(first: 101) { edges { cursor } } }", json!({})),
        ("{ products(first: -1) { edges { cursor } } }", json!({})),
        (
            "{ products(after: \"not-a-cursor\") { edges { cursor } } }",
            json!({}),
        ),
        ("{ events(after: \"x-1\") { edges { cursor } } }", json!({})),
        (
            "{ events(filter: {types: [\"stock.nope\"]}) { edges { cursor } } }",
            json!({}),
        ),
        (
            "{ reservations(filter: {status: SOLD}) { edges { cursor } } }",
            json!({}),
        ),
        ("{ product(id: \"not-a-uuid\") { id } }", json!({})),
        (
            "mutation { reserveStockBatch(input: {lines: []}) { id } }",
            json!({}),
        ),
        ("{ nope }", json!({})),
    ];
    for (query, variables) in cases {
        let code = admin.error_code(query, variables).await;
        assert_eq!(code, "BAD_USER_INPUT", "for {query}");
    }
    let after = level(&admin, &product, "s1").await;
    assert_eq!(
        (
            after["quantity"].as_i64(),
            after["reserved"].as_i64(),
            after["version"].as_i64()
        ),
        (Some(5), Some(0), Some(1))
    );
    let health = admin.data("{ health { database } }", json!({})).await;
    assert_eq!(health["health"]["database"], "ok");
}

#[tokio::test]
async fn product_pages_walk_every_row_once() {
    let server = Server::start();
    let admin = server.admin();
    let mut created = Vec::new();
    for i in 0..45 {
        created.push(create_product(&admin, &format!("PAGE-{i:02}")).await);
    }
    let default_page = admin
        .data(
            "{ products { edges { cursor } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        default_page["products"]["edges"].as_array().unwrap().len(),
        20
    );
    assert_eq!(default_page["products"]["pageInfo"]["hasNextPage"], true);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = admin
            .data(
                "query($after: String) { products(first: 10, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        let page = &data["products"];
        seen.extend(
            page["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen, created,
        "pages return every product once, in creation order"
    );

    let filtered = admin
        .data(
            r#"{ products(first: 100, filter: {search: "page-4"}) { edges { node { sku } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(filtered["products"]["edges"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = Server::start();
    let admin = server.admin();
    let health = admin
        .data("{ health { database broker version } }", json!({}))
        .await;
    assert_eq!(health["health"]["database"], "ok");
    assert_eq!(health["health"]["broker"], "memory");
    assert_eq!(admin.get("/healthz").await.status(), 200);
    let ready = admin.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["broker"], "memory");
    assert!(body["outboxPending"].is_u64());
    let metrics = admin.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("stockroom_graphql_requests_total"),
        "{metrics}"
    );
}
