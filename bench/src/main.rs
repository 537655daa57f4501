//! `stockroom-bench`: the load generator. Starts its own `stockroom` server (or targets a URL),
//! runs each scenario for a bounded time several times beside a raw baseline measured in the same
//! run, and prints a table of medians and ratios, writing `results.json` and `chart.svg`.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p stockroom-bench -- [hot-reserve spread-reserve dashboard-reads relay-drain relay-drain-amqp fanout]
//!     [--runs 3] [--seconds 5] [--out bench-results/]
//! cargo run --release -p stockroom-bench -- fanout --subscribers 1000 --rate 1000
//! ```
//!
//! `slowloris` (see [`slowloris`]) measures a client's request latency while 1,100 connections
//! that never finish their request head hold a server limited to 1,024 open files.
//!
//! `abuse` (see [`abuse`]) measures a writer's latency while one read key holds as many
//! connections and subscriptions as the server admits.
//!
//! `fanout` (see [`fanout`]) opens `--subscribers` `inventoryEvents` subscriptions over
//! WebSocket, writes `--rate` events per second, and compares delivery with a raw WebSocket
//! broadcaster inside the bench.

mod abuse;
mod baseline;
mod fanout;
mod load;
mod pg;
mod rawsql;
mod redis_util;
mod report;
mod scale;
mod scenarios;
mod server;
mod slowloris;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use scenarios::Context;

