//! The scenarios: each alternates server runs with baseline runs (so noise hits both alike) and
//! returns rows of medians.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::baseline::{self, Sku};
use crate::load::{self, RunStats};
use crate::redis_util::{self, RedisServer};
use crate::report::Row;
use crate::server::{BenchResult, Gql, Launch, Server, has_errors};

/// Everything a scenario needs to know.
#[derive(Debug, Clone)]
pub struct Context {
    /// The release `stockroom` binary (servers and `migrate`).
    pub binary: PathBuf,
    /// The `redis-server` binary.
    pub redis_binary: String,
    /// External server instead of starting one: URL and admin key.
    pub external: Option<(String, String)>,
    /// Runs per scenario.
    pub runs: usize,
    /// Length of each timed run.
    pub duration: Duration,
    /// Concurrent clients for reservations.
    pub clients: usize,
    /// Concurrent clients for dashboard reads.
    pub read_clients: usize,
    /// Threads of the dashboard baseline.
    pub baseline_threads: usize,
    /// Products for spread/dashboard.
    pub products: usize,
    /// Stores for spread/dashboard.
    pub stores: usize,
    /// Backlog size for the relay drain.
    pub events: usize,
    /// WebSocket subscribers in fanout.
    pub subscribers: usize,
    /// Events per second written in fanout.
    pub rate: u64,
    /// Scratch directory (databases).
    pub scratch: PathBuf,
}

/// Units on every seeded level: enough that no run ever runs out.
const HUGE_STOCK: i64 = 10_000_000;

const RESERVE: &str =
    "mutation Reserve($input: ReserveStockInput!) { reserveStock(input: $input) { id status } }";

const DASHBOARD: &str = "query Dashboard { stockLevels(first: 100) { edges { node { quantity \
    reserved available product { sku name } store { name } } } } }";

impl Context {
    fn db(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("{name}.db"))
    }

    /// A migrated, seeded database file named `name`.
    async fn seeded(&self, name: &str, products: usize, stores: usize) -> BenchResult<Vec<Sku>> {
        let path = self.db(name);
        baseline::migrate(&self.binary, &path).await?;
        let path2 = path.clone();
        tokio::task::spawn_blocking(move || baseline::seed(&path2, products, stores, HUGE_STOCK))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The server for a scenario: started on a seeded copy of the data, or the external one
    /// seeded through GraphQL.
    pub async fn server(
        &self,
        name: &str,
        products: usize,
        stores: usize,
    ) -> BenchResult<(Server, Vec<Sku>)> {
        self.server_with(name, products, stores, &[]).await
    }

    /// Like [`Context::server`], with extra environment for a server the bench starts.
    pub async fn server_with(
        &self,
        name: &str,
        products: usize,
        stores: usize,
        env: &[(&str, &str)],
    ) -> BenchResult<(Server, Vec<Sku>)> {
        match &self.external {
            Some((url, key)) => {
                let server = Server::external(url, key);
                let gql = server.client(4)?;
                let skus = seed_graphql(&gql, products, stores).await?;
                Ok((server, skus))
            }
            None => {
                let skus = self.seeded(name, products, stores).await?;
                let mut launch = Launch::new(&self.binary, &self.db(name));
                launch
                    .env
                    .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                let server = Server::start(&launch).await?;
                Ok((server, skus))
            }
        }
    }
}

