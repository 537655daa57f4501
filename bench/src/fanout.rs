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
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    check_open_files(n)?;
    let (server, skus) = ctx.server("fanout-server", WRITERS, 1).await?;
    let outcome = measure(ctx, &server, &skus).await;
    server.stop().await;
    Ok(rows(&outcome?))
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
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

/// One server run: open the subscriptions, write for the run's duration, drain, close.
async fn server_run(
    ctx: &Context,
    server: &Server,
    gql: &Gql,
    http: &reqwest::Client,
    skus: &[Sku],
) -> BenchResult<FanoutRun> {
    let n = ctx.subscribers;
    let open_before = metric(http, server, "stockroom_subscriptions_open").await?;
    let after = settled_position(http, server).await?;
    let ws_url = format!("{}/graphql/ws", server.base.replacen("http://", "ws://", 1));
    let sockets = open_all(n, |_| subscribe(ws_url.clone(), server.key.clone())).await?;
    let audience = Audience::listen(sockets, after);
    // The gauge counts subscriptions whose stream has started on the server.
    let opened = Instant::now();
    while metric(http, server, "stockroom_subscriptions_open").await? < open_before + n as f64 {
        if opened.elapsed() > OPEN_TIMEOUT {
            audience.finish().await?;
            return Err(format!(
                "{n} subscriptions did not open within {OPEN_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.pid();
    let subscribed = pid.and_then(memory_kib);
    let sampler = pid.map(|pid| {
        let mut stopped = audience.stop.subscribe();
        tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Some((rss, _)) = memory_kib(pid) {
                    peak = peak.max(rss);
                }
                tokio::select! {
                    _ = stopped.changed() => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    });

    let started = Instant::now();
    let (written, write_errors) = write(gql, skus, ctx.rate, ctx.duration).await;
    let write_secs = started.elapsed().as_secs_f64();
    audience.drain(written * n as u64).await;
    let end = pid.and_then(memory_kib);
    let received = audience.finish().await?;
    let peak = match sampler {
        Some(task) => task.await.unwrap_or(0),
        None => 0,
    };
    let memory = match (subscribed, end) {
        (Some((subscribed, _)), Some((rss, hwm))) => Some(Memory {
            subscribed,
            peak: peak.max(rss),
            hwm,
        }),
        _ => None,
    };
    // Let the server see every connection close before the next run counts its subscriptions.
    let closing = Instant::now();
    while metric(http, server, "stockroom_subscriptions_open").await? > open_before {
        if closing.elapsed() > OPEN_TIMEOUT {
            eprintln!("  warning: subscriptions still open {OPEN_TIMEOUT:?} after closing");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut run = summarize(received, written, write_secs, started);
    run.write_errors = write_errors;
    run.memory = memory;
    Ok(run)
}

/// Writes `adjustStock` at `rate` per second in total from [`WRITERS`] clients for `duration`.
/// Returns (events written, failed writes).
async fn write(gql: &Gql, skus: &[Sku], rate: u64, duration: Duration) -> (u64, u64) {
    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let deadline = Instant::now() + duration;
    let period =
        Duration::from_secs_f64(WRITERS as f64 / rate.max(1) as f64).max(Duration::from_micros(1));
    let mut writers = Vec::with_capacity(WRITERS);
    for w in 0..WRITERS {
        let gql = gql.clone();
        let sku = skus[w % skus.len()].clone();
        let (written, errors, first_error) = (written.clone(), errors.clone(), first_error.clone());
        writers.push(tokio::spawn(async move {
            // Spread the writers' ticks over one period.
            let offset = period.mul_f64(w as f64 / WRITERS as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut delta = 1;
            loop {
                tick.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                let variables = json!({ "p": sku.product_id, "s": sku.store_id, "d": delta });
                let outcome = match gql.run_raw(ADJUST, variables).await {
                    Ok(body) if has_errors(&body) => {
                        Err(String::from_utf8_lossy(&body).into_owned())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {
                        written.fetch_add(1, Ordering::Relaxed);
                        delta = -delta;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(e);
                        }
                    }
                }
            }
        }));
    }
    for writer in writers {
        let _ = writer.await;
    }
    if let Ok(first) = first_error.lock()
        && let Some(e) = first.as_ref()
    {
        eprintln!("  write error (first): {e}");
    }
    (
        written.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    )
}

/// One baseline run: a raw broadcaster on a free port, the same number of clients and duration,
/// `rate` frames per second.
async fn baseline_run(ctx: &Context, rate: f64) -> BenchResult<FanoutRun> {
    let n = ctx.subscribers;
    let events = (rate * ctx.duration.as_secs_f64()).ceil() as usize;
    // Room for every event of the run, so a slow client is never dropped behind: the server
    // catches lagging subscribers up from its log, and the baseline must not do less.
    let capacity = (events + 1024).next_power_of_two().min(1 << 22);
    let (sender, _) = broadcast::channel::<Message>(capacity);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("baseline listener: {e}"))?;
    let url = format!(
        "ws://{}/",
        listener
            .local_addr()
            .map_err(|e| format!("baseline listener: {e}"))?
    );
    let acceptor = tokio::spawn(accept(listener, sender.clone()));
    let sockets = open_all(n, |_| connect(url.clone(), None)).await;
    let sockets = match sockets {
        Ok(sockets) => sockets,
        Err(e) => {
            acceptor.abort();
            return Err(e);
        }
    };
    // Each connection subscribed to the channel before its handshake completed, so every
    // client is listening now.
    let audience = Audience::listen(sockets, 0);
    let started = Instant::now();
    let written = broadcast_frames(&sender, rate, ctx.duration).await;
    let write_secs = started.elapsed().as_secs_f64();
    audience.drain(written * n as u64).await;
    let received = audience.finish().await?;
    acceptor.abort();
    drop(sender);
    Ok(summarize(received, written, write_secs, started))
}

/// Sends one stamped frame per tick at `rate` for `duration`; returns how many.
async fn broadcast_frames(
    sender: &broadcast::Sender<Message>,
    rate: f64,
    duration: Duration,
) -> u64 {
    let deadline = Instant::now() + duration;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1)).max(Duration::from_micros(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut position = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            return position;
        }
        position += 1;
        let _ = sender.send(Message::text(frame(position, Utc::now())));
    }
}

/// The baseline's frame: the pre-serialized template with a position and a send time.
fn frame(position: u64, at: DateTime<Utc>) -> String {
    let at = stamp(at);
    let mut text = String::with_capacity(
        FRAME_HEAD.len() + FRAME_MID.len() + FRAME_TAIL.len() + at.len() + 20,
    );
    text.push_str(FRAME_HEAD);
    text.push_str(&position.to_string());
    text.push_str(FRAME_MID);
    text.push_str(&at);
    text.push_str(FRAME_TAIL);
    text
}

/// The baseline server's accept loop: each connection subscribes to the channel, then
/// completes its WebSocket handshake and forwards frames.
async fn accept(listener: TcpListener, sender: broadcast::Sender<Message>) {
    let mut connections = Vec::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("  baseline accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let frames = sender.subscribe();
        connections.push(AbortOnDrop(tokio::spawn(forward(stream, frames))));
    }
}

/// Aborts a task when dropped (the accept loop's connections end with it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One baseline connection: every frame from the channel to the socket; what is already queued
/// goes out in the same flush.
async fn forward(stream: TcpStream, mut frames: broadcast::Receiver<Message>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if socket.feed(frame).await.is_err() {
                        return;
                    }
                    while let Ok(more) = frames.try_recv() {
                        if socket.feed(more).await.is_err() {
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                }
                // The client sees the gap and counts it as missing.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.close(None).await;
}

/// Opens `n` connections concurrently with `open(i)`; the first failure fails them all.
async fn open_all<F, Fut>(n: usize, open: F) -> BenchResult<Vec<Socket>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = BenchResult<Socket>> + Send + 'static,
{
    let tasks: Vec<JoinHandle<BenchResult<Socket>>> =
        (0..n).map(|i| tokio::spawn(open(i))).collect();
    let mut sockets = Vec::with_capacity(n);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    match failure {
        Some(e) => Err(format!(
            "opening {n} WebSocket connections: {} failed, first: {e}",
            n - sockets.len()
        )),
        None => Ok(sockets),
    }
}

/// A WebSocket connection with Nagle off, offering `protocol` when given.
async fn connect(url: String, protocol: Option<&'static str>) -> BenchResult<Socket> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    }
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(socket)
}

async fn send_text(socket: &mut Socket, text: String) -> BenchResult<()> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// A `graphql-transport-ws` connection with `key`, acknowledged, with the subscription sent.
async fn subscribe(url: String, key: String) -> BenchResult<Socket> {
    let mut socket = connect(url, Some("graphql-transport-ws")).await?;
    let init = json!({ "type": "connection_init", "payload": { "apiKey": key } });
    send_text(&mut socket, init.to_string()).await?;
    let acked = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = socket.next().await {
            match frame.map_err(|e| format!("before connection_ack: {e}"))? {
                Message::Text(text) if text.contains("\"connection_ack\"") => return Ok(()),
                Message::Text(text) if text.contains("\"ping\"") => {
                    send_text(&mut socket, r#"{"type":"pong"}"#.to_owned()).await?;
                }
                Message::Close(close) => {
                    return Err(format!("closed before connection_ack: {close:?}"));
                }
                _ => {}
            }
        }
        Err("connection ended before connection_ack".to_owned())
    })
    .await;
    acked.map_err(|_| "no connection_ack within 30 s".to_owned())??;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } });
    send_text(&mut socket, subscribe.to_string()).await?;
    Ok(socket)
}

/// Reads frames until told to stop (or the connection ends), timing each event of this run
/// (position above `after`) and counting it in `count`.
async fn receive(
    mut socket: Socket,
    after: u64,
    mut stop: watch::Receiver<bool>,
    count: Arc<AtomicU64>,
) -> Received {
    let mut seen = Received::default();
    let mut last = after;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = socket.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                seen.error = Some(e.to_string());
                break;
            }
        };
        let now = Utc::now();
        if !text.contains("\"type\":\"next\"") {
            if text.contains("\"type\":\"ping\"") {
                if let Err(e) = send_text(&mut socket, r#"{"type":"pong"}"#.to_owned()).await {
                    seen.error = Some(e);
                    break;
                }
                continue;
            }
            if text.contains("\"type\":\"error\"") || text.contains("\"type\":\"complete\"") {
                seen.error = Some(text.to_string());
                break;
            }
            continue;
        }
        let Some(position) = number_after(&text, "\"position\":") else {
            continue;
        };
        if position <= after {
            continue;
        }
        if position <= last {
            seen.repeated += 1;
            continue;
        }
        last = position;
        seen.events += 1;
        count.fetch_add(1, Ordering::Relaxed);
        seen.last_at = Some(Instant::now());
        if seen.frame_bytes == 0 {
            seen.frame_bytes = text.len();
        }
        if let Some(at) = text_after(&text, "\"occurredAt\":\"")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            let micros = (now - at.with_timezone(&Utc))
                .num_microseconds()
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX));
            seen.latencies.push(micros as u32);
        }
    }
    let _ = socket.close(None).await;
    seen
}

