//! Subscription fan-out benchmark: starts the release `stockroom` binary on a free port with a
//! temporary SQLite database, opens N `inventoryEvents` subscribers over WebSocket
//! (`graphql-transport-ws`), drives a steady rate of `adjustStock` mutations over HTTP from
//! several concurrent clients, and prints commit-to-receive latency (the event's `occurredAt`
//! against the local clock at receipt, same machine), events received per subscriber and the
//! server's memory (VmRSS / VmHWM from `/proc`).
//!
//! ```text
//! cargo build --release
//! cargo run --release --example subscription_bench -- --subscribers 1000 --rate 1000
//! cargo run --release --example subscription_bench -- --subscribers 10 --rate 50
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY: &str = "bench-admin-key";

/// Subscription fan-out benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// The server binary.
    #[arg(
        long,
        env = "STOCKROOM_BIN",
        default_value = "target/release/stockroom"
    )]
    server: String,
    /// Subscribers (one WebSocket connection each).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Events per second written (one `adjustStock` = one event).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Concurrent HTTP writers (each on its own product, so they never conflict).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds to wait after the last write for stragglers.
    #[arg(long, default_value_t = 3)]
    drain: u64,
}

/// The server process, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(binary: &str) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("bench.db");
    let mut child = Command::new(binary)
        .arg("serve")
        .env("STOCKROOM_LISTEN", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", database.display()),
        )
        .env("STOCKROOM_API_KEYS", format!("admin:{KEY}"))
        .env("STOCKROOM_WS_MAX_SUBSCRIPTIONS", "10")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (cargo build --release first)"));
    let stdout = child.stdout.take().expect("stdout");
    let (found, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(at) = line.find("listening on http://") {
                let _ = found.send(line[at + "listening on ".len()..].trim().to_owned());
                sent = true;
            }
        }
    });
    let url = receive
        .recv_timeout(Duration::from_secs(30))
        .expect("the server did not print its address");
    Server {
        child,
        url,
        _dir: dir,
    }
}

/// `(VmRSS, VmHWM)` of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn graphql(http: &reqwest::Client, url: &str, query: &str, variables: Value) -> Value {
    let body: Value = http
        .post(format!("{url}/graphql"))
        .bearer_auth(KEY)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "errors: {body}");
    body["data"].clone()
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// What one subscriber saw: latencies in microseconds.
struct Received {
    latencies: Vec<u32>,
}

/// The `occurredAt` text of a `next` message, without parsing the whole JSON.
fn occurred_at(text: &str) -> Option<&str> {
    let key = "\"occurredAt\":\"";
    let start = text.find(key)? + key.len();
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}

