//! Abusive and malformed requests: each gets a clear error with its code, never a 5xx, never a
//! leak of SQL, paths or panics; the data is unchanged afterwards and the server stays healthy.

use crate::common::*;
use serde_json::{Value, json};

mod cases;

use cases::{cases, leaks};

/// A request as a client could send it: raw body, optional key.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    key: Option<&'static str>,
    code: &'static str,
}

const FINGERPRINT: &str = "{ products(first: 100) { edges { node { id sku name price description category updatedAt } } }
  stores { id name }
  stockLevels(first: 100) { edges { node { productId storeId quantity reserved version updatedAt } } }
  reservations(first: 100) { edges { node { id status } } }
  events(first: 100) { edges { cursor node { type } } } }";

#[tokio::test]
async fn abusive_requests_get_clear_errors_and_change_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "SAFE", 10).await;
    events(&admin, 1).await;
    let before = admin.data(FINGERPRINT, json!({})).await;
    let http = reqwest::Client::new();
    let all = cases(&p);
    assert!(
        all.len() >= 40,
        "at least 40 abusive cases, have {}",
        all.len()
    );
    for case in all {
        let mut request = http
            .post(format!("{}/graphql", server.url))
            .header("content-type", "application/json")
            .body(case.body.clone());
        if let Some(key) = case.key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status();
        assert!(status.as_u16() < 500, "{}: status {status}", case.name);
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: not JSON: {text}", case.name));
        let error = &body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], case.code,
            "{}: {body}",
            case.name
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{}: an error says what is wrong",
            case.name
        );
        assert!(!leaks(&text), "{}: leaks internals: {text}", case.name);
    }
    let after = admin.data(FINGERPRINT, json!({})).await;
    assert_eq!(before, after, "abusive requests changed nothing");
    assert_eq!(
        admin.data("{ health { database } }", json!({})).await["health"]["database"],
        "ok"
    );
    assert_eq!(admin.get("/healthz").await.status(), 200);
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
}

#[tokio::test]
async fn hostile_text_is_stored_verbatim() {
    let server = Server::start();
    let admin = server.admin();
    let texts = [
        "Robert'); DROP TABLE products;--",
        "' OR '1'='1",
        "Ünïcödé ✓ 漢字 🚀 עברית",
        "<script>alert(1)</script>",
        "tab\tand\nnewline",
    ];
    for (i, text) in texts.iter().enumerate() {
        let created = admin
            .data(
                "mutation($sku: String!, $name: String!) { createProduct(input: {sku: $sku, name: $name, description: $name}) { id name description } }",
                json!({ "sku": format!("T-{i}"), "name": text }),
            )
            .await;
        let id = created["createProduct"]["id"].as_str().unwrap();
        let read = admin
            .data(
                "query($id: UUID!) { product(id: $id) { name description } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(read["product"]["name"], *text);
        assert_eq!(read["product"]["description"], *text);
    }
    let found = admin
        .data("{ productBySku(sku: \"' OR '1'='1\") { id } }", json!({}))
        .await;
    assert!(
        found["productBySku"].is_null(),
        "SQL-looking input is data, not SQL"
    );
    let all = admin
        .data("{ products(first: 100) { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(
        all["products"]["edges"].as_array().unwrap().len(),
        texts.len()
    );
}

#[tokio::test]
async fn get_without_a_browser_and_batches_when_enabled() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_MAX_BATCH".into(), "3".into())],
        ..Default::default()
    });
    // A GET that is not from a browser is a GraphQL request: it needs a key, then a query.
    let anonymous = server.client(None).get("/graphql").await;
    assert_eq!(anonymous.status(), 401);
    let get = reqwest::Client::new()
        .get(format!("{}/graphql", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);
    let body: Value = get.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let batch = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!([{ "query": "{ stores { id } }" }, { "query": "{ health { database } }" }]))
        .send()
        .await
        .unwrap();
    let answers: Value = batch.json().await.unwrap();
    assert_eq!(answers[1]["data"]["health"]["database"], "ok");
    assert!(answers[0]["data"]["stores"].is_array());
    let flood = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&vec![json!({ "query": "{ stores { id } }" }); 4])
        .send()
        .await
        .unwrap();
    let refused: Value = flood.json().await.unwrap();
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn introspection_can_be_turned_off_and_cors_allows_configured_origins() {
    let server = Server::start_with(Options {
        env: vec![
            ("STOCKROOM_INTROSPECTION".into(), "false".into()),
            (
                "STOCKROOM_CORS_ORIGINS".into(),
                "https://dash.example.com".into(),
            ),
        ],
        ..Default::default()
    });
    let admin = server.admin();
    let body = admin
        .request("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(
        body["data"]["__schema"].is_null(),
        "introspection is off: {body}"
    );
    let open = Server::start();
    let body = open
        .admin()
        .data("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(
        body["__schema"]["queryType"]["name"], "Query",
        "and on by default"
    );
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", server.url))
        .header("Origin", "https://dash.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let other = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", server.url))
        .header("Origin", "https://evil.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let response = reqwest::Client::new()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
}

#[tokio::test]
async fn internal_errors_are_masked_and_logged() {
    let server = Server::start();
    let admin = server.admin();
    seed(&admin, "s1", "MASK", 1).await;
    // Break the database underneath the server: the table a query needs is gone.
    let url = format!("sqlite://{}?mode=rw", server.database.display());
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "ALTER TABLE reservations RENAME TO reservations_gone",
    )
    .await
    .unwrap();
    let body = admin
        .request("{ reservations { edges { cursor } } }", json!({}))
        .await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL_SERVER_ERROR");
    assert_eq!(error["message"], "internal server error");
    assert!(!leaks(&body.to_string()), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let logs = server.logs();
    assert!(
        logs.contains("no such table: reservations"),
        "the cause is logged for operators:\n{logs}"
    );
    assert_eq!(
        admin.data("{ health { database } }", json!({})).await["health"]["database"],
        "ok"
    );
}

#[tokio::test]
async fn without_keys_beyond_loopback_a_generated_admin_key_is_required() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_LISTEN".into(), "0.0.0.0:0".into())],
        unset: vec!["STOCKROOM_API_KEYS".into()],
        ..Default::default()
    });
    let line = server
        .banner
        .iter()
        .find(|l| l.contains("generated admin key"))
        .expect("the key is printed once");
    let key: &'static str = Box::leak(line.rsplit(' ').next().unwrap().to_owned().into_boxed_str());
    assert!(server.url.starts_with("http://0.0.0.0:"), "{}", server.url);
    let anonymous = server.client(None);
    assert_eq!(
        anonymous.error_code("{ stores { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    let admin = server.client(Some(key));
    admin
        .data(
            r#"mutation { createStore(input: {id: "s", name: "s"}) { id } }"#,
            json!({}),
        )
        .await;
    assert!(!server.logs().contains(key), "the key is never logged");
}

#[tokio::test]
async fn the_page_size_limit_is_configurable() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_MAX_PAGE_SIZE".into(), "10".into())],
        ..Default::default()
    });
    let admin = server.admin();
    assert_eq!(
        admin
            .error_code("{ products(first: 11) { edges { cursor } } }", json!({}))
            .await,
        "BAD_USER_INPUT"
    );
    admin
        .data("{ products(first: 10) { edges { cursor } } }", json!({}))
        .await;
}
