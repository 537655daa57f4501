//! `abuse`: one authenticated `read` key opens as many WebSocket connections as the server
//! lets it, and on each as many `stockLevelChanged` subscriptions as it may (up to 100, the
//! per-connection cap), reading whatever comes, while a writer makes sequential `adjustStock`
//! calls. Reported: the writer's p50/p99 beside the same writer with no abuse (same run), the
//! server's peak RSS during the abuse and its RSS before and after, `/healthz` latency under
//! abuse, and what the abuser was admitted. The server runs with its default settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::memory_kib;
use crate::load::percentile;
use crate::report::Row;
use crate::scenarios::Context;
use crate::server::{BenchResult, READ_KEY, Server, WRITE_KEY};

/// Connections the abuser tries at most.
const MAX_ATTEMPTS: usize = 1_000;
/// Subscriptions it tries per connection.
const PER_CONNECTION: usize = 100;

/// Sequential `adjustStock` calls for `duration`: (p50, p99) in µs.
async fn writer(
    server: &Server,
    product: &str,
    store: &str,
    duration: Duration,
) -> BenchResult<(f64, f64)> {
    let gql = crate::server::Gql::new(&server.base, WRITE_KEY, 1)?;
    let query = "mutation($p: UUID!, $s: ID!) { adjustStock(input: {productId: $p, storeId: $s, delta: 1}) { version } }";
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        gql.run(query, json!({ "p": product, "s": store })).await?;
        samples.push(crate::load::micros(sent.elapsed()));
    }
    samples.sort_unstable();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// What the abuser holds: its reading tasks (each owns a connection).
struct Abuser {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connections: usize,
    subscriptions: usize,
    stop: Arc<AtomicBool>,
}

/// Opens connections until refused, subscribing on each until refused.
async fn abuse(base: &str, store: &str) -> Abuser {
    let url = stockroom_harness::ws_url(base);
    let stop = Arc::new(AtomicBool::new(false));
    let mut abuser = Abuser {
        tasks: Vec::new(),
        connections: 0,
        subscriptions: 0,
        stop: stop.clone(),
    };
    let subscription = json!({ "query": "subscription($s: ID) { stockLevelChanged(storeId: $s) { productId quantity available } }", "variables": { "s": store } });
    'connections: for _ in 0..MAX_ATTEMPTS {
        let Ok((mut socket, _)) =
            stockroom_harness::ws_connect(&url, Some("graphql-transport-ws"), None).await
        else {
            break;
        };
        let init = json!({ "type": "connection_init", "payload": { "apiKey": READ_KEY } });
        if socket.send(Message::text(init.to_string())).await.is_err() {
            break;
        }
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => {}
            _ => break, // refused (1013) or closed
        }
        abuser.connections += 1;
        for n in 0..PER_CONNECTION {
            let message =
                json!({ "id": n.to_string(), "type": "subscribe", "payload": subscription });
            let ping = json!({ "type": "ping", "payload": n });
            if socket
                .send(Message::text(message.to_string()))
                .await
                .is_err()
                || socket.send(Message::text(ping.to_string())).await.is_err()
            {
                break 'connections;
            }
            // Messages take effect in order: the pong follows the subscription's start or refusal.
            let mut refused = false;
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) if text.contains(r#""type":"pong""#) => break,
                    Some(Ok(Message::Text(text))) if text.contains(r#""type":"error""#) => {
                        refused = true
                    }
                    Some(Ok(_)) => {}
                    _ => break 'connections,
                }
            }
            if refused {
                break;
            }
            abuser.subscriptions += 1;
        }
        let stop = stop.clone();
        abuser.tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), socket.next()).await {
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(_) => return,
                }
            }
            let _ = socket.close(None).await;
        }));
    }
    abuser
}