/// Every scenario, in the default order.
const SCENARIOS: [&str; 11] = [
    "hot-reserve",
    "spread-reserve",
    "dashboard-reads",
    "relay-drain",
    "relay-drain-amqp",
    "fanout",
    "fanout-capacity",
    "fanout-isolation",
    "slowloris",
    "abuse",
    "data-scale",
];

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "stockroom-bench", about = "Load generator for Stockroom")]
struct Args {
    /// Scenarios to run (default: all): hot-reserve, spread-reserve, dashboard-reads,
    /// relay-drain, relay-drain-amqp, fanout, fanout-capacity, fanout-isolation, slowloris,
    /// abuse, data-scale.
    scenarios: Vec<String>,
    /// Runs per scenario; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per timed run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Directory for results.json and chart.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// The release server binary (build it first with `cargo build --release`).
    #[arg(
        long,
        env = "STOCKROOM_BIN",
        default_value = "target/release/stockroom"
    )]
    server_bin: PathBuf,
    /// The redis-server binary for relay-drain.
    #[arg(long, env = "REDIS_SERVER_BIN", default_value = "redis-server")]
    redis_bin: String,
    /// RabbitMQ for relay-drain-amqp (each run declares and deletes exchanges of its own).
    #[arg(
        long,
        env = "STOCKROOM_BENCH_AMQP",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    /// Target this server instead of starting one (needs `--key` with the admin role).
    #[arg(long, env = "STOCKROOM_BENCH_URL")]
    url: Option<String>,
    /// API key for `--url`.
    #[arg(long, env = "STOCKROOM_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Concurrent clients in the reservation scenarios.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent clients in dashboard-reads.
    #[arg(long, default_value_t = 8)]
    read_clients: usize,
    /// Threads of the dashboard baseline (default: available cores).
    #[arg(long)]
    baseline_threads: Option<usize>,
    /// Products for spread-reserve and dashboard-reads.
    #[arg(long, default_value_t = 1000)]
    products: usize,
    /// Stores for spread-reserve and dashboard-reads.
    #[arg(long, default_value_t = 10)]
    stores: usize,
    /// Backlog for relay-drain.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// WebSocket subscribers for fanout (one connection, one subscription each).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Events per second written (server) and broadcast (baseline) in fanout.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// PostgreSQL server URL (e.g. postgres://postgres@127.0.0.1:5432): hot-reserve and
    /// spread-reserve run there, a fresh database per scenario, beside the raw PostgreSQL
    /// baseline.
    #[arg(long, env = "STOCKROOM_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// The large data set of data-scale: `m` (10,000 products × 20 stores, 200,000
    /// reservations, 1,000,000 events) or `l` (50,000 × 40, 1,000,000, 5,000,000).
    #[arg(long, default_value = "m", value_parser = ["m", "l"])]
    scale_size: String,
    /// Timed requests per operation and pass in data-scale.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// A build from before migration 8: data-scale also times this build's migrations on the
    /// large data set written under that build's schema.
    #[arg(long)]
    old_server_bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = run(args).await {
        eprintln!("stockroom-bench: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let selected: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    if let Some(unknown) = selected.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        return Err(format!(
            "unknown scenario {unknown:?}; known: {}",
            SCENARIOS.join(", ")
        ));
    }
    if !args.server_bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first or pass --server-bin",
            args.server_bin.display()
        ));
    }
    let external = match (&args.url, &args.key) {
        (Some(url), Some(key)) => Some((url.clone(), key.clone())),
        (Some(_), None) => return Err("--url needs --key (admin role)".into()),
        _ => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("stockroom-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = Context {
        binary: args.server_bin.clone(),
        redis_binary: args.redis_bin.clone(),
        amqp: args.amqp.clone(),
        external,
        runs: args.runs.max(1),
        duration: Duration::from_secs_f64(args.seconds.max(0.1)),
        clients: args.clients.max(1),
        read_clients: args.read_clients.max(1),
        baseline_threads: args.baseline_threads.unwrap_or(cores).max(1),
        products: args.products.max(1),
        stores: args.stores.max(1),
        events: args.events.max(1),
        subscribers: args.subscribers.max(1),
        rate: args.rate.max(1),
        scratch: scratch.path().to_path_buf(),
        postgres: args.postgres.clone(),
        scale_large: args.scale_size == "l",
        samples: args.samples.max(1),
        old_binary: args.old_server_bin.clone(),
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in &selected {
        let t = Instant::now();
        let outcome = match scenario.as_str() {
            "hot-reserve" => scenarios::reserve(&ctx, true).await,
            "spread-reserve" => scenarios::reserve(&ctx, false).await,
            "dashboard-reads" => scenarios::dashboard(&ctx).await,
            "relay-drain" => scenarios::relay_drain(&ctx).await,
            "relay-drain-amqp" => scenarios::relay_drain_amqp(&ctx).await,
            "fanout" => fanout::fanout(&ctx).await,
            "fanout-capacity" => fanout::capacity(&ctx).await,
            "fanout-isolation" => fanout::isolation(&ctx).await,
            "slowloris" => slowloris::slowloris(&ctx).await,
            "abuse" => abuse::abuse_scenario(&ctx).await,
            "data-scale" => scale::data_scale(&ctx).await,
            other => Err(format!("no such scenario {other:?}")),
        };
        match outcome {
            Ok(r) => rows.extend(r),
            Err(e) => eprintln!("{scenario}: FAILED: {e}"),
        }
        eprintln!("{scenario}: {:.1?}", t.elapsed());
    }
    let text = report::table(&rows);
    println!("\n{text}");
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let settings = json!({
        "scenarios": selected,
        "runs": ctx.runs,
        "seconds": args.seconds,
        "clients": ctx.clients,
        "read_clients": ctx.read_clients,
        "baseline_threads": ctx.baseline_threads,
        "products": ctx.products,
        "stores": ctx.stores,
        "events": ctx.events,
        "subscribers": ctx.subscribers,
        "rate": ctx.rate,
        "fanout_writers": fanout::WRITERS,
        "cores": cores,
        "server": args.url.clone().unwrap_or_else(|| args.server_bin.display().to_string()),
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    report::write_json(&args.out, &settings, &rows).map_err(|e| e.to_string())?;
    report::write_svg(&args.out, &rows).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {0}/results.json and {0}/chart.svg in {1:.1?} total",
        args.out.display(),
        started.elapsed()
    );
    Ok(())
}
