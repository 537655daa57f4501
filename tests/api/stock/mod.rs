//! Stock levels: set, adjust, transfer, optimistic locking, low-stock and depletion signals.

use crate::common::*;
use serde_json::json;

mod pages;

const ADJUST: &str = "mutation($p: UUID!, $s: ID!, $d: Int!, $v: Int, $k: String) {
  adjustStock(input: {productId: $p, storeId: $s, delta: $d, expectedVersion: $v, reason: \"count\", idempotencyKey: $k}) {
    quantity reserved available version } }";
const SET: &str = "mutation($p: UUID!, $s: ID!, $q: Int!, $v: Int) {
  setStock(input: {productId: $p, storeId: $s, quantity: $q, expectedVersion: $v, reason: \"recount\"}) { quantity version } }";
const TRANSFER: &str = "mutation($p: UUID!, $from: ID!, $to: ID!, $q: Int!, $k: String) {
  transferStock(input: {productId: $p, fromStoreId: $from, toStoreId: $to, quantity: $q, idempotencyKey: $k}) {
    quantity from { storeId quantity available } to { storeId quantity available } } }";

#[tokio::test]
async fn set_and_adjust_change_quantity_and_version() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "ADJ", 10).await;
    let set = admin
        .data(SET, json!({ "p": p, "s": "s1", "q": 7, "v": 1 }))
        .await;
    assert_eq!(set["setStock"], json!({ "quantity": 7, "version": 2 }));
    let up = admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": 5 }))
        .await;
    assert_eq!(
        up["adjustStock"],
        json!({ "quantity": 12, "reserved": 0, "available": 12, "version": 3 })
    );
    let down = admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": -12 }))
        .await;
    assert_eq!(down["adjustStock"]["quantity"], 0);
    let too_much = admin
        .error_code(ADJUST, json!({ "p": p, "s": "s1", "d": -1 }))
        .await;
    assert_eq!(too_much, "INSUFFICIENT_STOCK");
    assert_eq!(
        level(&admin, &p, "s1").await["version"],
        4,
        "the refused adjustment changed nothing"
    );
    let unknown = admin
        .error_code(ADJUST, json!({ "p": p, "s": "elsewhere", "d": 1 }))
        .await;
    assert_eq!(unknown, "NOT_FOUND");
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_changes_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "VER", 10).await;
    admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": 1, "v": 1 }))
        .await;
    let body = admin
        .request(ADJUST, json!({ "p": p, "s": "s1", "d": 1, "v": 1 }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "VERSION_CONFLICT");
    assert_eq!(body["errors"][0]["extensions"]["currentVersion"], 2);
    assert_eq!(
        admin
            .error_code(SET, json!({ "p": p, "s": "s1", "q": 1, "v": 7 }))
            .await,
        "VERSION_CONFLICT"
    );
    let now = level(&admin, &p, "s1").await;
    assert_eq!(
        (now["quantity"].as_i64(), now["version"].as_i64()),
        (Some(11), Some(2))
    );
}

#[tokio::test]
async fn concurrent_adjustments_all_apply_exactly_once() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "RACE", 0).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let client = admin.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            client
                .data(ADJUST, json!({ "p": p, "s": "s1", "d": 1 }))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let now = level(&admin, &p, "s1").await;
    assert_eq!(now["quantity"], 40);
    assert_eq!(now["version"], 41);
}

