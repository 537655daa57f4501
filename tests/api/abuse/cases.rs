//! The table of abusive requests and what each must answer, and what an answer must never
//! contain.

use super::*;

fn raw(name: &'static str, body: impl Into<Vec<u8>>, code: &'static str) -> Case {
    Case {
        name,
        body: body.into(),
        key: Some(ADMIN_KEY),
        code,
    }
}

fn gql(name: &'static str, query: &str, variables: Value, code: &'static str) -> Case {
    raw(
        name,
        json!({ "query": query, "variables": variables }).to_string(),
        code,
    )
}

fn keyed(name: &'static str, key: Option<&'static str>, query: &str, code: &'static str) -> Case {
    Case {
        key,
        ..gql(name, query, json!({}), code)
    }
}

fn nested(depth: usize) -> String {
    let mut inner = "sku".to_owned();
    for i in 0..depth {
        inner = if i % 2 == 0 {
            format!("stockLevels {{ product {{ {inner} }} }}")
        } else {
            inner
        };
    }
    format!("{{ products {{ edges {{ node {{ {inner} }} }} }} }}")
}

pub(super) fn cases(p: &str) -> Vec<Case> {
    let p = p.to_owned();
    let big = "x".repeat(300 * 1024);
    let aliases: String = (0..100)
        .map(|i| format!("a{i}: health {{ database }} "))
        .collect();
    let directives = "@skip(if: false) ".repeat(20);
    vec![
        raw("invalid JSON", "{", "BAD_USER_INPUT"),
        raw("empty body", "", "BAD_USER_INPUT"),
        raw("JSON string", "\"hello\"", "BAD_USER_INPUT"),
        raw("JSON number", "42", "BAD_USER_INPUT"),
        raw("not UTF-8", vec![0xff, 0xfe, 0x7b], "BAD_USER_INPUT"),
        raw(
            "query of the wrong type",
            r#"{"query": 5}"#,
            "BAD_USER_INPUT",
        ),
        raw(
            "variables of the wrong type",
            r#"{"query": "{ stores { id } }", "variables": "x"}"#,
            "BAD_USER_INPUT",
        ),
        raw(
            "batch when batches are off",
            r#"[{"query": "{ stores { id } }"}]"#,
            "BAD_USER_INPUT",
        ),
        raw(
            "batch flood",
            format!(
                "[{}]",
                vec![r#"{"query": "{ stores { id } }"}"#; 500].join(",")
            ),
            "BAD_USER_INPUT",
        ),
        raw(
            "body over the limit",
            format!(r#"{{"query": "{{ stores {{ id }} }}", "pad": "{big}"}}"#),
            "BAD_USER_INPUT",
        ),
        gql("syntax error", "{ products {", json!({}), "BAD_USER_INPUT"),
        gql("empty query", "", json!({}), "BAD_USER_INPUT"),
        gql("unknown field", "{ nope }", json!({}), "BAD_USER_INPUT"),
        gql(
            "unknown argument",
            "{ stores(limit: 1) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "wrong argument type",
            "{ product(id: 5) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "invalid UUID",
            "{ product(id: \"not-a-uuid\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "invalid UUID variable",
            "query($id: UUID!) { product(id: $id) { id } }",
            json!({ "id": "123" }),
            "BAD_USER_INPUT",
        ),
        gql(
            "Int overflow literal",
            "{ products(first: 2147483648) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "Int overflow variable",
            "mutation($d: Int!) { adjustStock(input: {productId: \"00000000-0000-7000-8000-000000000000\", storeId: \"s1\", delta: $d}) { version } }",
            json!({ "d": 1e20 }),
            "BAD_USER_INPUT",
        ),
        gql(
            "float for Int",
            "{ products(first: 1.5) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "null for non-null",
            "mutation { createStore(input: {id: null, name: \"x\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "missing input field",
            "mutation { createStore(input: {id: \"x\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "unknown input field",
            "mutation { createStore(input: {id: \"x\", name: \"y\", bogus: 1}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "unknown enum value",
            "{ reservations(filter: {status: SOLD}) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "unknown event type",
            "{ events(filter: {types: [\"stock.gone\"]}) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "page too large",
            "{ stockLevels(first: 1000) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "negative page",
            "{ products(first: -5) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "forged cursor",
            "{ products(after: \"JyBPUiAxPTE7LS0\") { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "bad event cursor",
            "{ events(after: \"1-1\") { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql("depth bomb", &nested(30), json!({}), "BAD_USER_INPUT"),
        gql(
            "alias bomb",
            &format!("{{ {aliases} }}"),
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "directive bomb",
            &format!("{{ stores {directives} {{ id }} }}"),
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "fragment cycle",
            "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "batch of 1000 lines",
            "mutation($lines: [ReserveLineInput!]!) { reserveStockBatch(input: {lines: $lines}) { id } }",
            json!({ "lines": vec![json!({ "productId": p, "storeId": "s1", "quantity": 1 }); 1000] }),
            "BAD_USER_INPUT",
        ),
        raw(
            "unknown operation name",
            r#"{"query": "query A { stores { id } }", "operationName": "B"}"#,
            "BAD_USER_INPUT",
        ),
        gql(
            "two operations, no name",
            "query A { stores { id } } query B { stores { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "subscription over HTTP",
            "subscription { inventoryEvents { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "huge SKU",
            "mutation($s: String!) { createProduct(input: {sku: $s, name: \"x\"}) { id } }",
            json!({ "s": "S".repeat(100_000) }),
            "BAD_USER_INPUT",
        ),
        gql(
            "NUL in SKU",
            "mutation($s: String!) { createProduct(input: {sku: $s, name: \"x\"}) { id } }",
            json!({ "s": "A\u{0}B" }),
            "BAD_USER_INPUT",
        ),
        gql(
            "empty SKU",
            "mutation { createProduct(input: {sku: \"   \", name: \"x\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "non-numeric price",
            "mutation { createProduct(input: {sku: \"P1\", name: \"x\", price: \"abc\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "store id with a path",
            "mutation { createStore(input: {id: \"../../etc\", name: \"x\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "negative quantity",
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: -3}) { id } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "zero quantity",
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 0}) { id } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "zero TTL",
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1, ttlSeconds: 0}) { id } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "TTL too long",
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1, ttlSeconds: 86401}) { id } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "negative TTL",
            "mutation($p: UUID!) { reserveStock(input: {productId: $p, storeId: \"s1\", quantity: 1, ttlSeconds: -1}) { id } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "zero delta",
            "mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: 0}) { version } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "quantity overflow",
            "mutation($p: UUID!) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: 2147483647}) { version } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "negative absolute stock",
            "mutation($p: UUID!) { setStock(input: {productId: $p, storeId: \"s1\", quantity: -1}) { version } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "transfer to itself",
            "mutation($p: UUID!) { transferStock(input: {productId: $p, fromStoreId: \"s1\", toStoreId: \"s1\", quantity: 1}) { quantity } }",
            json!({ "p": p }),
            "BAD_USER_INPUT",
        ),
        gql(
            "empty batch",
            "mutation { reserveStockBatch(input: {lines: []}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        gql(
            "huge idempotency key",
            "mutation($p: UUID!, $k: String) { adjustStock(input: {productId: $p, storeId: \"s1\", delta: 1, idempotencyKey: $k}) { version } }",
            json!({ "p": p, "k": "k".repeat(1000) }),
            "BAD_USER_INPUT",
        ),
        keyed("no key", None, "{ stores { id } }", "UNAUTHENTICATED"),
        keyed(
            "unknown key",
            Some("guess-guess-guess"),
            "{ stores { id } }",
            "UNAUTHENTICATED",
        ),
        keyed(
            "read key mutating",
            Some(READ_KEY),
            "mutation { createStore(input: {id: \"r\", name: \"r\"}) { id } }",
            "FORBIDDEN",
        ),
        keyed(
            "write key creating a product",
            Some(WRITE_KEY),
            "mutation { createProduct(input: {sku: \"W\", name: \"w\"}) { id } }",
            "FORBIDDEN",
        ),
        keyed(
            "write key redriving",
            Some(WRITE_KEY),
            "mutation { redriveEvents }",
            "FORBIDDEN",
        ),
    ]
}

pub(super) fn leaks(message: &str) -> bool {
    [
        "SELECT", "INSERT", "UPDATE ", "sqlx", "sea_orm", "sqlite", "/root", "/work", "src/",
        ".rs:", "panicked", "thread '",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}
