//! RabbitMQ as the broker (`--amqp-url`), against the machine's RabbitMQ with an exchange per
//! test: the messages, their properties and their order are the log; a queue bound narrower gets
//! only its events; a nacked message follows the retry, dead and redrive rules; RabbitMQ cut
//! off or behind a blackhole (through a proxy the test controls) loses nothing; a server killed
//! mid-burst repeats at most what a consumer drops by `message_id`; a restored database
//! publishes nothing over what consumers saw; both brokers at once, or `amqps://`, are refused.

use std::process::Command;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

use crate::common::proxy::Proxy;
use crate::common::rabbitmq::*;
use crate::common::*;

const ADJUST: &str = "mutation($p: UUID!, $d: Int!) {
  adjustStock(input: {productId: $p, storeId: \"s1\", delta: $d}) { version } }";
const RESERVE: &str = "mutation($p: UUID!, $q: Int!) {
  reserveStock(input: {productId: $p, storeId: \"s1\", quantity: $q}) { id } }";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn events_reach_the_exchange_in_log_order_with_their_properties_and_routing_keys() {
    let exchange = Exchange::declare().await;
    let mut all = exchange.queue("inventory.#", FieldTable::default()).await;
    let mut stock = exchange
        .queue("inventory.stock.*", FieldTable::default())
        .await;
    let server = Server::start_with(exchange.options(&broker_url()));
    let admin = server.admin();
    create_store(&admin, "s1").await;
    let p = create_product(&admin, "AMQP").await;
    init_stock(&admin, &p, "s1", 10, 3).await;
    let reservation = admin.data(RESERVE, json!({ "p": p, "q": 8 })).await;
    let id = reservation["reserveStock"]["id"].clone();
    admin
        .data(
            "mutation($id: UUID!) { cancelReservation(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    admin.data(ADJUST, json!({ "p": p, "d": -10 })).await;
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;

    let log = events(&admin, 1).await;
    let kinds = types(&log);
    for expected in ["reservation.created", "stock.low", "stock.depleted"] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} in {kinds:?}"
        );
    }
    let messages = all.take(log.len(), WAIT).await;
    assert_messages_match_log(&messages, &log);
    assert!(all.drain(Duration::from_millis(300)).await.is_empty());

    let stock_log: Vec<_> = log
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("stock."))
        .cloned()
        .collect();
    assert!(
        stock_log.len() < log.len(),
        "the log holds other events too"
    );
    let stock_messages = stock.take(stock_log.len(), WAIT).await;
    assert_messages_match_log(&stock_messages, &stock_log);
    assert!(stock.drain(Duration::from_millis(300)).await.is_empty());

    let (_, ready) = admin.readyz().await;
    assert_eq!(ready["broker"], "ok");
    let health = admin.data("{ health { broker } }", json!({})).await;
    assert_eq!(health["health"]["broker"], "ok");
    exchange.delete().await;
}

/// What `stockroom` prints on stderr when it refuses to start with `env`.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .env("DATABASE_URL", "sqlite::memory:")
        .envs(env.iter().copied())
        .output()
        .expect("run stockroom");
    assert!(!output.status.success(), "started with {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn both_brokers_or_an_amqps_url_are_refused_at_start() {
    let both = refused_at_start(&[
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("AMQP_URL", "amqp://127.0.0.1:1/%2f"),
    ]);
    assert!(
        both.contains("both --redis-url and --amqp-url are set") && both.contains("one broker"),
        "{both}"
    );
    let tls = refused_at_start(&[("AMQP_URL", "amqps://127.0.0.1:1/%2f")]);
    assert!(tls.contains("amqps:// (TLS) is not built in"), "{tls}");
    let garbage = refused_at_start(&[("AMQP_URL", "http://nowhere")]);
    assert!(garbage.contains("not an AMQP URL"), "{garbage}");
}

#[tokio::test]
async fn a_nacked_event_goes_dead_and_is_redriven_in_order() {
    let exchange = Exchange::declare().await;
    let mut all = exchange.queue("inventory.#", FieldTable::default()).await;
    // A queue that takes one message, then makes RabbitMQ nack the rest.
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let mut bounded = exchange.queue("inventory.stock.updated", full).await;
    let server = Server::start_with(
        exchange
            .options(&broker_url())
            .env(&[("STOCKROOM_RELAY_MAX_ATTEMPTS", "2")]),
    );
    let admin = server.admin();
    let p = seed(&admin, "s1", "NACK", 10).await;
    admin.data(ADJUST, json!({ "p": p, "d": 1 })).await;
    admin.data(ADJUST, json!({ "p": p, "d": 1 })).await;
    eventually(WAIT, "the nacked event is dead", || async {
        match metric(&admin, "stockroom_outbox_dead").await {
            1.0 => Ok(()),
            dead => Err(format!("stockroom_outbox_dead {dead}")),
        }
    })
    .await;
    let dead = admin
        .data("{ outbox { pending dead broker } }", json!({}))
        .await;
    assert_eq!(dead["outbox"]["dead"], 1);
    assert_eq!(dead["outbox"]["broker"], "ok");
    assert!(server.logs().contains("nacked by RabbitMQ"));

    // The consumer drains its queue: the event is taken on redrive, after the ones before it.
    bounded.take(1, WAIT).await;
    let redriven = admin.data("mutation { redriveEvents }", json!({})).await;
    assert_eq!(redriven["redriveEvents"], 1);
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 1).await;
    let messages = all.drain(Duration::from_millis(500)).await;
    let kept = without_repeats(&messages);
    assert_messages_match_log(&kept, &log);
    assert_eq!(bounded.take(1, WAIT).await[0].message_id, log[2]["id"]);
    exchange.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_cut_off_keeps_writes_working_and_delivers_everything_after() {
    lost_mid_load(Proxy::cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_behind_a_blackhole_keeps_writes_working_and_delivers_everything_after() {
    // Nothing answers and nothing is reset: a publish waits for confirms that never come,
    // gives up after 10 s, and RabbitMQ counts as down until a new connection works.
    lost_mid_load(Proxy::blackhole).await;
}

/// Writes through a server whose RabbitMQ connection is lost (`lose`) mid-load: writes keep
/// working, readiness and `health` say the broker is down, the outbox grows; once the
/// connection is back, every event arrives, in log order (repeats dropped).
async fn lost_mid_load(lose: fn(&Proxy)) {
    let exchange = Exchange::declare().await;
    let mut all = exchange.queue("inventory.#", FieldTable::default()).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let server = Server::start_with(exchange.options(&through_proxy));
    let admin = server.admin();
    let p = seed(&admin, "s1", "CUT", 0).await;
    let writer = {
        let (admin, p) = (admin.clone(), p.clone());
        tokio::spawn(async move {
            for _ in 0..300 {
                admin.data(ADJUST, json!({ "p": p, "d": 1 })).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut messages = all.take(20, WAIT).await;
    lose(&proxy);
    eventually(WAIT, "readiness says the broker is down", || async {
        let (_, ready) = admin.readyz().await;
        match ready["broker"].as_str() {
            Some("down") => Ok(()),
            other => Err(format!("broker {other:?}")),
        }
    })
    .await;
    eventually(WAIT, "the outbox grows", || async {
        let (_, ready) = admin.readyz().await;
        match ready["outboxPending"].as_u64() {
            Some(pending) if pending >= 20 => Ok(()),
            other => Err(format!("pending {other:?}")),
        }
    })
    .await;
    let health = admin.data("{ health { broker } }", json!({})).await;
    assert_eq!(health["health"]["broker"], "down");
    proxy.restore();
    writer
        .await
        .expect("every write succeeded while RabbitMQ was cut off");
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 301).await;
    assert_eq!(
        log.len(),
        301,
        "stock.created and one stock.updated per write"
    );
    messages.extend(all.take(log.len() - 20, WAIT).await);
    messages.extend(all.drain(Duration::from_millis(500)).await);
    assert_messages_match_log(&without_repeats(&messages), &log);
    assert_eq!(without_repeats(&messages), by_position(&messages));
    let (_, ready) = admin.readyz().await;
    assert_eq!(ready["broker"], "ok");
    exchange.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_burst_loses_nothing_and_repeats_only_what_a_consumer_drops() {
    let exchange = Exchange::declare().await;
    let mut all = exchange.queue("inventory.#", FieldTable::default()).await;
    let options = || {
        exchange
            .options(&broker_url())
            .env(&[("STOCKROOM_RELAY_BATCH", "7")])
    };
    let mut first = Server::start_with(options());
    let dir = first.take_dir();
    let admin = first.admin();
    let p = seed(&admin, "s1", "KILLED", 100_000).await;
    kill_mid_burst(&mut first, &p).await;
    let second = Server::start_with(Options {
        database: Some(first.database.clone()),
        ..options()
    });
    let admin = second.admin();
    let committed = 100_000 - level(&admin, &p, "s1").await["quantity"].as_i64().unwrap();
    assert!(committed > 0, "some writes were committed before the kill");
    wait_for_outbox(&admin, json!({ "pending": 0, "dead": 0 })).await;
    let log = events(&admin, 1).await;
    assert_eq!(
        log.len(),
        1 + committed as usize,
        "one event per committed write"
    );
    let mut messages = all.take(log.len(), WAIT).await;
    messages.extend(all.drain(Duration::from_millis(500)).await);
    let repeats = messages.len() - log.len();
    println!("{} events, {repeats} repeated after the kill", log.len());
    assert_messages_match_log(&without_repeats(&messages), &log);
    assert_eq!(
        by_position(&messages),
        without_repeats(&messages),
        "dropping positions at or below the last one seen drops the same repeats"
    );
    drop(dir);
    exchange.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_gets_what_another_instance_published_while_its_own_was_cut_off() {
    let exchange = Exchange::declare().await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let mut a = Server::start_with(exchange.options(&broker_url()));
    let _dir = a.take_dir();
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let b = Server::start_with(Options {
        database: Some(a.database.clone()),
        ..exchange.options(&through_proxy)
    });
    let p = seed(&a.admin(), "s1", "GAP", 0).await;
    wait_for_outbox(&a.admin(), json!({ "pending": 0, "dead": 0 })).await;
    eventually(WAIT, "the first instance relays", || async {
        let (_, ready) = a.admin().readyz().await;
        match ready["relay"].as_str() {
            Some("active") => Ok(()),
            other => Err(format!("relay {other:?}")),
        }
    })
    .await;
    let mut ws = crate::common::ws::WsClient::open(&b.url, READ_KEY).await;
    ws.subscribe(
        "events",
        "subscription { inventoryEvents { id position type } }",
        json!({}),
    )
    .await;
    ws.ping(json!({ "live": true })).await.expect("pong");

    // The second instance loses RabbitMQ; meanwhile the first writes and publishes. Its feed
    // queue never sees those messages: they went out before it was bound again.
    proxy.cut();
    for _ in 0..3 {
        a.admin().data(ADJUST, json!({ "p": p, "d": 1 })).await;
    }
    wait_for_outbox(&a.admin(), json!({ "pending": 0, "dead": 0 })).await;
    proxy.restore();
    let got = ws.take_data("events", 3).await;
    let log = events(&a.admin(), 1).await;
    let ids = |events: &[serde_json::Value]| -> Vec<String> {
        events.iter().map(|e| e["id"].to_string()).collect()
    };
    let live: Vec<_> = got.iter().map(|d| d["inventoryEvents"].clone()).collect();
    assert_eq!(
        ids(&live),
        ids(&log[log.len() - 3..]),
        "the three, in order"
    );
    exchange.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restored_from_an_earlier_copy_publishes_nothing_over_what_consumers_saw() {
    let exchange = Exchange::declare().await;
    let mut all = exchange.queue("inventory.#", FieldTable::default()).await;
    let mut server = Server::start_with(exchange.options(&broker_url()));
    let dir = server.take_dir();
    let database = server.database.clone();
    let admin = server.admin();
    let p = seed(&admin, "s1", "RESTORE", 100).await;
    wait_for_outbox(&admin, json!({ "pending": 0 })).await;
    server.terminate();
    let backup = tempfile::tempdir().expect("backup dir");
    let files = |dir: &std::path::Path| {
        ["", "-wal", "-shm"].map(|suffix| dir.join(format!("stockroom.db{suffix}")))
    };
    let (live, saved) = (files(database.parent().expect("dir")), files(backup.path()));
    for (from, to) in live.iter().zip(&saved) {
        if from.exists() {
            std::fs::copy(from, to).expect("back up");
        }
    }
    // After the backup, the service goes on: consumers see positions 2 and 3.
    let on_database = |exchange_name: &str| {
        let mut options = exchange.options(&broker_url());
        options.database = Some(database.clone());
        options.env(&[("STOCKROOM_AMQP_EXCHANGE", exchange_name)])
    };
    let mut server = Server::start_with(on_database(&exchange.name));
    for _ in 0..2 {
        server.admin().data(ADJUST, json!({ "p": p, "d": 1 })).await;
    }
    wait_for_outbox(&server.admin(), json!({ "pending": 0 })).await;
    server.terminate();
    let seen = all.take(3, WAIT).await;

    // Restored: its next events would take positions 2 and 3 again, with other ids.
    for (to, from) in live.iter().zip(&saved) {
        let _ = std::fs::remove_file(to);
        if from.exists() {
            std::fs::copy(from, to).expect("restore");
        }
    }
    let server = Server::start_with(on_database(&exchange.name));
    let admin = server.admin();
    for _ in 0..2 {
        admin.data(ADJUST, json!({ "p": p, "d": -1 })).await;
    }
    let ready = eventually(WAIT, "the conflict is reported", || async {
        let (_, body) = admin.readyz().await;
        match body["broker"].as_str() {
            Some("conflict") => Ok(body),
            other => Err(format!("broker {other:?}: {body}")),
        }
    })
    .await;
    assert!(
        ready["brokerError"]
            .as_str()
            .is_some_and(|e| e.contains(&exchange.name)),
        "{ready}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outbox = admin.data("{ outbox { pending } }", json!({})).await;
    assert_eq!(outbox["outbox"]["pending"], 2, "the events stay pending");
    assert!(
        all.drain(Duration::from_millis(500)).await.is_empty(),
        "nothing reaches the consumers after {seen:?}"
    );
    drop(server);

    // The way out: a new exchange; what was pending goes there, in order.
    let fresh = Exchange::declare().await;
    let mut moved = fresh.queue("inventory.#", FieldTable::default()).await;
    let server = Server::start_with(on_database(&fresh.name));
    wait_for_outbox(&server.admin(), json!({ "pending": 0 })).await;
    let log = events(&server.admin(), 3).await;
    let messages = moved.take(2, WAIT).await;
    assert_messages_match_log(&messages, &log[1..]);
    drop(server);
    drop(dir);
    exchange.delete().await;
    fresh.delete().await;
}
