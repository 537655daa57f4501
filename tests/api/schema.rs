//! The committed `schema.graphql` is exactly what `stockroom schema` prints.

use std::process::Command;

#[test]
fn committed_schema_matches_the_built_schema() {
    let output = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("schema")
        .output()
        .expect("run schema");
    assert!(output.status.success());
    let built = String::from_utf8(output.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed");
    assert!(
        built == committed,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql` and commit it"
    );
}

#[test]
fn schema_has_the_contract_names() {
    let output = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("schema")
        .output()
        .expect("run schema");
    let sdl = String::from_utf8(output.stdout).expect("utf-8");
    for name in [
        "type Query",
        "type Mutation",
        "type Subscription",
        "scalar DateTime",
        "scalar UUID",
        "scalar JSON",
        "enum ReservationStatus",
        "type ProductConnection",
        "type StockLevelConnection",
        "type ReservationConnection",
        "type InventoryEventConnection",
        "input ReserveStockBatchInput",
        "redriveEvents(ids: [UUID!]): Int!",
        "availability(productId: UUID!, storeId: ID!, quantity: Int! = 1): Availability!",
    ] {
        assert!(sdl.contains(name), "SDL lacks {name:?}");
    }
}
