//! `fanout`: subscription fan-out. `--subscribers` WebSocket connections each hold one
//! `inventoryEvents` subscription (`graphql-transport-ws`) while [`WRITERS`] HTTP clients write
//! `--rate` `adjustStock` mutations per second (one event each) for `--seconds`; then the bench
//! waits until every subscriber has every event, or until deliveries stop for a while.
//!
//! The baseline, measured in the same run: a raw WebSocket broadcaster inside the bench (a
//! tokio-tungstenite server on a free port: no GraphQL, no database, no HTTP framework) sends
//! the same number of clients, at the same rate, a pre-serialized JSON frame shaped like the
//! server's `next` message, stamped with the send time, through a tokio broadcast channel.
//! Rates are compared with that run. Latencies are compared at equal load: when the server wrote
//! less than 90 % of `--rate` (it is CPU-bound), the baseline runs a second time at the rate the
//! server achieved, since the broadcaster is open-loop and at a rate it cannot sustain it would
//! only measure its own growing queue.
//!
//! Both sides are measured by the same client code:
//!
//! - latency: the frame's `occurredAt` (the event's commit time on the server, the send time in
//!   the baseline) against the local clock when the client reads the frame (same machine, same
//!   clock);
//! - delivered messages per second: events received by all subscribers together, over the time
//!   from the first write to the last receipt;
//! - completeness: every subscriber must receive every event of the run, once and in order;
//!   what a subscriber lacks counts as missing (errors);
//! - the server's memory (`VmRSS`/`VmHWM` from `/proc/PID/status`) when it starts the server.
//!
//! This file holds the scenario and its types; `server_side` drives the server (writers and
//! subscribers), `broadcaster` the raw baseline, `clients` the WebSocket clients both share,
//! `report` the summary and rows, `probes` the readings of `/metrics` and `/proc`.
//! `capacity` (`fanout-capacity`) and `isolation` (`fanout-isolation`) are scenarios built on
//! the same parts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

mod broadcaster;
mod capacity;
mod clients;
mod isolation;
mod probes;
pub(crate) use probes::memory_kib;
mod report;
mod server_side;

use broadcaster::*;
use clients::*;
use probes::*;
use report::*;
use server_side::*;

pub use capacity::capacity;
pub use isolation::isolation;

use crate::baseline::{Sku, stamp};
use crate::load::percentile;
use crate::report::Row;
use crate::scenarios::Context;
use crate::server::{BenchResult, Gql, Server, has_errors};

/// Scenario name.
const NAME: &str = "fanout";

/// Concurrent HTTP writers on the server side, each on its own stock level (so they never
/// conflict); together they keep to `--rate`.
pub const WRITERS: usize = 8;

/// What every subscriber asks for.
const SUBSCRIPTION: &str = "subscription { inventoryEvents { position occurredAt } }";

/// One event per call: a signed delta on one level.
const ADJUST: &str = "mutation Adjust($p: UUID!, $s: ID!, $d: Int!) { \
    adjustStock(input: {productId: $p, storeId: $s, delta: $d}) { version } }";

/// The baseline frame around its position and timestamp: the shape (and so the size) of the
/// server's `next` message for [`SUBSCRIPTION`].
const FRAME_HEAD: &str =
    r#"{"type":"next","id":"1","payload":{"data":{"inventoryEvents":{"position":"#;
const FRAME_MID: &str = r#","occurredAt":""#;
const FRAME_TAIL: &str = r#""}}}}"#;

/// After the writes, the bench stops waiting when no subscriber received anything for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(3);
/// … and in any case after this long.
const DRAIN_MAX: Duration = Duration::from_secs(120);
/// Time allowed for all subscriptions to open (and, after a run, to close).
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

use stockroom_harness::Socket;

/// The server's memory during one run, KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `VmRSS` with every subscription open, before the writes.
    subscribed: u64,
    /// Highest `VmRSS` sampled during writes and drain.
    peak: u64,
    /// `VmHWM` at the end of the run.
    hwm: u64,
}

/// One timed run of either side.
#[derive(Debug, Clone)]
struct FanoutRun {
    /// Events written (server) or broadcast (baseline).
    written: u64,
    /// `written` over the write phase.
    write_rate: f64,
    /// Events received, all subscribers together (each counted once per subscriber).
    delivered: u64,
    /// `delivered` over the time from the first write to the last receipt.
    delivered_rate: f64,
    /// Latency percentiles and maximum, µs.
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Fewest events any subscriber received.
    min_received: u64,
    /// Subscribers that received every event.
    complete: usize,
    /// Deliveries that never arrived: the sum over subscribers of (written − received).
    missing: u64,
    /// Frames repeated or out of order (not counted as received).
    repeated: u64,
    /// Failed writes (server side).
    write_errors: u64,
    /// Size of one delivered frame, bytes.
    frame_bytes: usize,
    /// The server's memory, when the bench started the server.
    memory: Option<Memory>,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Received {
    /// Latency of each event received, µs.
    latencies: Vec<u32>,
    /// Events of this run received, in order, once each.
    events: u64,
    /// Frames with a position already seen (repeated or out of order).
    repeated: u64,
    /// When the last event arrived.
    last_at: Option<Instant>,
    /// Size of the first event frame.
    frame_bytes: usize,
    /// Why the connection ended early, if it did.
    error: Option<String>,
}

/// The subscribers of one run: their tasks, live per-subscriber counts, and the stop signal.
struct Audience {
    tasks: Vec<JoinHandle<Received>>,
    counts: Vec<Arc<AtomicU64>>,
    stop: watch::Sender<bool>,
}

impl Audience {
    /// Starts a receiver on every socket; events at or below position `after` are ignored.
    fn listen(sockets: Vec<Socket>, after: u64) -> Audience {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::with_capacity(sockets.len());
        let mut counts = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            tasks.push(tokio::spawn(receive(socket, after, stopped.clone(), count)));
        }
        Audience {
            tasks,
            counts,
            stop,
        }
    }