/// The unsigned integer right after `key`, without parsing the whole JSON.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&text[start..], |end| &text[start..start + end]);
    digits.parse().ok()
}

/// The string value right after `key` (which ends with the opening quote).
fn text_after<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let start = text.find(key)? + key.len();
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}

/// The run's figures from what every subscriber saw.
fn summarize(
    received: Vec<Received>,
    written: u64,
    write_secs: f64,
    started: Instant,
) -> FanoutRun {
    let mut latencies = Vec::new();
    let mut delivered = 0;
    let mut missing = 0;
    let mut repeated = 0;
    let mut complete = 0;
    let mut min_received = u64::MAX;
    let mut last_at = None::<Instant>;
    let mut frame_bytes = 0;
    let mut first_error = None;
    let mut broken = 0;
    for r in received {
        delivered += r.events;
        missing += written.saturating_sub(r.events);
        repeated += r.repeated;
        complete += usize::from(r.events >= written);
        min_received = min_received.min(r.events);
        last_at = last_at.max(r.last_at);
        frame_bytes = frame_bytes.max(r.frame_bytes);
        if let Some(e) = r.error {
            broken += 1;
            first_error.get_or_insert(e);
        }
        latencies.extend(r.latencies);
    }
    if let Some(e) = first_error {
        eprintln!("  {broken} subscriber connection(s) ended early, first: {e}");
    }
    latencies.sort_unstable();
    let window = last_at.map_or(0.0, |at| at.duration_since(started).as_secs_f64());
    FanoutRun {
        written,
        write_rate: written as f64 / write_secs.max(1e-9),
        delivered,
        delivered_rate: if window > 0.0 {
            delivered as f64 / window
        } else {
            0.0
        },
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().map_or(0.0, f64::from),
        min_received: if min_received == u64::MAX {
            0
        } else {
            min_received
        },
        complete,
        missing,
        repeated,
        write_errors: 0,
        frame_bytes,
        memory: None,
    }
}