/// Creates products, stores and levels through the API (for an external server), 100 mutations
/// per request.
async fn seed_graphql(gql: &Gql, products: usize, stores: usize) -> BenchResult<Vec<Sku>> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let store_ids: Vec<String> = (0..stores).map(|s| format!("bench-{tag}-{s}")).collect();
    let mut m = String::from("mutation {");
    for (i, id) in store_ids.iter().enumerate() {
        m.push_str(&format!(
            " s{i}: createStore(input: {{id: \"{id}\", name: \"Bench {i}\"}}) {{ id }}"
        ));
    }
    m.push('}');
    gql.run(&m, json!({})).await?;
    let mut product_ids = Vec::with_capacity(products);
    for chunk in (0..products).collect::<Vec<_>>().chunks(100) {
        let mut m = String::from("mutation {");
        for p in chunk {
            m.push_str(&format!(
                " p{p}: createProduct(input: {{sku: \"B-{tag}-{p}\", name: \"Bench {p}\"}}) {{ id }}"
            ));
        }
        m.push('}');
        let data = gql.run(&m, json!({})).await?;
        for p in chunk {
            let id = data[format!("p{p}")]["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("createProduct returned no id")?;
            product_ids.push(id);
        }
    }
    let skus: Vec<Sku> = product_ids
        .iter()
        .flat_map(|p| {
            store_ids.iter().map(|s| Sku {
                product_id: *p,
                store_id: s.clone(),
            })
        })
        .collect();
    for chunk in skus.chunks(100) {
        let mut m = String::from("mutation {");
        for (i, sku) in chunk.iter().enumerate() {
            m.push_str(&format!(
                " l{i}: initializeStock(input: {{productId: \"{}\", storeId: \"{}\", quantity: {HUGE_STOCK}}}) {{ version }}",
                sku.product_id, sku.store_id
            ));
        }
        m.push('}');
        gql.run(&m, json!({})).await?;
    }
    Ok(skus)
}

/// Reservation load against the server: `clients` workers, each `reserveStock` quantity 1 on
/// the hot level (`hot`) or a random one.
pub(crate) async fn reserve_run(
    gql: &Gql,
    skus: &Arc<Vec<Sku>>,
    clients: usize,
    hot: bool,
    duration: Duration,
) -> RunStats {
    let gql = gql.clone();
    let skus = skus.clone();
    load::run_async(clients, duration, move |worker, i| {
        let gql = gql.clone();
        let index = if hot {
            0
        } else {
            // A cheap per-worker pseudo-random walk over the levels.
            let x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            (x.rotate_left(17) % skus.len() as u64) as usize
        };
        let sku = skus[index].clone();
        async move {
            let input = json!({ "input": {
                "productId": sku.product_id, "storeId": sku.store_id, "quantity": 1 } });
            let body = gql.run_raw(RESERVE, input).await?;
            if has_errors(&body) {
                return Err(String::from_utf8_lossy(&body).into_owned());
            }
            Ok(())
        }
    })
    .await
}

pub(crate) fn print_run(label: &str, run: usize, s: &RunStats, unit: &str) {
    eprintln!(
        "  run {run} {label:<8} {:>10.0} {unit}  p50 {:>8.0} µs  p99 {:>8.0} µs  ({} ok, {} errors)",
        s.ops_per_sec, s.p50_us, s.p99_us, s.ok, s.errors
    );
}

fn rows_of(
    scenario: &str,
    unit: &str,
    server: &[RunStats],
    baseline: &[RunStats],
    with_latency: bool,
) -> Vec<Row> {
    let pick = |runs: &[RunStats], f: fn(&RunStats) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![Row::throughput(
        scenario,
        unit,
        pick(server, |s| s.ops_per_sec),
        pick(baseline, |s| s.ops_per_sec),
    )];
    if with_latency {
        rows.push(Row::latency(
            scenario,
            "p50",
            pick(server, |s| s.p50_us),
            pick(baseline, |s| s.p50_us),
        ));
        rows.push(Row::latency(
            scenario,
            "p99",
            pick(server, |s| s.p99_us),
            pick(baseline, |s| s.p99_us),
        ));
    }
    rows
}

