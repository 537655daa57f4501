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

mod amqp_drain;
mod drain;
mod reads;

pub use amqp_drain::relay_drain_amqp;
pub use drain::relay_drain;
pub use reads::dashboard;

/// Everything a scenario needs to know.
#[derive(Debug, Clone)]
pub struct Context {
    /// The release `stockroom` binary (servers and `migrate`).
    pub binary: PathBuf,
    /// The `redis-server` binary.
    pub redis_binary: String,
    /// RabbitMQ URL for relay-drain-amqp.
    pub amqp: String,
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
    /// A PostgreSQL server URL: the reservation scenarios run there (a fresh database each)
    /// beside the raw PostgreSQL baseline.
    pub postgres: Option<String>,
    /// data-scale's large set is L (else M).
    pub scale_large: bool,
    /// Timed requests per operation and pass in data-scale.
    pub samples: usize,
    /// A build from before migration 8, for data-scale's upgrade timing.
    pub old_binary: Option<PathBuf>,
}

/// Units on every seeded level: enough that no run ever runs out.
const HUGE_STOCK: i64 = 10_000_000;

const RESERVE: &str =
    "mutation Reserve($input: ReserveStockInput!) { reserveStock(input: $input) { id status } }";

impl Context {
    /// data-scale's large data set.
    pub fn scale_size(&self) -> stockroom_harness::seed::Size {
        if self.scale_large {
            stockroom_harness::seed::Size::LARGE
        } else {
            stockroom_harness::seed::Size::MEDIUM
        }
    }

    /// Its name: `M` or `L`.
    pub fn scale_label(&self) -> &'static str {
        if self.scale_large { "L" } else { "M" }
    }

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

/// The level the `i`th reservation of `worker` takes: the hot one (`hot`), or a cheap
/// per-worker pseudo-random walk over `levels` (the server and the baselines walk alike).
pub(crate) fn level_index(hot: bool, worker: usize, i: u64, levels: usize) -> usize {
    if hot {
        return 0;
    }
    let x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x.rotate_left(17) % levels as u64) as usize
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
        let index = level_index(hot, worker, i, skus.len());
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

/// `runs` rounds of a server run then a baseline run (so noise hits both alike), each printed;
/// the runs of each side.
pub(crate) async fn alternate(
    runs: usize,
    unit: &str,
    mut server: impl AsyncFnMut() -> RunStats,
    mut baseline: impl AsyncFnMut() -> BenchResult<RunStats>,
) -> BenchResult<(Vec<RunStats>, Vec<RunStats>)> {
    let (mut server_runs, mut baseline_runs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let s = server().await;
        print_run("server", run, &s, unit);
        server_runs.push(s);
        let b = baseline().await?;
        print_run("baseline", run, &b, unit);
        baseline_runs.push(b);
    }
    Ok((server_runs, baseline_runs))
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
    if let Some(url) = &ctx.postgres {
        return reserve_on_postgres(ctx, url, hot).await;
    }
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
    let (server_runs, baseline_runs) = alternate(
        ctx.runs,
        "ops/s",
        async || reserve_run(&gql, &skus, ctx.clients, hot, ctx.duration).await,
        async || {
            let (path, skus, duration) = (base_path.clone(), base_skus.clone(), ctx.duration);
            tokio::task::spawn_blocking(move || baseline::reserve_loop(&path, &skus, hot, duration))
                .await
                .map_err(|e| e.to_string())?
        },
    )
    .await?;
    server.stop().await;
    Ok(rows_of(name, "ops/s", &server_runs, &baseline_runs, true))
}

/// `hot-reserve` and `spread-reserve` on PostgreSQL: the server on one fresh database, the raw
/// baseline on another seeded alike, runs alternating.
async fn reserve_on_postgres(ctx: &Context, url: &str, hot: bool) -> BenchResult<Vec<Row>> {
    let name = if hot {
        "hot-reserve-pg"
    } else {
        "spread-reserve-pg"
    };
    let (products, stores) = if hot {
        (1, 1)
    } else {
        (ctx.products, ctx.stores)
    };
    eprintln!(
        "{name}: {} clients, {} level(s), {} runs × {:?}, PostgreSQL at {url}",
        ctx.clients,
        products * stores,
        ctx.runs,
        ctx.duration
    );
    let served = crate::pg::Database::create(url, &format!("{name}_server"), &ctx.binary).await?;
    let raw = crate::pg::Database::create(url, &format!("{name}_raw"), &ctx.binary).await?;
    let skus = Arc::new(crate::pg::seed(&served.url, products, stores, HUGE_STOCK).await?);
    let raw_skus = Arc::new(crate::pg::seed(&raw.url, products, stores, HUGE_STOCK).await?);
    let mut launch = Launch::new(&ctx.binary, &ctx.db(name));
    launch.database_url = Some(served.url.clone());
    let server = Server::start(&launch).await?;
    let gql = server.client(ctx.clients)?;
    reserve_run(&gql, &skus, ctx.clients, hot, Duration::from_millis(500)).await;
    let (server_runs, baseline_runs) = alternate(
        ctx.runs,
        "ops/s",
        async || reserve_run(&gql, &skus, ctx.clients, hot, ctx.duration).await,
        async || crate::pg::reserve_loop(&raw.url, &raw_skus, ctx.clients, hot, ctx.duration).await,
    )
    .await?;
    server.stop().await;
    served.drop_now().await;
    raw.drop_now().await;
    Ok(rows_of(name, "ops/s", &server_runs, &baseline_runs, true))
}
