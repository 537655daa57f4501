//! Stock levels: set, adjust, transfer, optimistic locking, low-stock and depletion signals.

use crate::common::*;
use serde_json::json;

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

#[tokio::test]
async fn a_page_of_levels_with_products_and_stores_is_batched() {
    let server = Server::start();
    let admin = server.admin();
    for s in 0..4 {
        create_store(&admin, &format!("st-{s}")).await;
    }
    for i in 0..25 {
        let p = create_product(&admin, &format!("B-{i}")).await;
        init_stock(&admin, &p, &format!("st-{}", i % 4), i, 0).await;
    }
    let data = admin
        .data("{ stockLevels(first: 100) { edges { node { quantity product { sku stockLevels { storeId } } store { id name } } } } }", json!({}))
        .await;
    let edges = data["stockLevels"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 25);
    for (i, edge) in edges.iter().enumerate() {
        assert_eq!(edge["node"]["product"]["sku"], format!("B-{i}"));
        assert_eq!(edge["node"]["store"]["id"], format!("st-{}", i % 4));
    }
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

#[tokio::test]
async fn a_page_node_answers_like_the_level_query() {
    let server = Server::start();
    let admin = server.admin();
    create_store(&admin, "north").await;
    create_store(&admin, "south").await;
    for i in 0..6 {
        let p = create_product(&admin, &format!("SHAPE-{i}")).await;
        init_stock(&admin, &p, "north", i * 3, 4).await;
        if i % 2 == 0 {
            init_stock(&admin, &p, "south", 10 + i, 0).await;
        }
    }
    let keys = admin
        .data(
            "{ stockLevels(first: 100) { edges { node { productId storeId } } } }",
            json!({}),
        )
        .await;
    let keys = keys["stockLevels"]["edges"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 9);
    for (params, selection, fragments) in NODE_SHAPES {
        let (page_params, one_params) = if params.is_empty() {
            (String::new(), "($p: UUID!, $s: ID!)".to_owned())
        } else {
            (
                format!("({params})"),
                format!("($p: UUID!, $s: ID!, {params})"),
            )
        };
        let page = admin
            .request_text(
                &format!(
                    "query{page_params} {{ stockLevels(first: 100) {{ edges {{ node {{ {selection} }} }} }} }} {fragments}"
                ),
                json!({ "yes": true }),
            )
            .await;
        let mut nodes = Vec::new();
        for key in &keys {
            let one = admin
                .request_text(
                    &format!(
                        "query{one_params} {{ stockLevel(productId: $p, storeId: $s) {{ {selection} }} }} {fragments}"
                    ),
                    json!({ "p": key["node"]["productId"], "s": key["node"]["storeId"], "yes": true }),
                )
                .await;
            let node = one
                .strip_prefix(r#"{"data":{"stockLevel":"#)
                .and_then(|rest| rest.strip_suffix("}}"))
                .unwrap_or_else(|| panic!("unexpected response for {selection}: {one}"));
            nodes.push(format!(r#"{{"node":{node}}}"#));
        }
        let expected = format!(
            r#"{{"data":{{"stockLevels":{{"edges":[{}]}}}}}}"#,
            nodes.join(",")
        );
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(parse(&page), parse(&expected), "selection: {selection}");
        // Keys come in selection order (the level query's resolvers may put `store` first
        // when its loader answers first).
        if selection.contains("updatedAt product") {
            for node in page.split(r#"{"node":"#).skip(1) {
                let product = node.find(r#""product":"#).unwrap_or(0);
                assert!(
                    product < node.find(r#""store":"#).unwrap(),
                    "{selection}: {node}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_page_answers_like_the_generic_connection() {
    let server = Server::start();
    let admin = server.admin();
    create_store(&admin, "east").await;
    for i in 0..7 {
        let p = create_product(&admin, &format!("PAGE-{i}")).await;
        init_stock(&admin, &p, "east", i, 3).await;
    }
    // The same selection twice: once as it is, once with a response key selected twice, which
    // the plain pass hands to async-graphql's connection resolvers.
    let page = |field: &str, args: &str, twice: bool| {
        let typename = if twice {
            "t: __typename t: __typename"
        } else {
            "t: __typename"
        };
        format!(
            "{{ {field}({args}) {{ {typename} pageInfo {{ hasPreviousPage hasNextPage startCursor \
             endCursor }} edges {{ cursor node {{ quantity lowStock store {{ id }} }} }} \
             nodes {{ productId }} }} }}"
        )
    };
    let first = admin
        .data(&page("stockLevels", "first: 3", false), json!({}))
        .await;
    let end = first["stockLevels"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let shapes = [
        ("stockLevels", "first: 3".to_owned()),
        ("stockLevels", format!("first: 3, after: \"{end}\"")),
        ("lowStock", "first: 100".to_owned()),
        (
            "stockLevels",
            "first: 100, filter: {storeId: \"nowhere\"}".to_owned(),
        ),
    ];
    for (field, args) in shapes {
        let plain = admin
            .request_text(&page(field, &args, false), json!({}))
            .await;
        let generic = admin
            .request_text(&page(field, &args, true), json!({}))
            .await;
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(parse(&plain), parse(&generic), "{field}({args})");
        assert!(parse(&plain).get("errors").is_none(), "{plain}");
        let order: Vec<usize> = [r#""t":"#, r#""pageInfo":"#, r#""edges":"#, r#""nodes":"#]
            .iter()
            .map(|key| plain.find(key).unwrap())
            .collect();
        assert!(order.is_sorted(), "keys out of selection order: {plain}");
    }
    let low = admin
        .data(&page("lowStock", "first: 100", false), json!({}))
        .await;
    assert_eq!(low["lowStock"]["edges"].as_array().unwrap().len(), 4);
    assert_eq!(first["stockLevels"]["pageInfo"]["hasNextPage"], true);
}

/// The fields of `type_name` in the committed SDL: (name, type without `!`/`[]`, has arguments).
fn sdl_fields(type_name: &str) -> Vec<(String, String, bool)> {
    let sdl = include_str!("../../schema.graphql");
    let start = sdl
        .find(&format!("\ntype {type_name} "))
        .unwrap_or_else(|| panic!("type {type_name} in schema.graphql"));
    let mut fields = Vec::new();
    let mut in_doc = false;
    for line in sdl[start + 1..].lines().skip(1) {
        let line = line.trim();
        if line == "}" {
            break;
        }
        if line.starts_with("\"\"\"") {
            if !(line.len() > 6 && line.ends_with("\"\"\"")) {
                in_doc = !in_doc;
            }
            continue;
        }
        if in_doc || line.is_empty() {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        let Some(type_part) = rest.rsplit(": ").next() else {
            continue;
        };
        let kind = type_part.trim_matches(|c| c == '!' || c == '[' || c == ']');
        fields.push((name.to_owned(), kind.to_owned(), rest.starts_with('(')));
    }
    fields
}

/// Fields that need I/O of their own and so are resolved by async-graphql, on purpose.
const GENERAL_ONLY: [&str; 2] = ["Product.stockLevels", "Product.totalAvailable"];

/// The selection of every field of `type_name` the plain pass must answer.
fn plain_selection(type_name: &str) -> String {
    sdl_fields(type_name)
        .into_iter()
        .filter(|(name, _, has_arguments)| {
            !has_arguments && !GENERAL_ONLY.contains(&format!("{type_name}.{name}").as_str())
        })
        .map(|(name, kind, _)| match kind.as_str() {
            "Product" | "Store" => format!("{name} {{ {} }}", plain_selection(&kind)),
            _ => name,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn plain_fallbacks(server: &Server) -> f64 {
    metric(&server.admin(), "stockroom_plain_fallbacks_total").await
}

#[tokio::test]
async fn every_field_of_a_page_node_in_the_sdl_resolves_plainly() {
    let server = Server::start();
    let admin = server.admin();
    seed(&admin, "s1", "PLAIN", 5).await;
    let selection = plain_selection("StockLevel");
    assert!(
        selection.contains("product {") && selection.contains("store {"),
        "{selection}"
    );
    let page = format!(
        "{{ stockLevels(first: 5) {{ edges {{ cursor node {{ __typename {selection} }} }} }} }}"
    );
    let data = admin.data(&page, json!({})).await;
    assert_eq!(
        data["stockLevels"]["edges"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        plain_fallbacks(&server).await,
        0.0,
        "a field of StockLevel, Product or Store in the SDL has no plain arm: {selection}"
    );
    // The check can fail: a field resolved only by async-graphql takes the general path.
    admin
        .data(
            "{ stockLevels(first: 5) { edges { node { product { totalAvailable } } } } }",
            json!({}),
        )
        .await;
    assert!(plain_fallbacks(&server).await >= 1.0);
}
