//! Every list query and filter of the schema, with the index each must be served by on SQLite
//! and on PostgreSQL. `covers` names the arguments and filter fields a case exercises; the test
//! fails when the schema has one no case covers.

use stockroom_harness::seed;

/// One list query with one filter.
pub struct Case {
    /// What it lists.
    pub name: &'static str,
    /// `query.argument` or `query.filterField` keys it exercises.
    pub covers: &'static [&'static str],
    /// The GraphQL document; `$after` is the cursor of the page before.
    pub query: String,
    /// Indexes (any one) its SQLite plan must name.
    pub sqlite: &'static [&'static str],
    /// Indexes (any one) its PostgreSQL plan must name.
    pub postgres: &'static [&'static str],
}

/// A paged query: `field(first: 20, after: $after, ARGS)`.
fn page(field: &str, args: &str) -> String {
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(", {args}")
    };
    format!(
        "query($after: String) {{ {field}(first: 20, after: $after{args}) \
         {{ pageInfo {{ hasNextPage endCursor }} edges {{ cursor }} }} }}"
    )
}

/// Every case.
pub fn all() -> Vec<Case> {
    let product = seed::product_id(7);
    let store = seed::store_id(3);
    vec![
        Case {
            name: "products",
            covers: &["products.after"],
            query: page("products", ""),
            sqlite: &["sqlite_autoindex_products_1"],
            postgres: &["products_pkey"],
        },
        Case {
            name: "products by category",
            covers: &["products.category"],
            query: page("products", "filter: {category: \"cat-03\"}"),
            sqlite: &["idx_products_category_id"],
            postgres: &["idx_products_category_id"],
        },
        Case {
            name: "products by search",
            covers: &["products.search"],
            query: page("products", "filter: {search: \"ku-0000123\"}"),
            sqlite: &["product_search VIRTUAL TABLE"],
            postgres: &["idx_products_sku_trgm"],
        },
        Case {
            name: "stock levels",
            covers: &["stockLevels.after"],
            query: page("stockLevels", ""),
            sqlite: &["SCAN stock_levels", "INTEGER PRIMARY KEY"],
            postgres: &["stock_levels_pkey"],
        },
        Case {
            name: "stock levels of a store",
            covers: &["stockLevels.storeId"],
            query: page("stockLevels", &format!("filter: {{storeId: \"{store}\"}}")),
            sqlite: &["idx_stock_levels_store_id"],
            postgres: &["idx_stock_levels_store_id"],
        },
        Case {
            name: "stock levels of a product",
            covers: &["stockLevels.productId"],
            query: page(
                "stockLevels",
                &format!("filter: {{productId: \"{product}\"}}"),
            ),
            sqlite: &["idx_stock_levels_product_id"],
            postgres: &["idx_stock_levels_product_id"],
        },
        Case {
            name: "low stock levels",
            covers: &["stockLevels.lowStock"],
            query: page("stockLevels", "filter: {lowStock: true}"),
            sqlite: &["idx_stock_levels_low"],
            postgres: &["idx_stock_levels_low"],
        },
        Case {
            name: "low stock levels of a store",
            covers: &["stockLevels.lowStock", "stockLevels.storeId"],
            query: page(
                "stockLevels",
                &format!("filter: {{lowStock: true, storeId: \"{store}\"}}"),
            ),
            sqlite: &["idx_stock_levels_low_store"],
            postgres: &["idx_stock_levels_low_store"],
        },
        Case {
            name: "levels that are not low",
            covers: &["stockLevels.lowStock"],
            query: page("stockLevels", "filter: {lowStock: false}"),
            sqlite: &["SCAN stock_levels", "INTEGER PRIMARY KEY"],
            postgres: &["stock_levels_pkey"],
        },
        Case {
            name: "lowStock",
            covers: &["lowStock.after"],
            query: page("lowStock", ""),
            sqlite: &["idx_stock_levels_low"],
            postgres: &["idx_stock_levels_low"],
        },
        Case {
            name: "lowStock of a store",
            covers: &["lowStock.storeId"],
            query: page("lowStock", &format!("storeId: \"{store}\"")),
            sqlite: &["idx_stock_levels_low_store"],
            postgres: &["idx_stock_levels_low_store"],
        },
        Case {
            name: "reservations",
            covers: &["reservations.after"],
            query: page("reservations", ""),
            sqlite: &["sqlite_autoindex_reservations_1"],
            postgres: &["reservations_pkey"],
        },
        Case {
            name: "pending reservations",
            covers: &["reservations.status"],
            query: page("reservations", "filter: {status: PENDING}"),
            sqlite: &["idx_reservations_status_id"],
            postgres: &["idx_reservations_status_id"],
        },
        Case {
            name: "reservations of a store",
            covers: &["reservations.storeId"],
            query: page("reservations", &format!("filter: {{storeId: \"{store}\"}}")),
            sqlite: &["idx_reservations_store_id"],
            postgres: &["idx_reservations_store_id"],
        },
        Case {
            name: "pending reservations of a store",
            covers: &["reservations.storeId", "reservations.status"],
            query: page(
                "reservations",
                &format!("filter: {{storeId: \"{store}\", status: PENDING}}"),
            ),
            sqlite: &["idx_reservations_store_status_id"],
            postgres: &["idx_reservations_store_status_id"],
        },
        Case {
            name: "reservations of a product",
            covers: &["reservations.productId"],
            query: page(
                "reservations",
                &format!("filter: {{productId: \"{product}\"}}"),
            ),
            sqlite: &["idx_reservations_product_id"],
            postgres: &["idx_reservations_product_id"],
        },
        Case {
            name: "reservations of a customer",
            covers: &["reservations.customerId"],
            query: page("reservations", "filter: {customerId: \"cust-000123\"}"),
            sqlite: &["idx_reservations_customer_id"],
            postgres: &["idx_reservations_customer_id"],
        },
        Case {
            name: "reservation stats",
            covers: &[],
            query: "{ reservationStats { pending confirmed reservedQuantity } }".into(),
            sqlite: &["reservation_counts"],
            postgres: &["reservation_counts"],
        },
        Case {
            name: "reservation stats of a store",
            covers: &["reservationStats.storeId"],
            query: format!("{{ reservationStats(storeId: \"{store}\") {{ pending expired }} }}"),
            sqlite: &["sqlite_autoindex_reservation_counts_1"],
            // A few rows per store and state: PostgreSQL reads them without an index.
            postgres: &["reservation_counts"],
        },
        Case {
            name: "events",
            covers: &["events.after"],
            query: page("events", ""),
            sqlite: &["sqlite_autoindex_event_delivery_1"],
            postgres: &["event_delivery_position_key"],
        },
        Case {
            name: "events of a product",
            covers: &["events.productId"],
            query: page("events", &format!("filter: {{productId: \"{product}\"}}")),
            sqlite: &["idx_event_delivery_product"],
            postgres: &["idx_event_delivery_product"],
        },
        Case {
            name: "events of a product and a store",
            covers: &["events.productId", "events.storeId"],
            query: page(
                "events",
                &format!("filter: {{productId: \"{product}\", storeId: \"{store}\"}}"),
            ),
            sqlite: &["idx_event_delivery_product"],
            postgres: &["idx_event_delivery_product"],
        },
        Case {
            name: "events of a store",
            covers: &["events.storeId"],
            query: page("events", &format!("filter: {{storeId: \"{store}\"}}")),
            sqlite: &["idx_event_delivery_store"],
            postgres: &["idx_event_delivery_store"],
        },
        Case {
            name: "events of rare types",
            covers: &["events.types"],
            query: page(
                "events",
                "filter: {types: [\"stock.depleted\", \"stock.low\"]}",
            ),
            sqlite: &["idx_event_delivery_type"],
            postgres: &["idx_event_delivery_type"],
        },
        Case {
            name: "events of rare types in a store",
            covers: &["events.types", "events.storeId"],
            query: page(
                "events",
                &format!(
                    "filter: {{types: [\"stock.depleted\", \"stock.low\"], storeId: \"{store}\"}}"
                ),
            ),
            sqlite: &["idx_event_delivery_store_type"],
            postgres: &["idx_event_delivery_store_type"],
        },
    ]
}
