//! Relay leadership across instances on PostgreSQL (a fresh database and a redis-server of the
//! test's own): one instance relays at a time, in a term; a killed holder is replaced within a
//! second; a frozen one (SIGSTOP past its lease, at whatever point of its pipeline) can neither
//! lose, repeat nor reorder anything in the stream. On RabbitMQ, which cannot refuse a repeat,
//! it can repeat what was positioned in its term, never skip or reorder (a consumer drops the
//! repeats by `message_id` or by position).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::common::postgres::{drop_database, fresh_database};
use crate::common::rabbitmq::*;
use crate::common::redis_server::RedisServer;
use crate::common::*;

const STREAM: &str = "inventory-events";
const ADJUST: &str = "mutation($p: UUID!, $d: Int!) {
  adjustStock(input: {productId: $p, storeId: \"s1\", delta: $d}) { version } }";

/// Two instances on one PostgreSQL database, publishing to one Redis.
struct Pair {
    servers: [Server; 2],
}

impl Pair {
    fn start(redis: &RedisServer, url: &str, extra: &[(&str, &str)]) -> Pair {
        Pair::on(Options::default().redis(redis), url, extra)
    }

    /// Two instances on the database at `url`, with the broker of `broker`.
    fn on(broker: Options, url: &str, extra: &[(&str, &str)]) -> Pair {
        let options = || broker.clone().postgres(url).env(extra);
        Pair {
            servers: [Server::start_with(options()), Server::start_with(options())],
        }
    }

    /// The instance that relays, once exactly one says so in `/readyz`.
    async fn active(&self, within: Duration) -> usize {
        eventually(within, "exactly one instance relays", || async {
            let mut active = Vec::new();
            for (i, server) in self.servers.iter().enumerate() {
                let (_, body) = server.admin().readyz().await;
                match body["relay"].as_str() {
                    Some("active") => active.push(i),
                    Some("standby") => {}
                    other => return Err(format!("relay is {other:?} in {body}")),
                }
            }
            match active[..] {
                [one] => Ok(one),
                _ => Err(format!("active: {active:?}")),
            }
        })
        .await
    }

    /// Sum of a metric over both instances.
    async fn metric(&self, series: &str) -> f64 {
        metric(&self.servers[0].admin(), series).await
            + metric(&self.servers[1].admin(), series).await
    }
}

/// Writers adjusting the level through each of `clients` until `stop`; a write cut off by a
/// pause may fail (its session ended), and only acknowledged ones are counted.
fn keep_writing(
    clients: Vec<Client>,
    product: &str,
    stop: &Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicUsize>) {
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writers = clients
        .into_iter()
        .map(|client| {
            let (product, stop, acknowledged) =
                (product.to_owned(), stop.clone(), acknowledged.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = client
                        .request(ADJUST, json!({ "p": product, "d": 1 }))
                        .await;
                    if body["errors"].is_null() {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    (writers, acknowledged)
}

/// Where the relay publishes, as the pause tests read it back.
enum Sink<'a> {
    /// The Redis stream: exactly the log.
    Redis(&'a RedisServer),
    /// A queue bound to `inventory.#`, and what it delivered so far: the log once repeats are
    /// dropped.
    RabbitMq(Box<Queue>, Vec<Message>),
}

impl Sink<'_> {
    /// Waits until the relay published `count` events.
    async fn wait_for(&mut self, count: usize) {
        match self {
            Sink::Redis(redis) => {
                redis.wait_for(STREAM, count, Duration::from_secs(10)).await;
            }
            Sink::RabbitMq(queue, seen) => {
                seen.extend(queue.take(count, Duration::from_secs(10)).await);
            }
        }
    }

    /// Checks what was published against the log, event by event.
    async fn assert_is_the_log(&mut self, log: &[serde_json::Value]) {
        match self {
            Sink::Redis(redis) => assert_stream_matches_log(&redis.entries(STREAM).await, log),
            Sink::RabbitMq(queue, seen) => {
                let wanted = log.len().saturating_sub(seen.len());
                seen.extend(queue.take(wanted, Duration::from_secs(30)).await);
                seen.extend(queue.drain(Duration::from_millis(500)).await);
                let kept = without_repeats(seen);
                assert_messages_match_log(&kept, log);
                assert_eq!(by_position(seen), kept, "no repeat a position check misses");
                println!("{} messages for {} events", seen.len(), log.len());
            }
        }
    }
}

/// Stops the writers, waits until everything is published, and checks what was published
/// against the log, event by event.
async fn stream_is_the_log(
    pair: &Pair,
    sink: &mut Sink<'_>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    stop: &AtomicBool,
) -> usize {
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let admin = pair.servers[0].admin();
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 1).await;
    sink.assert_is_the_log(&log).await;
    log.len()
}

/// Latest position in the stream (0 when empty).
async fn stream_top(redis: &RedisServer) -> i64 {
    let mut conn = redis.connection().await;
    let last: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrevrange_count(&mut conn, STREAM, "+", "-", 1)
            .await
            .expect("XREVRANGE");
    last.ids
        .first()
        .and_then(|e| e.id.split('-').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_relay_holder_is_replaced_within_a_second_on_postgres() {
    let redis = RedisServer::start();
    let url = fresh_database().await;
    let mut pair = Pair::start(&redis, &url, &[("STOCKROOM_RELAY_BATCH", "50")]);
    let p = seed(&pair.servers[0].admin(), "s1", "FAILOVER", 0).await;
    let holder = pair.active(Duration::from_secs(10)).await;
    let standby = 1 - holder;
    let stop = Arc::new(AtomicBool::new(false));
    let standby_client = pair.servers[standby].admin();
    let (writers, _) = keep_writing(vec![standby_client.clone(), standby_client], &p, &stop);
    redis.wait_for(STREAM, 50, Duration::from_secs(10)).await;

    let top_at_kill = stream_top(&redis).await;
    let killed = Instant::now();
    pair.servers[holder].kill();
    let moved = eventually(
        Duration::from_secs(10),
        "the stream moves again",
        || async {
            match stream_top(&redis).await {
                top if top > top_at_kill => Ok(killed.elapsed()),
                top => Err(format!("stream top still {top}")),
            }
        },
    )
    .await;
    println!(
        "stream moved again {} ms after SIGKILL of the relay holder",
        moved.as_millis()
    );
    assert!(
        moved < Duration::from_secs(2),
        "the stream stood still for {moved:?} after the holder was killed"
    );
    let (_, body) = pair.servers[standby].admin().readyz().await;
    assert_eq!(body["relay"], "active", "{body}");
    assert_eq!(
        metric(&pair.servers[standby].admin(), "stockroom_relay_active").await,
        1.0
    );

    // The survivor publishes everything, the killed holder's unfinished batches included.
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let admin = pair.servers[standby].admin();
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 1).await;
    assert_stream_matches_log(&redis.entries(STREAM).await, &log);
    drop(pair);
    drop_database(&url).await;
}

/// Relay settings for the pause tests: a short lease, small batches (the pipeline is always
/// busy), a short poll.
const PAUSE_SETTINGS: [(&str, &str); 3] = [
    ("STOCKROOM_RELAY_LEASE_MS", "500"),
    ("STOCKROOM_RELAY_BATCH", "10"),
    ("STOCKROOM_RELAY_POLL_MS", "100"),
];
const LEASE_MS: u64 = 500;

/// What a run of pauses saw.
struct Pauses {
    /// Time from each SIGSTOP until the other instance relayed (when it did during the pause).
    takeovers: Vec<Option<u128>>,
    /// Times a resumed holder was fenced.
    fenced: f64,
}

/// Under write load through both instances, freezes the instance that relays `count` times,
/// each time for longer than the lease at a random point of its pipeline, then resumes it;
/// finally checks that the stream is exactly the log and no acknowledged write was lost.
/// `takeover_within`: how soon the other instance must relay while the holder is frozen (`None`
/// where a frozen holder may block it, as inside an SQLite write transaction).
async fn freeze_the_holder(
    pair: &Pair,
    sink: &mut Sink<'_>,
    count: usize,
    takeover_within: Option<Duration>,
) -> Pauses {
    let p = seed(&pair.servers[0].admin(), "s1", "FROZEN", 0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = [0, 1, 0, 1].map(|i| pair.servers[i].admin()).to_vec();
    let (writers, acknowledged) = keep_writing(clients, &p, &stop);
    sink.wait_for(30).await;

    let mut takeovers = Vec::new();
    for _ in 0..count {
        let holder = pair.active(Duration::from_secs(15)).await;
        // Somewhere in the holder's pipeline: positioning, publishing, marking or between.
        let jitter = rand::rng().random_range(0..40);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let frozen = Instant::now();
        pair.servers[holder].pause();
        let pause = Duration::from_millis(LEASE_MS * 2 + rand::rng().random_range(0..1_000));
        let other = pair.servers[1 - holder].admin();
        let took_over = async {
            loop {
                let state = tokio::time::timeout(pause, other.readyz()).await;
                if state.is_ok_and(|(_, body)| body["relay"] == "active") {
                    return frozen.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let took_over = tokio::time::timeout(pause.saturating_sub(frozen.elapsed()), took_over)
            .await
            .ok();
        if let Some(within) = takeover_within {
            let seen = took_over.expect("the other instance took over while the holder was frozen");
            assert!(seen < within, "takeover took {seen:?}");
        }
        takeovers.push(took_over.map(|t| t.as_millis()));
        tokio::time::sleep(pause.saturating_sub(frozen.elapsed())).await;
        pair.servers[holder].resume();
        let settle = rand::rng().random_range(100..400);
        tokio::time::sleep(Duration::from_millis(settle)).await;
    }

    let logged = stream_is_the_log(pair, sink, writers, &stop).await;
    let fenced = pair.metric("stockroom_relay_fenced_total").await;
    println!(
        "{count} pauses; takeover after {takeovers:?} ms; {logged} events; {} writes \
         acknowledged; fenced {fenced} times (positioning {}, publishing {})",
        acknowledged.load(Ordering::Relaxed),
        pair.metric("stockroom_relay_fenced_total{stage=\"position\"}")
            .await,
        pair.metric("stockroom_relay_fenced_total{stage=\"publish\"}")
            .await,
    );
    let quantity = level(&pair.servers[0].admin(), &p, "s1").await["quantity"]
        .as_u64()
        .expect("quantity") as usize;
    assert_eq!(
        logged,
        quantity + 1,
        "one stock.updated per adjustment, after stock.created"
    );
    assert!(
        quantity >= acknowledged.load(Ordering::Relaxed),
        "every acknowledged write is in the stock level"
    );
    Pauses { takeovers, fenced }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_relay_holder_cannot_lose_or_reorder_the_stream_on_postgres() {
    let redis = RedisServer::start();
    let url = fresh_database().await;
    let pair = Pair::start(&redis, &url, &PAUSE_SETTINGS);
    // The session ends after the lease, and with it any transaction the frozen holder left open.
    let bound = Duration::from_millis(LEASE_MS * 2 + 500);
    // `freeze_the_holder` fails unless the other instance took over within `bound` each time.
    let pauses = freeze_the_holder(&pair, &mut Sink::Redis(&redis), 8, Some(bound)).await;
    assert!(
        pauses.fenced >= 1.0,
        "a resumed holder found its term ended at least once"
    );
    drop(pair);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_relay_holder_can_repeat_but_never_lose_or_reorder_on_rabbitmq() {
    let exchange = Exchange::declare().await;
    let queue = exchange
        .queue("inventory.#", lapin::types::FieldTable::default())
        .await;
    let url = fresh_database().await;
    let pair = Pair::on(exchange.options(&broker_url()), &url, &PAUSE_SETTINGS);
    let bound = Duration::from_millis(LEASE_MS * 2 + 500);
    let mut sink = Sink::RabbitMq(Box::new(queue), Vec::new());
    // What is checked is the queue against the log (in `freeze_the_holder`). Whether a resumed
    // holder meets the positioning fence or first learns from its session that it lost the
    // lead is timing (RabbitMQ has no fence of its own to count), so it is printed, not asserted.
    let pauses = freeze_the_holder(&pair, &mut sink, 8, Some(bound)).await;
    println!("fenced {} times", pauses.fenced);
    drop(pair);
    drop_database(&url).await;
    exchange.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_relay_holder_cannot_lose_or_reorder_the_stream_on_sqlite() {
    let redis = RedisServer::start();
    let mut first = Server::start_with(with_redis(&redis, &PAUSE_SETTINGS));
    let dir = first.take_dir();
    let second = Server::start_with(
        Options::default()
            .sqlite_file(&first.database)
            .redis(&redis)
            .env(&PAUSE_SETTINGS),
    );
    let pair = Pair {
        servers: [first, second],
    };
    // A holder frozen inside an SQLite write transaction holds the database's write lock: nobody
    // writes, the lease included, until it resumes. Takeover is not bounded (eight pauses make
    // it near certain that one falls outside a write); the stream is.
    let pauses = freeze_the_holder(&pair, &mut Sink::Redis(&redis), 8, None).await;
    assert!(
        pauses.takeovers.iter().any(Option::is_some),
        "the lease passed to the other instance at least once"
    );
    drop(pair);
    drop(dir);
}
