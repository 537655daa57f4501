//! The dashboard baseline: the same three SELECTs as the server, and `serde_json` of the same
//! response body.

use super::*;

/// The dashboard page as the GraphQL response shapes it.
#[derive(Serialize)]
struct Page<'a> {
    data: PageData<'a>,
}

#[derive(Serialize)]
struct PageData<'a> {
    #[serde(rename = "stockLevels")]
    stock_levels: Edges<'a>,
}

#[derive(Serialize)]
struct Edges<'a> {
    edges: Vec<Edge<'a>>,
}

#[derive(Serialize)]
struct Edge<'a> {
    node: Node<'a>,
}

#[derive(Serialize)]
struct Node<'a> {
    quantity: i64,
    reserved: i64,
    available: i64,
    product: ProductRef<'a>,
    store: StoreRef<'a>,
}

#[derive(Serialize)]
struct ProductRef<'a> {
    sku: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct StoreRef<'a> {
    name: &'a str,
}

/// A stock level as the dashboard uses it.
pub(crate) struct LevelRow {
    pub(crate) product_id: Uuid,
    pub(crate) store_id: String,
    pub(crate) quantity: i64,
    pub(crate) reserved: i64,
}

/// A product as the dashboard uses it.
pub(crate) struct ProductRow {
    pub(crate) sku: String,
    pub(crate) name: String,
}

fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One dashboard request without GraphQL or HTTP: the page of levels, then its products and
/// stores by id (every column, as the service's entities read them, timestamps parsed), then the
/// response JSON. Returns the JSON length.
fn dashboard_once(conn: &Conn, page: usize) -> SqlResult<usize> {
    let mut levels_stmt = conn.prepare(
        "SELECT id, product_id, store_id, quantity, reserved, reorder_point, version, \
         created_at, updated_at FROM stock_levels ORDER BY id ASC LIMIT ?1",
    )?;
    levels_stmt.bind_i64(1, page as i64 + 1)?;
    let mut levels = Vec::with_capacity(page + 1);
    while levels_stmt.step()? {
        let _ = levels_stmt.column_i64(0);
        let _ = levels_stmt.column_i64(5) + levels_stmt.column_i64(6);
        let _ = parse_time(levels_stmt.column_text(7));
        let _ = parse_time(levels_stmt.column_text(8));
        levels.push(LevelRow {
            product_id: Uuid::from_slice(levels_stmt.column_blob(1)).unwrap_or_default(),
            store_id: levels_stmt.column_text(2).to_owned(),
            quantity: levels_stmt.column_i64(3),
            reserved: levels_stmt.column_i64(4),
        });
    }
    levels.truncate(page);
    let mut product_ids: Vec<Uuid> = levels.iter().map(|l| l.product_id).collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let mut store_ids: Vec<&str> = levels.iter().map(|l| l.store_id.as_str()).collect();
    store_ids.sort_unstable();
    store_ids.dedup();
    let mut products_stmt = conn.prepare(&format!(
        "SELECT id, sku, name, description, category, price, created_at, updated_at \
         FROM products WHERE id IN ({})",
        in_list(product_ids.len())
    ))?;
    for (i, id) in product_ids.iter().enumerate() {
        products_stmt.bind_blob(i as i32 + 1, id.as_bytes())?;
    }
    let mut products = HashMap::with_capacity(product_ids.len());
    while products_stmt.step()? {
        let id = Uuid::from_slice(products_stmt.column_blob(0)).unwrap_or_default();
        let _ = (
            products_stmt.column_text(3).to_owned(),
            products_stmt.column_text(4).to_owned(),
            products_stmt.column_text(5).to_owned(),
            parse_time(products_stmt.column_text(6)),
            parse_time(products_stmt.column_text(7)),
        );
        products.insert(
            id,
            ProductRow {
                sku: products_stmt.column_text(1).to_owned(),
                name: products_stmt.column_text(2).to_owned(),
            },
        );
    }
    let mut stores_stmt = conn.prepare(&format!(
        "SELECT id, name, created_at FROM stores WHERE id IN ({})",
        in_list(store_ids.len())
    ))?;
    for (i, id) in store_ids.iter().enumerate() {
        stores_stmt.bind_text(i as i32 + 1, id)?;
    }
    let mut stores = HashMap::with_capacity(store_ids.len());
    while stores_stmt.step()? {
        let _ = parse_time(stores_stmt.column_text(2));
        stores.insert(
            stores_stmt.column_text(0).to_owned(),
            stores_stmt.column_text(1).to_owned(),
        );
    }
    let body = page_json(&levels, &products, &stores).map_err(SqlError)?;
    Ok(body.len())
}

/// The response body of a dashboard page, as the server writes it.
pub(crate) fn page_json(
    levels: &[LevelRow],
    products: &HashMap<Uuid, ProductRow>,
    stores: &HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let empty = ProductRow {
        sku: String::new(),
        name: String::new(),
    };
    let edges = levels
        .iter()
        .map(|l| {
            let product = products.get(&l.product_id).unwrap_or(&empty);
            Edge {
                node: Node {
                    quantity: l.quantity,
                    reserved: l.reserved,
                    available: l.quantity - l.reserved,
                    product: ProductRef {
                        sku: &product.sku,
                        name: &product.name,
                    },
                    store: StoreRef {
                        name: stores.get(&l.store_id).map(String::as_str).unwrap_or(""),
                    },
                },
            }
        })
        .collect();
    serde_json::to_vec(&Page {
        data: PageData {
            stock_levels: Edges { edges },
        },
    })
    .map_err(|e| e.to_string())
}

/// The dashboard baseline: `threads` OS threads, one connection each, repeating
/// [`dashboard_once`] for `duration`. Statements are prepared per request, as the service's
/// driver would find them in its statement cache (preparing a SELECT is a few microseconds).
pub fn dashboard_loop(
    path: &Path,
    threads: usize,
    page: usize,
    duration: Duration,
) -> BenchResult<RunStats> {
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.to_path_buf();
            std::thread::spawn(move || -> BenchResult<(Vec<u32>, u64)> {
                let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match dashboard_once(&conn, page) {
                        Ok(_) => latencies.push(micros(t.elapsed())),
                        Err(_) => errors += 1,
                    }
                }
                Ok((latencies, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().map_err(|_| "baseline thread panicked")??;
        all.extend(l);
        errors += e;
    }
    Ok(RunStats::from_latencies(all, errors, start.elapsed()))
}

/// Length in bytes of the baseline's dashboard response (to compare with the server's).
pub fn dashboard_body_len(path: &Path, page: usize) -> BenchResult<usize> {
    let conn = Conn::open(&path.to_string_lossy()).map_err(sql)?;
    dashboard_once(&conn, page).map_err(sql)
}
