//! GraphQL over HTTP as its specification says: GET queries (never mutations), the response's
//! media type from `Accept`, and request errors as 400 without `data` for clients that accept
//! `application/graphql-response+json`. (The reference audit, `graphql-http`'s
//! `serverAudits`, runs against the binary in `e2e/http.mjs`.)

use reqwest::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::common::ws::WAIT;
use crate::common::*;

const RESPONSE_JSON: &str = "application/graphql-response+json";

async fn get(server: &Server, query: &[(&str, &str)], accept: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}/graphql", server.url))
        .bearer_auth(READ_KEY)
        .query(query);
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    request.send().await.expect("an answer")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn queries_run_over_get_with_their_variables_and_the_same_keys() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "GET-1", 7).await;
    let query =
        "query Level($p: UUID!, $s: ID!) { stockLevel(productId: $p, storeId: $s) { quantity } }";
    let variables = json!({ "p": p, "s": "s1" }).to_string();
    let answer = get(
        &server,
        &[
            ("query", query),
            ("variables", &variables),
            ("operationName", "Level"),
        ],
        None,
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert!(
        content_type(&answer).starts_with("application/json"),
        "{}",
        content_type(&answer)
    );
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["data"]["stockLevel"]["quantity"], 7, "{body}");
    // The same keys as POST.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/graphql", server.url))
        .query(&[("query", "{ health { database } }")])
        .send()
        .await
        .expect("an answer");
    assert_eq!(anonymous.status(), 401);
    // Bad parameters are the client's.
    let bad = get(
        &server,
        &[("query", "{ health { database } }"), ("variables", "[1")],
        None,
    )
    .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_mutation_over_get_is_refused_and_changes_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "GET-2", 5).await;
    let mutation = format!(
        "mutation {{ adjustStock(input: {{productId: \"{p}\", storeId: \"s1\", delta: 1}}) {{ version }} }}"
    );
    let refused = reqwest::Client::new()
        .get(format!("{}/graphql", server.url))
        .bearer_auth(ADMIN_KEY)
        .query(&[("query", mutation.as_str())])
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 405);
    assert_eq!(
        refused.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(
        level(&admin, &p, "s1").await["quantity"],
        5,
        "nothing changed"
    );
}

#[tokio::test]
async fn the_media_type_follows_accept_and_request_errors_are_400_without_data() {
    let server = Server::start();
    let invalid = [("query", "{ noSuchField }")];
    // A client that accepts the GraphQL response type: 400, and no `data` at all.
    let strict = get(&server, &invalid, Some(RESPONSE_JSON)).await;
    assert_eq!(strict.status(), 400);
    assert!(content_type(&strict).starts_with(RESPONSE_JSON));
    let body: Value = strict.json().await.expect("JSON");
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // A legacy client (application/json): 200, as it expects.
    let legacy = get(&server, &invalid, Some("application/json")).await;
    assert_eq!(legacy.status(), 200);
    assert!(content_type(&legacy).starts_with("application/json"));
    // A field error is not a request error: 200 with `data`, whatever the client accepts.
    let missing = get(
        &server,
        &[(
            "query",
            "{ product(id: \"01a23333-3333-7333-8333-333333333333\") { sku } }",
        )],
        Some(RESPONSE_JSON),
    )
    .await;
    assert_eq!(missing.status(), 200);
    let body: Value = missing.json().await.expect("JSON");
    assert!(body["data"].is_object(), "{body}");
    // POST answers alike.
    let posted = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(READ_KEY)
        .header(ACCEPT, RESPONSE_JSON)
        .json(&json!({ "query": "query($n: Int!) { products(first: $n) { edges { cursor } } }", "variables": { "n": "ten" } }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        posted.status(),
        400,
        "a variable that does not coerce is a request error"
    );
}

#[tokio::test]
async fn responses_are_compressed_when_accepted_and_pages_revalidate_to_304() {
    use std::io::Read;
    let server = Server::start();
    let admin = server.admin();
    for i in 0..30 {
        seed(&admin, &format!("z{i}"), &format!("ZIP-{i}"), 5).await;
    }
    let query = json!({ "query": "{ stockLevels(first: 100) { edges { node { quantity product { sku name } store { name } } } } }" });
    let post = |encoding: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/graphql", server.url))
            .bearer_auth(READ_KEY)
            .json(&query);
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send()
    };
    let plain = post(None).await.expect("an answer");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.expect("JSON");
    let zipped = post(Some("gzip")).await.expect("an answer");
    assert_eq!(
        zipped
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let bytes = zipped.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let unzipped: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(unzipped["data"], plain["data"]);
    assert!(
        bytes.len() * 3 < text.len(),
        "{} → {}",
        text.len(),
        bytes.len()
    );

    // The pages' files: compressed once in the background, then served compressed; a strong
    // validator turns a second visit into 304s without a body.
    for path in ["/", "/dashboard", "/playground/assets/index.js"] {
        let url = format!("{}{path}", server.url);
        let first = eventually(WAIT, "the file to be served compressed", || async {
            let answer = reqwest::Client::new()
                .get(&url)
                .header("accept", "text/html")
                .header("accept-encoding", "gzip, br")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match answer
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
            {
                Some("br") => Ok(answer),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let etag = first.headers().get("etag").expect("an ETag").clone();
        assert!(
            !etag.to_str().unwrap_or_default().starts_with("W/"),
            "a strong validator"
        );
        let again = reqwest::Client::new()
            .get(&url)
            .header("accept", "text/html")
            .header("if-none-match", etag)
            .send()
            .await
            .expect("an answer");
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.expect("body").is_empty());
    }
}
