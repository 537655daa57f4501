//! Data through the API: stores, products and levels to start from, and the event log read
//! back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Client;

/// Creates a store.
pub async fn create_store(client: &Client, id: &str) {
    client
        .data(
            "mutation($id: ID!) { createStore(input: {id: $id, name: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
}

/// Creates a product; returns its id.
pub async fn create_product(client: &Client, sku: &str) -> String {
    let data = client
        .data(
            "mutation($sku: String!) { createProduct(input: {sku: $sku, name: $sku, price: \"9.99\"}) { id } }",
            json!({ "sku": sku }),
        )
        .await;
    data["createProduct"]["id"].as_str().expect("id").to_owned()
}

/// Creates a stock level.
pub async fn init_stock(
    client: &Client,
    product: &str,
    store: &str,
    quantity: i32,
    reorder_point: i32,
) -> Value {
    let data = client
        .data(
            "mutation($p: UUID!, $s: ID!, $q: Int!, $r: Int) {
               initializeStock(input: {productId: $p, storeId: $s, quantity: $q, reorderPoint: $r}) {
                 quantity reserved available version reorderPoint lowStock } }",
            json!({ "p": product, "s": store, "q": quantity, "r": reorder_point }),
        )
        .await;
    data["initializeStock"].clone()
}

/// A store with one product stocked at `quantity`; returns the product id.
pub async fn seed(client: &Client, store: &str, sku: &str, quantity: i32) -> String {
    create_store(client, store).await;
    let product = create_product(client, sku).await;
    init_stock(client, &product, store, quantity, 0).await;
    product
}

/// The stock level of a product in a store.
pub async fn level(client: &Client, product: &str, store: &str) -> Value {
    let data = client
        .data(
            "query($p: UUID!, $s: ID!) { stockLevel(productId: $p, storeId: $s) {
               quantity reserved available version lowStock reorderPoint } }",
            json!({ "p": product, "s": store }),
        )
        .await;
    data["stockLevel"].clone()
}

/// Every event in the log (waits until `min` have been positioned, up to 10 s).
pub async fn events(client: &Client, min: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = client
                .data(
                    "query($after: String) { events(first: 100, after: $after) {
                       edges { cursor node { id cursor type aggregateType aggregateId storeId productId payload occurredAt publishedAt } }
                       pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await;
            let page = &data["events"];
            all.extend(
                page["edges"]
                    .as_array()
                    .expect("edges")
                    .iter()
                    .map(|e| e["node"].clone()),
            );
            if !page["pageInfo"]["hasNextPage"].as_bool().unwrap_or(false) {
                break;
            }
            after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
        if all.len() >= min || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The types of `events`, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Each client reserves one unit of the level at the same time; returns (granted, refused for
/// `INSUFFICIENT_STOCK`). Any other error fails the test.
pub async fn race_for_one_unit(clients: Vec<Client>, product: &str, store: &str) -> (usize, usize) {
    let query = "mutation($p: UUID!, $s: ID!) { reserveStock(input: {productId: $p, storeId: $s, quantity: 1}) { id } }";
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let vars = json!({ "p": product, "s": store });
            tokio::spawn(async move { client.request(query, vars).await })
        })
        .collect();
    let (mut granted, mut refused) = (0, 0);
    for task in tasks {
        let body = task.await.expect("request task");
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => granted += 1,
            Some("INSUFFICIENT_STOCK") => refused += 1,
            Some(other) => panic!("unexpected {other}: {body}"),
        }
    }
    (granted, refused)
}

/// Eight writers each taking one unit of `product` in store `s1`, 200 times, until the server
/// stops answering; `server` is killed 700 ms in (a burst cut short by SIGKILL).
pub async fn kill_mid_burst(server: &mut super::Server, product: &str) {
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (url, product) = (server.url.clone(), product.to_owned());
        writers.push(tokio::spawn(async move {
            let take_one = "mutation($p: UUID!) {
              adjustStock(input: {productId: $p, storeId: \"s1\", delta: -1}) { version } }";
            for _ in 0..200 {
                let sent = reqwest::Client::new()
                    .post(format!("{url}/graphql"))
                    .bearer_auth(super::ADMIN_KEY)
                    .json(&json!({ "query": take_one, "variables": { "p": product } }))
                    .send()
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    for writer in writers {
        let _ = writer.await;
    }
}