    /// Events received so far, all subscribers together.
    fn delivered(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Waits until `expected` deliveries arrived, or none arrived for [`DRAIN_IDLE`], or
    /// [`DRAIN_MAX`] passed.
    async fn drain(&self, expected: u64) {
        let started = Instant::now();
        let mut seen = self.delivered();
        let mut progress = Instant::now();
        while seen < expected && progress.elapsed() < DRAIN_IDLE && started.elapsed() < DRAIN_MAX {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.delivered();
            if now != seen {
                seen = now;
                progress = Instant::now();
            }
        }
    }

    /// Stops every receiver (each closes its connection) and collects what they saw.
    async fn finish(self) -> BenchResult<Vec<Received>> {
        let _ = self.stop.send(true);
        let mut all = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            all.push(task.await.map_err(|e| format!("subscriber task: {e}"))?);
        }
        Ok(all)
    }
}

/// `fanout`: alternates server runs with baseline runs and returns rows of medians.
pub async fn fanout(ctx: &Context) -> BenchResult<Vec<Row>> {
    let n = ctx.subscribers;
    eprintln!(
        "{NAME}: {n} subscribers, {} events/s, {WRITERS} writers, {} runs × {:?}",
        ctx.rate, ctx.runs, ctx.duration
    );
    let (server, skus) = fanout_server(ctx, "fanout-server", WRITERS).await?;
    let outcome = measure(ctx, &server, &skus).await;
    server.stop().await;
    Ok(rows(&outcome?))
}

/// A server for `--subscribers` WebSocket clients on `levels` stock levels (one store), after
/// checking the open-files limit. Every subscriber connects from 127.0.0.1, as through a reverse
/// proxy, so the per-address connection cap is off.
async fn fanout_server(
    ctx: &Context,
    name: &str,
    levels: usize,
) -> BenchResult<(Server, Vec<Sku>)> {
    check_open_files(ctx.subscribers)?;
    // Capacity, not fair use, is measured here: every subscriber uses the bench's one key and
    // address, and the subscriptions are opened as fast as the server takes them.
    let capacity = [
        ("STOCKROOM_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("STOCKROOM_WS_MAX_CONNECTIONS_PER_KEY", "0"),
        ("STOCKROOM_MAX_SUBSCRIPTIONS_PER_KEY", "0"),
        ("STOCKROOM_SHED_LAG_MS", "0"),
    ];
    ctx.server_with(name, levels, 1, &capacity).await
}

/// An HTTP client for `/metrics` and the like.
fn http_client() -> BenchResult<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// Every run of both sides.
#[derive(Debug, Default)]
struct Runs {
    /// The server at `--rate`.
    server: Vec<FanoutRun>,
    /// The baseline at `--rate`: the throughput comparison.
    baseline: Vec<FanoutRun>,
    /// The baseline at the rate the server achieved in the same run, when the server fell
    /// behind `--rate`: the latency comparison (otherwise `baseline` is).
    matched: Vec<Option<FanoutRun>>,
}

impl Runs {
    /// The baseline run each latency is compared with.
    fn latency_baseline(&self) -> Vec<FanoutRun> {
        self.baseline
            .iter()
            .zip(&self.matched)
            .map(|(b, m)| m.as_ref().unwrap_or(b).clone())
            .collect()
    }
}

/// The server counts as keeping up with `--rate` when it writes at least this share of it.
const KEPT_UP: f64 = 0.9;

async fn measure(ctx: &Context, server: &Server, skus: &[Sku]) -> BenchResult<Runs> {
    let gql = server.client(WRITERS)?;
    let http = http_client()?;
    // Warm-up: the writers' connections and the server's statement cache.
    write(&gql, skus, 100, Duration::from_millis(300)).await;
    let mut runs = Runs::default();
    for run in 1..=ctx.runs {
        let s = server_run(ctx, server, &gql, &http, skus).await?;
        print_run("server", run, &s);
        let b = baseline_run(ctx, ctx.rate as f64).await?;
        print_run("baseline", run, &b);
        // Latency is compared at equal load: a server that fell behind `--rate` wrote less,
        // and an open-loop broadcaster at the full rate would only measure its own queue.
        let m = if s.write_rate < KEPT_UP * ctx.rate as f64 {
            let m = baseline_run(ctx, s.write_rate).await?;
            print_run("matched", run, &m);
            Some(m)
        } else {
            None
        };
        runs.server.push(s);
        runs.baseline.push(b);
        runs.matched.push(m);
    }
    Ok(runs)
}
