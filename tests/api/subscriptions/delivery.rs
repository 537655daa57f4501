//! What subscribers receive: order, filters, resume with `after`, slow subscribers,
//! `stockLevelChanged`, and delivery across processes through Redis.

use super::*;

/// With no subscriber the feed reader idles; a subscription opened later starts after what was
/// published meanwhile (no replay of it), and the reader picks up live events again.
#[tokio::test]
async fn a_live_subscription_after_a_quiet_spell_starts_at_the_newest_event() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "QUIET", 100).await;
    let mut first = WsClient::open(&server.url, READ_KEY).await;
    first.subscribe("1", EVENTS, UPDATES.clone()).await;
    wait_subscribed(&admin, 1).await;
    adjust(&admin, &p, "s1", 1).await;
    assert_eq!(
        nodes(first.take_data("1", 1).await)[0]["payload"]["change"],
        1
    );
    first.close().await;
    wait_subscribed_exactly(&admin, 0).await;

    // Nobody listens while these are written and published.
    for d in [2, 3, 4] {
        adjust(&admin, &p, "s1", d).await;
    }
    published(&admin).await;

    let mut second = WsClient::open(&server.url, READ_KEY).await;
    second.subscribe("1", EVENTS, UPDATES.clone()).await;
    wait_subscribed(&admin, 1).await;
    for d in [5, 6] {
        adjust(&admin, &p, "s1", d).await;
    }
    let got = nodes(second.take_data("1", 2).await);
    let changes: Vec<i64> = got
        .iter()
        .map(|e| e["payload"]["change"].as_i64().unwrap())
        .collect();
    assert_eq!(changes, [5, 6], "only what was written after subscribing");
    let log = events(&admin, 7).await;
    assert_eq!(ids(&got), ids(&log[5..]));
    second.assert_quiet("1", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn events_arrive_live_in_log_order() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "LIVE", 100).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    // "Live from now" starts at the newest event the feed has seen; the seed's `stock.created`
    // may still be on its way, so listen to the updates only.
    ws.subscribe("1", EVENTS, UPDATES.clone()).await;
    wait_subscribed(&admin, 1).await;
    for d in [1, -2, 3, -4, 5] {
        adjust(&admin, &p, "s1", d).await;
    }
    let got = nodes(ws.take_data("1", 5).await);
    let log = events(&admin, 6).await;
    assert_eq!(
        ids(&got),
        ids(&log[1..]),
        "exactly the new events, in log order"
    );
    assert_contiguous(&got);
    for (event, logged) in got.iter().zip(&log[1..]) {
        assert_eq!(event["cursor"], logged["cursor"]);
        assert_eq!(event["type"], "stock.updated");
        assert_eq!(event["payload"], logged["payload"]);
    }
    let changes: Vec<i64> = got
        .iter()
        .map(|e| e["payload"]["change"].as_i64().unwrap())
        .collect();
    assert_eq!(changes, [1, -2, 3, -4, 5]);
    ws.assert_quiet("1", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn filters_by_type_store_and_product() {
    let server = Server::start();
    let admin = server.admin();
    create_store(&admin, "s1").await;
    create_store(&admin, "s2").await;
    let a = create_product(&admin, "FILTER-A").await;
    let b = create_product(&admin, "FILTER-B").await;
    for (p, s) in [(&a, "s1"), (&a, "s2"), (&b, "s1"), (&b, "s2")] {
        init_stock(&admin, p, s, 10, 3).await;
    }
    let start = events(&admin, 4).await[3]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    let filters = [
        ("types", json!({ "types": ["stock.low", "stock.depleted"] })),
        ("store", json!({ "storeId": "s2" })),
        ("product", json!({ "productId": b })),
        (
            "both",
            json!({ "productId": a, "storeId": "s1", "types": ["stock.updated"] }),
        ),
    ];
    for (id, filter) in &filters {
        ws.subscribe(id, EVENTS, json!({ "filter": filter, "after": start }))
            .await;
    }
    wait_subscribed(&admin, filters.len()).await;
    adjust(&admin, &a, "s1", -8).await; // updated + low
    adjust(&admin, &a, "s2", 1).await;
    adjust(&admin, &b, "s2", -10).await; // updated + low + depleted
    adjust(&admin, &b, "s1", 2).await;
    admin
        .data(RESERVE, json!({ "p": a, "s": "s1", "q": 2 }))
        .await; // reservation.created + depleted
    let all = events(&admin, 13).await;
    let from = all
        .iter()
        .position(|e| e["cursor"] == start.as_str())
        .expect("start cursor");
    let log = all[from + 1..].to_vec();
    assert_eq!(log.len(), 9, "{log:?}");
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        ids(&log.iter().filter(|e| keep(e)).cloned().collect::<Vec<_>>())
    };
    let wanted = [
        expect(&|e| ["stock.low", "stock.depleted"].contains(&e["type"].as_str().unwrap())),
        expect(&|e| e["storeId"] == "s2"),
        expect(&|e| e["productId"] == b.as_str()),
        expect(&|e| {
            e["productId"] == a.as_str() && e["storeId"] == "s1" && e["type"] == "stock.updated"
        }),
    ];
    assert_eq!(wanted[0].len(), 4, "low, low, depleted, depleted: {log:?}");
    for ((id, _), wanted) in filters.iter().zip(wanted) {
        let got = nodes(ws.take_data(id, wanted.len()).await);
        assert_eq!(ids(&got), wanted, "filter {id}");
        ws.assert_quiet(id, Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn resume_after_a_disconnect_yields_exactly_the_missed_events_then_live() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "RESUME", 1000).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("1", EVENTS, UPDATES.clone()).await;
    wait_subscribed(&admin, 1).await;
    for d in 1..=3 {
        adjust(&admin, &p, "s1", d).await;
    }
    let seen = nodes(ws.take_data("1", 3).await);
    let cursor = seen[2]["cursor"].as_str().unwrap().to_owned();
    ws.close().await;
    wait_subscribed_below(&admin, 1).await;

    // Writes while disconnected.
    for d in 4..=10 {
        adjust(&admin, &p, "s1", d).await;
    }
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("again", EVENTS, json!({ "after": cursor }))
        .await;
    let missed = nodes(ws.take_data("again", 7).await);
    let log = events(&admin, 11).await;
    assert_eq!(ids(&missed), ids(&log[4..11]), "exactly the missed events");
    assert_eq!(missed[0]["position"].as_i64(), Some(5));
    // Then live, without a duplicate.
    for d in 11..=13 {
        adjust(&admin, &p, "s1", d).await;
    }
    let live = nodes(ws.take_data("again", 3).await);
    let all: Vec<Value> = missed.into_iter().chain(live).collect();
    assert_contiguous(&all);
    let log = events(&admin, 14).await;
    assert_eq!(ids(&all), ids(&log[4..]));
    ws.assert_quiet("again", Duration::from_millis(300)).await;

    // From the start of the log, and a bad cursor.
    ws.subscribe("all", EVENTS, json!({ "after": "0-0" })).await;
    let everything = nodes(ws.take_data("all", 14).await);
    assert_eq!(ids(&everything), ids(&log));
    ws.subscribe("bad", EVENTS, json!({ "after": "x-y" })).await;
    match ws.item("bad", WAIT).await {
        Ok(Item::Next(result)) => {
            assert_eq!(result["errors"][0]["extensions"]["code"], "BAD_USER_INPUT")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_subscriber_still_gets_every_event_in_order() {
    const BATCHES: usize = 55;
    const LINES: usize = 100;
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "SLOW", 10_000_000).await;
    let mut ws = WsClient::open_small_buffer(&server.url, READ_KEY, 16 * 1024).await;
    let start = events(&admin, 1).await[0]["cursor"].clone();
    // Large messages (the payload eight times, ~6 KB) so that the kernel's socket buffers
    // hold only a few hundred events and the feed's channel overflows.
    let query = format!(
        "subscription($after: String) {{ inventoryEvents(after: $after) {{ id position type {} }} }}",
        (1..=8)
            .map(|i| format!("p{i}: payload"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    ws.subscribe("1", &query, json!({ "after": start })).await;
    wait_subscribed(&admin, 1).await;

    // Write 5,500 events (more than the 4,096 the feed buffers) while the subscriber does not
    // read, from several concurrent clients.
    let started = Instant::now();
    let lines: Vec<Value> = (0..LINES)
        .map(|_| json!({ "productId": p, "storeId": "s1", "quantity": 1 }))
        .collect();
    let mut writers = Vec::new();
    for w in 0..3 {
        let client = server.client(Some(WRITE_KEY));
        let lines = lines.clone();
        writers.push(tokio::spawn(async move {
            for _ in (w..BATCHES).step_by(3) {
                client.data(BATCH, json!({ "lines": lines })).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let total = BATCHES * LINES;
    eprintln!("wrote {total} events in {:?}", started.elapsed());

    // The relay may still be publishing: wait until the feed has forwarded everything, so the
    // channel has certainly overflowed before the subscriber reads again.
    settle(&admin, total + 1).await;
    eprintln!("settled after {:?}", started.elapsed());
    // Then read slowly.
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        got.push(ws.next_data("1").await["inventoryEvents"].clone());
        if got.len() % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("read {total} events after {:?}", started.elapsed());
    assert_contiguous(&got);
    assert_eq!(
        got[0]["position"].as_i64(),
        Some(2),
        "from the first new event"
    );
    assert!(got.iter().all(|e| e["type"] == "reservation.created"));
    ws.assert_quiet("1", Duration::from_millis(300)).await;
    let lagged = metric(&admin, "stockroom_feed_lagged_total").await;
    eprintln!("the subscriber lagged {lagged} times and was caught up from the log");
    assert!(lagged >= 1.0, "the test must exercise the catch-up path");
}

#[tokio::test]
async fn stock_level_changed_carries_the_new_level() {
    let server = Server::start();
    let admin = server.admin();
    let p = seed(&admin, "s1", "LEVEL", 10).await;
    create_store(&admin, "s2").await;
    init_stock(&admin, &p, "s2", 4, 1).await;
    published(&admin).await;
    let mut ws = WsClient::open(&server.url, READ_KEY).await;
    ws.subscribe("s1", LEVELS, json!({ "p": p, "s": "s1" }))
        .await;
    ws.subscribe("any", LEVELS, json!({})).await;
    wait_subscribed(&admin, 2).await;

    admin
        .data(RESERVE, json!({ "p": p, "s": "s1", "q": 3 }))
        .await;
    let level = ws.next_data("s1").await["stockLevelChanged"].clone();
    assert_eq!(level["quantity"], 10);
    assert_eq!(level["reserved"], 3);
    assert_eq!(level["available"], 7);
    let current = crate::common::level(&admin, &p, "s1").await;
    assert_eq!(level["version"], current["version"]);

    adjust(&admin, &p, "s1", 5).await;
    let level = ws.next_data("s1").await["stockLevelChanged"].clone();
    assert_eq!(
        (
            &level["quantity"],
            &level["reserved"],
            &level["available"],
            &level["version"]
        ),
        (
            &json!(15),
            &json!(3),
            &json!(12),
            &current["version"].as_i64().map(|v| v + 1).into()
        )
    );
    assert_eq!(level, {
        let mut now = crate::common::level(&admin, &p, "s1").await;
        now["productId"] = json!(p);
        now["storeId"] = json!("s1");
        now.as_object_mut().unwrap().remove("reorderPoint");
        now
    });

    // A transfer changes two levels: both reach the unfiltered subscriber, s2 never reaches s1.
    admin
        .data(
            "mutation($p: UUID!) { transferStock(input: {productId: $p, fromStoreId: \"s2\", toStoreId: \"s1\", quantity: 4}) { quantity } }",
            json!({ "p": p }),
        )
        .await;
    let mut any = Vec::new();
    while any.len() < 4 {
        any.push(ws.next_data("any").await["stockLevelChanged"].clone());
    }
    let last_two: Vec<(&str, i64)> = any[2..]
        .iter()
        .map(|l| {
            (
                l["storeId"].as_str().unwrap(),
                l["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(last_two.contains(&("s2", 0)) && last_two.contains(&("s1", 19)));
    let s2 = any[2..].iter().find(|l| l["storeId"] == "s2").unwrap();
    assert_eq!(s2["available"], 0);
    assert_eq!(s2["lowStock"], true);
    let s1 = ws.next_data("s1").await["stockLevelChanged"].clone();
    assert_eq!(
        (s1["quantity"].as_i64(), s1["available"].as_i64()),
        (Some(19), Some(16))
    );
    ws.assert_quiet("s1", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscriber_on_one_server_sees_writes_made_on_another() {
    let redis = RedisServer::start();
    cross_instance(Options::default().redis(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_on_one_server_sees_writes_made_on_another_through_rabbitmq() {
    let exchange = Exchange::declare().await;
    cross_instance(exchange.options(&broker_url())).await;
    exchange.delete().await;
}

/// Two servers on one database and one broker (`broker`): a subscriber on one sees, live and in
/// order, what the other writes, and resumes from a cursor.
async fn cross_instance(broker: Options) {
    let broker = broker.env(&[("STOCKROOM_RELAY_POLL_MS", "100")]);
    let mut a = Server::start_with(broker.clone());
    let _dir = a.take_dir();
    let b = Server::start_with(Options {
        database: Some(a.database.clone()),
        ..broker
    });
    let on_a = a.admin();
    let p = seed(&on_a, "s1", "CROSS", 100).await;

    published(&b.admin()).await;
    let mut ws = WsClient::open(&b.url, READ_KEY).await;
    ws.subscribe("events", EVENTS, UPDATES.clone()).await;
    ws.subscribe("levels", LEVELS, json!({ "p": p })).await;
    wait_subscribed(&b.admin(), 2).await;
    for d in [5, -3, 7] {
        adjust(&on_a, &p, "s1", d).await;
    }
    let got = nodes(ws.take_data("events", 3).await);
    let log = events(&on_a, 4).await;
    assert_eq!(ids(&got), ids(&log[1..]));
    assert_contiguous(&got);
    let mut levels = Vec::new();
    while levels.last() != Some(&109) {
        let level = ws.next_data("levels").await;
        levels.push(level["stockLevelChanged"]["quantity"].as_i64().unwrap());
    }
    assert_eq!(levels, [105, 102, 109]);
    // Resume on B from a cursor, while A keeps writing.
    let mut again = WsClient::open(&b.url, READ_KEY).await;
    again
        .subscribe("1", EVENTS, json!({ "after": got[0]["cursor"] }))
        .await;
    adjust(&on_a, &p, "s1", 1).await;
    let resumed = nodes(again.take_data("1", 3).await);
    assert_eq!(ids(&resumed[..2]), ids(&got[1..]));
    assert_eq!(resumed[2]["payload"]["change"], 1);
}