/// `/healthz` every 50 ms until `stop`: the latencies in µs.
async fn health(base: String, stop: Arc<AtomicBool>) -> Vec<u32> {
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            samples.push(crate::load::micros(sent.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort_unstable();
    samples
}

/// Highest `VmRSS` (KiB) of `pid` until `stop`.
async fn peak_rss(pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some((rss, _)) = memory_kib(pid) {
            peak = peak.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak
}

/// Runs the scenario.
pub async fn abuse_scenario(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "abuse";
    if ctx.external.is_some() {
        return Err("abuse starts its own server (it needs its read key and its memory)".into());
    }
    let (server, skus) = ctx.server_with(name, 1, 1, &[]).await?;
    let pid = server.pid().ok_or("no server pid")?;
    let (product, store) = (skus[0].product_id.to_string(), skus[0].store_id.clone());
    let (mut alone, mut abused) = ((vec![], vec![]), (vec![], vec![]));
    let (mut peaks, mut befores, mut afters, mut health_p50, mut health_p99) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut admitted = (0, 0);
    for run in 1..=ctx.runs {
        let (p50, p99) = writer(&server, &product, &store, ctx.duration).await?;
        alone.0.push(p50);
        alone.1.push(p99);
        let before = memory_kib(pid).map_or(0, |m| m.0);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = tokio::spawn(peak_rss(pid, stop.clone()));
        let healthz = tokio::spawn(health(server.base.clone(), stop.clone()));
        let opened = Instant::now();
        let abuser = abuse(&server.base, &store).await;
        let opening = opened.elapsed();
        let (p50, p99) = writer(&server, &product, &store, ctx.duration).await?;
        stop.store(true, Ordering::Relaxed);
        abuser.stop.store(true, Ordering::Relaxed);
        for task in abuser.tasks {
            let _ = task.await;
        }
        let peak = peak.await.map_err(|e| e.to_string())?;
        let health = healthz.await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = memory_kib(pid).map_or(0, |m| m.0);
        eprintln!(
            "  run {run}: writer p50 {:.0}/{p50:.0} µs, p99 {:.0}/{p99:.0} µs (alone/abused); abuser held {} connections, {} subscriptions (opened in {opening:.1?}); RSS {} → peak {} → {} MiB after; /healthz p99 {:.1} ms",
            alone.0[run - 1],
            alone.1[run - 1],
            abuser.connections,
            abuser.subscriptions,
            before / 1024,
            peak / 1024,
            after / 1024,
            percentile(&health, 0.99) / 1000.0,
        );
        abused.0.push(p50);
        abused.1.push(p99);
        peaks.push(peak as f64 / 1024.0);
        befores.push(before as f64 / 1024.0);
        afters.push(after as f64 / 1024.0);
        health_p50.push(percentile(&health, 0.5) / 1000.0);
        health_p99.push(percentile(&health, 0.99) / 1000.0);
        admitted = (abuser.connections, abuser.subscriptions);
    }
    server.stop().await;
    let median = crate::load::median;
    Ok(vec![
        Row::latency(
            name,
            "writer p50 under abuse (baseline: no abuse)",
            abused.0,
            alone.0,
        ),
        Row::latency(
            name,
            "writer p99 under abuse (baseline: no abuse)",
            abused.1,
            alone.1,
        ),
        Row::figure(name, "server RSS before abuse", "MiB", median(&befores)),
        Row::figure(name, "server RSS peak under abuse", "MiB", median(&peaks)),
        Row::figure(
            name,
            "server RSS 3 s after the abuser left",
            "MiB",
            median(&afters),
        ),
        Row::figure(name, "/healthz p50 under abuse", "ms", median(&health_p50)),
        Row::figure(name, "/healthz p99 under abuse", "ms", median(&health_p99)),
        Row::figure(
            name,
            "abuser's connections admitted",
            "connections",
            admitted.0 as f64,
        ),
        Row::figure(
            name,
            "abuser's subscriptions admitted",
            "subscriptions",
            admitted.1 as f64,
        ),
    ])
}