#[tokio::test]
async fn transfers_move_stock_atomically() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "a", "MOVE", 10).await;
    create_store(&admin, "b").await;
    init_stock(&admin, &p, "b", 1, 0).await;
    let moved = admin
        .data(TRANSFER, json!({ "p": p, "from": "a", "to": "b", "q": 4 }))
        .await;
    assert_eq!(
        moved["transferStock"],
        json!({ "quantity": 4, "from": { "storeId": "a", "quantity": 6, "available": 6 },
                "to": { "storeId": "b", "quantity": 5, "available": 5 } })
    );
    assert_eq!(
        admin
            .error_code(TRANSFER, json!({ "p": p, "from": "a", "to": "b", "q": 7 }))
            .await,
        "INSUFFICIENT_STOCK"
    );
    create_store(&admin, "c").await;
    assert_eq!(
        admin
            .error_code(TRANSFER, json!({ "p": p, "from": "a", "to": "c", "q": 1 }))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        level(&admin, &p, "a").await["quantity"],
        6,
        "refused transfers change nothing"
    );
    assert_eq!(level(&admin, &p, "b").await["quantity"], 5);
    let total = admin
        .data(
            "query($id: UUID!) { product(id: $id) { totalAvailable stockLevels { storeId } } }",
            json!({ "id": p }),
        )
        .await;
    assert_eq!(total["product"]["totalAvailable"], 11);
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_result() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "a", "IDEM", 10).await;
    create_store(&admin, "b").await;
    init_stock(&admin, &p, "b", 0, 0).await;
    let first = admin
        .data(ADJUST, json!({ "p": p, "s": "a", "d": -3, "k": "count-1" }))
        .await;
    let again = admin
        .data(ADJUST, json!({ "p": p, "s": "a", "d": -3, "k": "count-1" }))
        .await;
    assert_eq!(first, again);
    assert_eq!(level(&admin, &p, "a").await["quantity"], 7);
    let other_input = admin
        .error_code(ADJUST, json!({ "p": p, "s": "a", "d": -2, "k": "count-1" }))
        .await;
    assert_eq!(other_input, "BAD_USER_INPUT");

    let first = admin
        .data(
            TRANSFER,
            json!({ "p": p, "from": "a", "to": "b", "q": 2, "k": "move-1" }),
        )
        .await;
    let again = admin
        .data(
            TRANSFER,
            json!({ "p": p, "from": "a", "to": "b", "q": 2, "k": "move-1" }),
        )
        .await;
    assert_eq!(first, again);
    assert_eq!(level(&admin, &p, "a").await["quantity"], 5);
    assert_eq!(level(&admin, &p, "b").await["quantity"], 2);
}

#[tokio::test]
async fn low_stock_queries_and_signals() {
    let server = Server::start();
    let admin = server.admin();
    create_store(&admin, "s1").await;
    let p = create_product(&admin, "LOW").await;
    let q = create_product(&admin, "FINE").await;
    init_stock(&admin, &p, "s1", 10, 3).await;
    init_stock(&admin, &q, "s1", 50, 3).await;
    admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": -7 }))
        .await;
    let low = admin
        .data("{ lowStock(storeId: \"s1\") { edges { node { product { sku } available reorderPoint lowStock } } } }", json!({}))
        .await;
    assert_eq!(
        low["lowStock"]["edges"],
        json!([{ "node": { "product": { "sku": "LOW" }, "available": 3, "reorderPoint": 3, "lowStock": true } }])
    );
    let not_low = admin
        .data(
            "{ stockLevels(filter: {lowStock: false}) { edges { node { product { sku } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(not_low["stockLevels"]["edges"].as_array().unwrap().len(), 1);
    admin
        .data(ADJUST, json!({ "p": p, "s": "s1", "d": -3 }))
        .await;
    let log = events(&admin, 6).await;
    assert_eq!(
        types(&log),
        [
            "stock.created",
            "stock.created",
            "stock.updated",
            "stock.low",
            "stock.updated",
            "stock.depleted"
        ]
    );
    assert_eq!(log[3]["payload"]["available"], 3);
    assert_eq!(log[3]["payload"]["reorder_point"], 3);
    assert_eq!(log[5]["payload"]["last_quantity"], 3);
    let availability = admin
        .data("query($p: UUID!) { availability(productId: $p, storeId: \"s1\", quantity: 2) { requested available isAvailable } }", json!({ "p": q }))
        .await;
    assert_eq!(
        availability["availability"],
        json!({ "requested": 2, "available": 50, "isAvailable": true })
    );
}

/// Selections a page node must answer as the level's own query does: every field, aliases and
/// fragments (these two resolve plainly), directives, a key selected twice, a product field
/// that needs I/O (these take async-graphql's resolvers). (variables, selection, fragments)
const NODE_SHAPES: &[(&str, &str, &str)] = &[
    (
        "",
        "__typename productId storeId quantity reserved available reorderPoint lowStock version \
         updatedAt product { __typename id sku name description category price createdAt \
         updatedAt } store { __typename id name createdAt }",
        "",
    ),
    (
        "",
        "a: quantity ...Counts ... on StockLevel { reserved p: product { ...Names } } \
         ... { store { ... on Store { name } } }",
        "fragment Counts on StockLevel { available lowStock } \
         fragment Names on Product { sku n: name }",
    ),
    (
        "$yes: Boolean!",
        "quantity @include(if: $yes) reserved @skip(if: $yes) version product @include(if: false) { sku }",
        "",
    ),
    (
        "",
        "quantity quantity product { sku } product { name } store { id }",
        "",
    ),
    (
        "",
        "quantity product { sku totalAvailable stockLevels { storeId quantity } }",
        "",
    ),
];

/// Fields that need I/O of their own and so are resolved by async-graphql, on purpose.
const GENERAL_ONLY: [&str; 2] = ["Product.stockLevels", "Product.totalAvailable"];
