//! The operations `data-scale` times: every list query and filter of the schema, the stats,
//! lookups by key and the outbox gauges, each with variables that move over the data set from
//! one sample to the next (so no sample reads only what the one before left in a cache).

use serde_json::{Value, json};
use stockroom_harness::seed::{self, Size};

/// One timed GraphQL operation.
pub struct Operation {
    /// Its name in the table.
    pub name: &'static str,
    /// The document.
    pub query: &'static str,
    /// Variables for sample `k` of a data set of `size`.
    pub variables: fn(u64, Size) -> Value,
}

/// A page's fields: cursors only, so the figure is the query, not the rendering.
macro_rules! page {
    ($variables:literal, $field:literal, $args:literal) => {
        concat!(
            "query",
            $variables,
            " { ",
            $field,
            "(first: 20",
            $args,
            ") { pageInfo { hasNextPage } edges { cursor } } }"
        )
    };
}

fn product(k: u64, size: Size) -> String {
    seed::product_id(1 + (k * 7_919) % size.products)
}

fn store(k: u64, size: Size) -> String {
    seed::store_id(1 + k % size.stores)
}

fn keys(k: u64, size: Size) -> Value {
    json!({
        "p": product(k, size),
        "s": store(k, size),
        "c": format!("cust-{:06}", (k * 31) % size.customers()),
        "after": null,
    })
}

/// Every operation, in table order.
pub const ALL: &[Operation] = &[
    Operation {
        name: "product(id)",
        query: "query($p: UUID!) { product(id: $p) { sku name } }",
        variables: |k, size| json!({ "p": product(k, size) }),
    },
    Operation {
        name: "stockLevel(productId, storeId)",
        query: "query($p: UUID!, $s: ID!) { stockLevel(productId: $p, storeId: $s) { available } }",
        variables: |k, size| json!({ "p": product(k, size), "s": store(k, size) }),
    },
    Operation {
        name: "products",
        query: page!("", "products", ""),
        variables: keys,
    },
    Operation {
        name: "products(filter: category)",
        query: page!("", "products", ", filter: {category: \"cat-07\"}"),
        variables: keys,
    },
    Operation {
        name: "products(filter: search), one hit",
        query: "query($q: String) { products(first: 20, filter: {search: $q}) { edges { cursor } } }",
        variables: |k, size| json!({ "q": seed::sku(1 + (k * 7_919) % size.products).to_lowercase()[1..].to_owned() }),
    },
    Operation {
        name: "stockLevels",
        query: page!("", "stockLevels", ""),
        variables: keys,
    },
    Operation {
        name: "stockLevels(filter: storeId)",
        query: page!("($s: ID)", "stockLevels", ", filter: {storeId: $s}"),
        variables: keys,
    },
    Operation {
        name: "stockLevels(filter: productId)",
        query: page!("($p: UUID)", "stockLevels", ", filter: {productId: $p}"),
        variables: keys,
    },
    Operation {
        name: "stockLevels(filter: lowStock)",
        query: page!("", "stockLevels", ", filter: {lowStock: true}"),
        variables: keys,
    },
    Operation {
        name: "lowStock(storeId)",
        query: page!("($s: ID)", "lowStock", ", storeId: $s"),
        variables: keys,
    },
    Operation {
        name: "reservations",
        query: page!("", "reservations", ""),
        variables: keys,
    },
    Operation {
        name: "reservations(filter: status PENDING)",
        query: page!("", "reservations", ", filter: {status: PENDING}"),
        variables: keys,
    },
    Operation {
        name: "reservations(filter: storeId)",
        query: page!("($s: ID)", "reservations", ", filter: {storeId: $s}"),
        variables: keys,
    },
    Operation {
        name: "reservations(filter: storeId, PENDING)",
        query: page!(
            "($s: ID)",
            "reservations",
            ", filter: {storeId: $s, status: PENDING}"
        ),
        variables: keys,
    },
    Operation {
        name: "reservations(filter: productId)",
        query: page!("($p: UUID)", "reservations", ", filter: {productId: $p}"),
        variables: keys,
    },
    Operation {
        name: "reservations(filter: customerId)",
        query: page!("($c: String)", "reservations", ", filter: {customerId: $c}"),
        variables: keys,
    },
    Operation {
        name: "reservationStats",
        query: "{ reservationStats { pending confirmed cancelled expired reservedQuantity } }",
        variables: |_, _| json!({}),
    },
    Operation {
        name: "reservationStats(storeId)",
        query: "query($s: ID) { reservationStats(storeId: $s) { pending reservedQuantity } }",
        variables: |k, size| json!({ "s": store(k, size) }),
    },
    Operation {
        name: "events(after)",
        query: page!("($after: String)", "events", ", after: $after"),
        variables: |k, size| json!({ "after": format!("{}-0", (k * 7_919) % size.events) }),
    },
    Operation {
        name: "events(filter: productId)",
        query: page!("($p: UUID)", "events", ", filter: {productId: $p}"),
        variables: keys,
    },
    Operation {
        name: "events(filter: storeId)",
        query: page!("($s: ID)", "events", ", filter: {storeId: $s}"),
        variables: keys,
    },
    Operation {
        name: "events(filter: types), rare",
        query: page!(
            "",
            "events",
            ", filter: {types: [\"stock.depleted\", \"stock.low\"]}"
        ),
        variables: keys,
    },
    Operation {
        name: "events(filter: types, storeId), rare",
        query: page!(
            "($s: ID)",
            "events",
            ", filter: {types: [\"stock.depleted\", \"stock.low\"], storeId: $s}"
        ),
        variables: keys,
    },
    Operation {
        name: "outbox",
        query: "{ outbox { pending dead oldestPendingAgeMs } }",
        variables: |_, _| json!({}),
    },
];