async fn subscriber(url: String, stop: Arc<AtomicBool>, ready: Arc<AtomicU64>) -> Received {
    let ws_url = format!("{}/graphql/ws", url.replacen("http://", "ws://", 1));
    let mut request = ws_url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket");
    let init = json!({ "type": "connection_init", "payload": { "apiKey": KEY } });
    socket
        .send(Message::text(init.to_string()))
        .await
        .expect("init");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "subscription { inventoryEvents { position occurredAt } }" } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    ready.fetch_add(1, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), socket.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(frame))) => frame,
            Ok(_) => break,
        };
        let Message::Text(text) = frame else { continue };
        let received = chrono::Utc::now();
        if text.contains("\"type\":\"ping\"") {
            let _ = socket.send(Message::text(r#"{"type":"pong"}"#)).await;
            continue;
        }
        if let Some(at) =
            occurred_at(&text).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let micros = (received - at.with_timezone(&chrono::Utc))
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            latencies.push(micros.min(u32::MAX as i64) as u32);
        }
    }
    let _ = socket.close(None).await;
    Received { latencies }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let server = start_server(&args.server);
    let pid = server.child.id();
    let url = server.url.clone();
    let http = reqwest::Client::new();
    println!(
        "server {} (pid {pid}) at {url}; {} subscribers, {} events/s for {} s, {} writers",
        args.server, args.subscribers, args.rate, args.duration, args.writers
    );

    // One store, one product per writer, stock high enough never to trigger low/depleted.
    graphql(
        &http,
        &url,
        "mutation { createStore(input: {id: \"bench\", name: \"bench\"}) { id } }",
        json!({}),
    )
    .await;
    let mut products = Vec::new();
    for w in 0..args.writers {
        let data = graphql(
            &http,
            &url,
            "mutation($sku: String!) { createProduct(input: {sku: $sku, name: $sku}) { id } }",
            json!({ "sku": format!("BENCH-{w}") }),
        )
        .await;
        let id = data["createProduct"]["id"].as_str().expect("id").to_owned();
        graphql(
            &http,
            &url,
            "mutation($p: UUID!) { initializeStock(input: {productId: $p, storeId: \"bench\", quantity: 1000000}) { version } }",
            json!({ "p": id }),
        )
        .await;
        products.push(id);
    }
    let setup_events = args.writers as f64;
    while metric(&http, &url, "stockroom_feed_position").await < setup_events {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Subscribers.
    let (rss_idle, _) = memory_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        subscribers.push(tokio::spawn(subscriber(
            url.clone(),
            stop.clone(),
            ready.clone(),
        )));
    }
    let opened = Instant::now();
    while metric(&http, &url, "stockroom_subscriptions_open").await < args.subscribers as f64 {
        assert!(
            opened.elapsed() < Duration::from_secs(60),
            "subscribers did not open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss_subscribed, _) = memory_kib(pid);
    println!(
        "{} subscriptions open after {:?}",
        args.subscribers,
        opened.elapsed()
    );

    // Memory sampler.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = {
        let peak = peak.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(memory_kib(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Writers: a steady aggregate rate.
    let written = Arc::new(AtomicU64::new(0));
    let writing_until = Instant::now() + Duration::from_secs(args.duration);
    let per_writer = (args.rate as f64 / args.writers as f64).max(0.001);
    let mut writers = Vec::new();
    for product in products {
        let http = http.clone();
        let url = url.clone();
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_writer));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut delta = 1;
            while Instant::now() < writing_until {
                tick.tick().await;
                graphql(
                    &http,
                    &url,
                    "mutation($p: UUID!, $d: Int!) { adjustStock(input: {productId: $p, storeId: \"bench\", delta: $d}) { version } }",
                    json!({ "p": product, "d": delta }),
                )
                .await;
                delta = -delta;
                written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for writer in writers {
        writer.await.expect("writer");
    }
    let wrote = written.load(Ordering::Relaxed);
    let write_secs = started.elapsed().as_secs_f64();
    let target = setup_events + wrote as f64;
    let drain_until = Instant::now() + Duration::from_secs(args.drain);
    while metric(&http, &url, "stockroom_feed_position").await < target
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.drain)).await;
    let (rss_end, hwm) = memory_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let _ = sampling.await;

    let mut all = Vec::new();
    let mut counts = Vec::new();
    for s in subscribers {
        let received = s.await.expect("subscriber");
        counts.push(received.latencies.len() as u64);
        all.extend(received.latencies);
    }
    all.sort_unstable();
    counts.sort_unstable();
    let complete = counts.iter().filter(|&&c| c == wrote).count();
    println!(
        "wrote {wrote} events in {write_secs:.1} s ({:.0}/s)",
        wrote as f64 / write_secs
    );
    println!(
        "received per subscriber: min {} median {} max {} (expected {wrote}; {complete}/{} got all)",
        counts.first().copied().unwrap_or(0),
        counts.get(counts.len() / 2).copied().unwrap_or(0),
        counts.last().copied().unwrap_or(0),
        counts.len()
    );
    println!(
        "commit-to-receive latency over {} deliveries: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );
    println!(
        "server memory (VmRSS): idle {} MiB, subscribed {} MiB, peak under load {} MiB, end {} MiB (VmHWM {} MiB)",
        rss_idle / 1024,
        rss_subscribed / 1024,
        peak.load(Ordering::Relaxed).max(rss_end) / 1024,
        rss_end / 1024,
        hwm / 1024
    );
    println!(
        "feed lagged (subscribers caught up from the log): {}",
        metric(&http, &url, "stockroom_feed_lagged_total").await
    );
}