fn print_run(label: &str, run: usize, r: &FanoutRun) {
    let memory = r.memory.map_or(String::new(), |m| {
        format!(
            "  RSS {:.0} → peak {:.0} MiB (HWM {:.0})",
            mib(m.subscribed),
            mib(m.peak),
            mib(m.hwm)
        )
    });
    eprintln!(
        "  run {run} {label:<8} {:>9.0} msgs/s ({} delivered)  {} events at {:.0}/s  \
         p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  fewest/subscriber {}  complete {}  \
         missing {}  repeated {}  failed writes {}  frame {} B{memory}",
        r.delivered_rate,
        r.delivered,
        r.written,
        r.write_rate,
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.max_us / 1000.0,
        r.min_received,
        r.complete,
        r.missing,
        r.repeated,
        r.write_errors,
        r.frame_bytes,
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table rows: medians over runs. Rates against the baseline at `--rate`, latencies against
/// the baseline at the server's achieved rate.
fn rows(runs: &Runs) -> Vec<Row> {
    let (server, baseline) = (&runs.server, &runs.baseline);
    let matched = &runs.latency_baseline();
    let pick =
        |runs: &[FanoutRun], f: fn(&FanoutRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        Row::throughput(
            NAME,
            "msgs/s",
            pick(server, |r| r.delivered_rate),
            pick(baseline, |r| r.delivered_rate),
        ),
        Row::rate(
            NAME,
            "write rate",
            "events/s",
            pick(server, |r| r.write_rate),
            pick(baseline, |r| r.write_rate),
        ),
    ];
    for (metric, f) in [
        ("p50", (|r: &FanoutRun| r.p50_us) as fn(&FanoutRun) -> f64),
        ("p99", |r| r.p99_us),
        ("max", |r| r.max_us),
    ] {
        rows.push(Row::latency_vs_baseline(
            NAME,
            metric,
            pick(server, f),
            pick(matched, f),
        ));
    }
    rows.push(Row::pair(
        NAME,
        "latency baseline rate",
        "events/s",
        pick(server, |r| r.write_rate),
        pick(matched, |r| r.write_rate),
    ));
    rows.push(Row::pair(
        NAME,
        "events written",
        "events",
        pick(server, |r| r.written as f64),
        pick(baseline, |r| r.written as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "min received per subscriber",
        "events",
        pick(server, |r| r.min_received as f64),
        pick(baseline, |r| r.min_received as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "errors: missing deliveries",
        "msgs",
        pick(server, |r| (r.missing + r.repeated) as f64),
        baseline
            .iter()
            .zip(&runs.matched)
            .map(|(b, m)| {
                let m = m.as_ref().map_or(0, |m| m.missing + m.repeated);
                (b.missing + b.repeated + m) as f64
            })
            .collect(),
    ));
    rows.push(Row::server_only(
        NAME,
        "errors: failed writes",
        "writes",
        pick(server, |r| r.write_errors as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "frame size",
        "bytes",
        pick(server, |r| r.frame_bytes as f64),
        pick(baseline, |r| r.frame_bytes as f64),
    ));
    let memory: Option<Vec<Memory>> = server.iter().map(|r| r.memory).collect();
    if let Some(memory) = memory.filter(|m| !m.is_empty()) {
        let of = |f: fn(&Memory) -> u64| memory.iter().map(|m| mib(f(m))).collect::<Vec<_>>();
        rows.push(Row::server_only(
            NAME,
            "server VmRSS, subscribed",
            "MiB",
            of(|m| m.subscribed),
        ));
        rows.push(Row::server_only(
            NAME,
            "server VmRSS, peak",
            "MiB",
            of(|m| m.peak),
        ));
        rows.push(Row::server_only(NAME, "server VmHWM", "MiB", of(|m| m.hwm)));
    }
    rows
}

/// The value of an unlabelled Prometheus sample `name` (0 when absent).
async fn metric(http: &reqwest::Client, server: &Server, name: &str) -> BenchResult<f64> {
    let response = http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET /metrics: HTTP {status}"));
    }
    let text = response
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0))
}

/// The feed's position once it has stopped moving (earlier writes, such as the warm-up, all
/// published), so that every event above it belongs to the coming run.
async fn settled_position(http: &reqwest::Client, server: &Server) -> BenchResult<u64> {
    let started = Instant::now();
    let mut position = metric(http, server, "stockroom_feed_position").await?;
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(300) && started.elapsed() < OPEN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = metric(http, server, "stockroom_feed_position").await?;
        if now != position {
            position = now;
            still = Instant::now();
        }
    }
    Ok(position as u64)
}

/// `(VmRSS, VmHWM)` of a process in KiB, from `/proc/PID/status`.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Fails early when this process may not open the baseline's descriptors: it holds both ends
/// of every connection.
fn check_open_files(subscribers: usize) -> BenchResult<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    let needed = 2 * subscribers as u64 + 256;
    match soft {
        Some(limit) if limit < needed => Err(format!(
            "{subscribers} subscribers need about {needed} open files here (the baseline holds \
             both ends of each connection), the limit is {limit}: raise it (ulimit -n) or pass \
             fewer --subscribers"
        )),
        _ => Ok(()),
    }
}
