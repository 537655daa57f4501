//! Pages of stock levels: batched loads, and the plain resolution answering exactly like the
//! generic one for every field of the SDL.

use super::*;

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
            .result_text(
                &format!(
                    "query{page_params} {{ stockLevels(first: 100) {{ edges {{ node {{ {selection} }} }} }} }} {fragments}"
                ),
                json!({ "yes": true }),
            )
            .await;
        let mut nodes = Vec::new();
        for key in &keys {
            let one = admin
                .result_text(
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
            .result_text(&page(field, &args, false), json!({}))
            .await;
        let generic = admin
            .result_text(&page(field, &args, true), json!({}))
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
    let sdl = include_str!("../../../schema.graphql");
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
