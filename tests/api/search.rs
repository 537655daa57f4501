//! Product search finds a case-insensitive substring of the name or SKU through a trigram index
//! (FTS5 on SQLite, pg_trgm on PostgreSQL), with the same answers on both, kept current by
//! renames and deletions.

use crate::common::postgres::{drop_database, fresh_database, on_postgres};
use crate::common::*;
use serde_json::json;

/// The catalogue: (SKU, name), created in this order.
const CATALOGUE: &[(&str, &str)] = &[
    ("KET-RED-01", "Red Kettle"),
    ("KET-RED-02", "red kettle mini"),
    ("POT-100", "Teapot 100% steel"),
    ("MUG_BLUE", "Blue mug"),
    ("CUP-1", "Espresso cup"),
];

/// (search, SKUs found in creation order).
const SEARCHES: &[(&str, &[&str])] = &[
    ("kettle", &["KET-RED-01", "KET-RED-02"]),
    ("KETTLE", &["KET-RED-01", "KET-RED-02"]),
    ("ket-red-02", &["KET-RED-02"]),
    ("ttle m", &["KET-RED-02"]),
    ("100%", &["POT-100"]),
    ("g_b", &["MUG_BLUE"]),
    ("%", &["POT-100"]),
    ("_", &["MUG_BLUE"]),
    ("pot", &["POT-100"]),
    ("up", &["CUP-1"]),
    ("t1", &[]),
    ("zzz", &[]),
    ("   cup  ", &["CUP-1"]),
];

async fn search(client: &Client, text: &str) -> Vec<String> {
    let data = client
        .data(
            "query($s: String) { products(first: 100, filter: {search: $s}) { edges { node { sku } } } }",
            json!({ "s": text }),
        )
        .await;
    data["products"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["sku"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates the catalogue, checks every search, then renames and deletes.
async fn searches_find_substrings(server: &Server) {
    let admin = server.admin();
    let mut ids = Vec::new();
    for (sku, name) in CATALOGUE {
        let data = admin
            .data(
                "mutation($sku: String!, $name: String!) { createProduct(input: {sku: $sku, name: $name}) { id } }",
                json!({ "sku": sku, "name": name }),
            )
            .await;
        ids.push(data["createProduct"]["id"].as_str().unwrap().to_owned());
    }
    for (text, expected) in SEARCHES {
        assert_eq!(search(&admin, text).await, *expected, "search {text:?}");
    }

    // A renamed product is found by its new name only.
    admin
        .data(
            "mutation($id: UUID!) { updateProduct(id: $id, input: {name: \"Green Kettle\"}) { name } }",
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(search(&admin, "green ket").await, ["KET-RED-02"]);
    assert_eq!(search(&admin, "ttle m").await, Vec::<String>::new());
    assert_eq!(search(&admin, "kettle").await, ["KET-RED-01", "KET-RED-02"]);

    // A deleted product is not found any more.
    admin
        .data(
            "mutation($id: UUID!) { deleteProduct(id: $id) }",
            json!({ "id": ids[0] }),
        )
        .await;
    assert_eq!(search(&admin, "kettle").await, ["KET-RED-02"]);

    // Search and category together.
    let page = admin
        .data(
            "{ products(filter: {search: \"kettle\", category: \"none\"}) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(page["products"]["edges"], json!([]));
}

#[tokio::test]
async fn search_finds_substrings_of_names_and_skus_on_sqlite() {
    let server = Server::start();
    searches_find_substrings(&server).await;
}

#[tokio::test]
async fn search_finds_the_same_on_postgres() {
    let url = fresh_database().await;
    let server = Server::start_with(on_postgres(url.clone()));
    searches_find_substrings(&server).await;
    drop(server);
    drop_database(&url).await;
}