/// `hot-reserve` and `spread-reserve`.
pub async fn reserve(ctx: &Context, hot: bool) -> BenchResult<Vec<Row>> {
    let name = if hot { "hot-reserve" } else { "spread-reserve" };
    let (products, stores) = if hot {
        (1, 1)
    } else {
        (ctx.products, ctx.stores)
    };
    eprintln!(
        "{name}: {} clients, {} level(s), {} runs × {:?}",
        ctx.clients,
        products * stores,
        ctx.runs,
        ctx.duration
    );
    let (server, skus) = ctx
        .server(&format!("{name}-server"), products, stores)
        .await?;
    let base_skus = Arc::new(
        ctx.seeded(&format!("{name}-baseline"), products, stores)
            .await?,
    );
    let base_path = ctx.db(&format!("{name}-baseline"));
    let skus = Arc::new(skus);
    let gql = server.client(ctx.clients)?;
    // Warm-up: connections, statement caches.
    reserve_run(&gql, &skus, ctx.clients, hot, Duration::from_millis(500)).await;
    let mut server_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for run in 1..=ctx.runs {
        let s = reserve_run(&gql, &skus, ctx.clients, hot, ctx.duration).await;
        print_run("server", run, &s, "ops/s");
        server_runs.push(s);
        let (path, skus2, duration) = (base_path.clone(), base_skus.clone(), ctx.duration);
        let b = tokio::task::spawn_blocking(move || {
            baseline::reserve_loop(&path, &skus2, hot, duration)
        })
        .await
        .map_err(|e| e.to_string())??;
        print_run("baseline", run, &b, "ops/s");
        baseline_runs.push(b);
    }
    server.stop().await;
    Ok(rows_of(name, "ops/s", &server_runs, &baseline_runs, true))
}

/// `dashboard-reads`, plus the SQL statement count of one request.
pub async fn dashboard(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "dashboard-reads";
    eprintln!(
        "{name}: {} clients, baseline {} thread(s), {} runs × {:?}",
        ctx.read_clients, ctx.baseline_threads, ctx.runs, ctx.duration
    );
    let (server, _) = ctx
        .server("dashboard-server", ctx.products, ctx.stores)
        .await?;
    ctx.seeded("dashboard-baseline", ctx.products, ctx.stores)
        .await?;
    let base_path = ctx.db("dashboard-baseline");
    let gql = server.client(ctx.read_clients)?;
    let sample = gql.run_raw(DASHBOARD, json!({})).await?;
    if has_errors(&sample) {
        return Err(format!(
            "dashboard query failed: {}",
            String::from_utf8_lossy(&sample)
        ));
    }
    let base_len = baseline::dashboard_body_len(&base_path, 100)?;
    eprintln!(
        "  response bytes: server {} / baseline {base_len}",
        sample.len()
    );
    let read = |duration: Duration| {
        let gql = gql.clone();
        load::run_async(ctx.read_clients, duration, move |_, _| {
            let gql = gql.clone();
            async move {
                let body = gql.run_raw(DASHBOARD, json!({})).await?;
                if has_errors(&body) {
                    return Err(String::from_utf8_lossy(&body).into_owned());
                }
                Ok(())
            }
        })
    };
    read(Duration::from_millis(500)).await;
    let mut server_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for run in 1..=ctx.runs {
        let s = read(ctx.duration).await;
        print_run("server", run, &s, "req/s");
        server_runs.push(s);
        let (path, threads, duration) = (base_path.clone(), ctx.baseline_threads, ctx.duration);
        let b = tokio::task::spawn_blocking(move || {
            baseline::dashboard_loop(&path, threads, 100, duration)
        })
        .await
        .map_err(|e| e.to_string())??;
        print_run("baseline", run, &b, "req/s");
        baseline_runs.push(b);
    }
    server.stop().await;
    let mut rows = rows_of(name, "req/s", &server_runs, &baseline_runs, true);
    if ctx.external.is_none() {
        let count = sql_count(ctx, &ctx.db("dashboard-server")).await?;
        eprintln!("  SQL statements for one dashboard request: {count}");
        rows.push(Row::figure(
            name,
            "sql statements",
            "per request",
            count as f64,
        ));
    }
    Ok(rows)
}

/// Starts a server with SQL logging on `db`, sends one dashboard request, and counts the logged
/// statements that read stock_levels, products or stores.
async fn sql_count(ctx: &Context, db: &Path) -> BenchResult<usize> {
    let mut launch = Launch::new(&ctx.binary, db);
    launch.capture_stderr = true;
    launch.env = vec![
        ("STOCKROOM_LOG_SQL".into(), "true".into()),
        ("RUST_LOG".into(), "warn,sqlx::query=info".into()),
    ];
    let server = Server::start(&launch).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = server.stderr.lock().map(|v| v.len()).unwrap_or(0);
    let gql = server.client(1)?;
    gql.run(DASHBOARD, json!({})).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = server
        .stderr
        .lock()
        .map(|v| {
            v[mark..]
                .iter()
                .filter(|l| l.contains("sqlx::query"))
                .filter(|l| {
                    ["stock_levels", "products", "stores"]
                        .iter()
                        .any(|t| l.contains(&format!("FROM \\\"{t}\\\"")))
                })
                .count()
        })
        .unwrap_or(0);
    server.stop().await;
    Ok(count)
}

/// `relay-drain`: a backlog of unpublished events in the outbox, a fresh Redis, and the time
/// until the stream holds them all, beside raw pipelined XADD of the same entries.
pub async fn relay_drain(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "relay-drain";
    if ctx.external.is_some() {
        eprintln!("{name}: skipped (needs a server the bench starts)");
        return Ok(Vec::new());
    }
    eprintln!("{name}: {} events, {} runs", ctx.events, ctx.runs);
    let redis = RedisServer::start(&ctx.redis_binary).await?;
    let mut conn = redis.connect().await?;
    let events = Arc::new(baseline::make_events(ctx.events));
    let mut server_rates = Vec::new();
    let mut baseline_rates = Vec::new();
    let n = ctx.events as f64;
    for run in 1..=ctx.runs {
        let db = ctx.db(&format!("drain-{run}"));
        baseline::migrate(&ctx.binary, &db).await?;
        let (path, ev) = (db.clone(), events.clone());
        tokio::task::spawn_blocking(move || baseline::insert_backlog(&path, &ev))
            .await
            .map_err(|e| e.to_string())??;
        let stream = format!("bench-drain-{run}");
        let mut launch = Launch::new(&ctx.binary, &db);
        launch.redis_url = Some(redis.url.clone());
        launch.stream = Some(stream.clone());
        let server = Server::start(&launch).await?;
        let deadline = Instant::now() + Duration::from_secs(180);
        let elapsed = loop {
            let len = redis_util::xlen(&mut conn, &stream).await?;
            if len >= ctx.events as u64 {
                break server.spawned_at.elapsed();
            }
            if Instant::now() > deadline {
                server.stop().await;
                return Err(format!(
                    "relay drained only {len} of {} events in 180 s",
                    ctx.events
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        server.stop().await;
        let rate = n / elapsed.as_secs_f64();
        eprintln!("  run {run} server   {rate:>10.0} events/s ({elapsed:.2?} from process start)");
        server_rates.push(rate);
        let raw_key = format!("bench-raw-{run}");
        let took = redis_util::raw_xadd(&mut conn, &raw_key, &events, 1000, 1_000_000).await?;
        let raw_len = redis_util::xlen(&mut conn, &raw_key).await?;
        if raw_len != ctx.events as u64 {
            return Err(format!("raw XADD stream holds {raw_len} entries"));
        }
        let raw_rate = n / took.as_secs_f64();
        eprintln!("  run {run} baseline {raw_rate:>10.0} events/s ({took:.2?})");
        baseline_rates.push(raw_rate);
        redis_util::del(&mut conn, &stream).await?;
        redis_util::del(&mut conn, &raw_key).await?;
        let _ = std::fs::remove_file(&db);
    }
    Ok(vec![Row::throughput(
        name,
        "events/s",
        server_rates,
        baseline_rates,
    )])
}
