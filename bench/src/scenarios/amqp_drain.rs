//! `relay-drain-amqp`: a backlog in the outbox, the server started with `--amqp-url` on a fresh
//! exchange, timed until a queue bound to it holds every event; beside a raw publisher that
//! sends the same messages in batches of 1,000 with publisher confirms (the relay's discipline),
//! on the same RabbitMQ in the same run.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::*;
use crate::baseline::EventRow;
use uuid::Uuid;

/// Events per confirmed batch in the baseline (the relay's default `--relay-batch`).
const BATCH: usize = 1000;

/// `relay-drain-amqp` (RabbitMQ at `ctx.amqp`).
pub async fn relay_drain_amqp(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "relay-drain-amqp";
    if ctx.external.is_some() {
        eprintln!("{name}: skipped (needs a server the bench starts)");
        return Ok(Vec::new());
    }
    eprintln!("{name}: {} events, {} runs", ctx.events, ctx.runs);
    let connection = Connection::connect(&ctx.amqp, ConnectionProperties::default())
        .await
        .map_err(|e| format!("RabbitMQ at {}: {e}", ctx.amqp))?;
    let channel = connection.create_channel().await.map_err(text)?;
    let events = Arc::new(baseline::make_events(ctx.events));
    let (mut server_rates, mut baseline_rates) = (Vec::new(), Vec::new());
    let n = ctx.events as f64;
    for run in 1..=ctx.runs {
        let db = ctx.db(&format!("drain-amqp-{run}"));
        baseline::migrate(&ctx.binary, &db).await?;
        let (path, ev) = (db.clone(), events.clone());
        tokio::task::spawn_blocking(move || baseline::insert_backlog(&path, &ev))
            .await
            .map_err(|e| e.to_string())??;
        let exchange = format!("bench-drain-{}", Uuid::now_v7().simple());
        let queue = counting_queue(&channel, &exchange).await?;
        let mut launch = Launch::new(&ctx.binary, &db);
        launch.env = vec![
            ("AMQP_URL".to_owned(), ctx.amqp.clone()),
            ("STOCKROOM_AMQP_EXCHANGE".to_owned(), exchange.clone()),
        ];
        let server = Server::start(&launch).await?;
        let elapsed = wait_for_messages(&channel, &queue, ctx.events).await;
        let elapsed = elapsed.map(|()| server.spawned_at.elapsed());
        server.stop().await;
        let elapsed = elapsed?;
        let rate = n / elapsed.as_secs_f64();
        eprintln!("  run {run} server   {rate:>10.0} events/s ({elapsed:.2?} from process start)");
        server_rates.push(rate);
        delete(&channel, &exchange, &queue).await?;

        let raw_exchange = format!("bench-raw-{}", Uuid::now_v7().simple());
        let raw_queue = counting_queue(&channel, &raw_exchange).await?;
        let publisher = connection.create_channel().await.map_err(text)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(text)?;
        let started = Instant::now();
        publish_confirmed(&publisher, &raw_exchange, &events).await?;
        let took = started.elapsed();
        wait_for_messages(&channel, &raw_queue, ctx.events).await?;
        let raw_rate = n / took.as_secs_f64();
        eprintln!("  run {run} baseline {raw_rate:>10.0} events/s ({took:.2?})");
        baseline_rates.push(raw_rate);
        delete(&channel, &raw_exchange, &raw_queue).await?;
        let _ = std::fs::remove_file(&db);
    }
    Ok(vec![Row::throughput(
        name,
        "events/s",
        server_rates,
        baseline_rates,
    )])
}

fn text(error: lapin::Error) -> String {
    format!("RabbitMQ: {error}")
}

/// Declares `exchange` (durable topic, as the server does) and a queue bound to `inventory.#`
/// that counts what arrives.
async fn counting_queue(channel: &Channel, exchange: &str) -> BenchResult<String> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(text)?;
    let queue = format!("{exchange}.count");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(text)?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "inventory.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(text)?;
    Ok(queue)
}

/// Waits (up to 180 s) until `queue` holds `count` messages.
async fn wait_for_messages(channel: &Channel, queue: &str, count: usize) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    loop {
        let state = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .map_err(text)?;
        if state.message_count() as usize >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{queue} holds {} of {count} messages after 180 s",
                state.message_count()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn delete(channel: &Channel, exchange: &str, queue: &str) -> BenchResult<()> {
    // The server's top marker queue (`<exchange>.top`) too; the baseline has none.
    for queue in [queue.to_owned(), format!("{exchange}.top")] {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .map_err(text)?;
    }
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
        .map_err(text)?;
    Ok(())
}

/// The raw publisher: the server's message for each event, a batch at a time, each batch's
/// confirms awaited before the next.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    events: &[EventRow],
) -> BenchResult<()> {
    for (batch_index, batch) in events.chunks(BATCH).enumerate() {
        let mut confirms = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            let position = (batch_index * BATCH + i + 1) as i64;
            // The payload goes in as the JSON text it is, as the server sends it.
            let body = format!(
                r#"{{"id":"{}","cursor":"{position}-0","type":"reservation.created","aggregate_type":"reservation","aggregate_id":"{}","store_id":"{}","product_id":"{}","payload":{},"occurred_at":"{}"}}"#,
                e.id, e.aggregate_id, e.store_id, e.product_id, e.payload, e.occurred_at
            );
            let mut headers = FieldTable::default();
            headers.insert("position".into(), AMQPValue::LongLongInt(position));
            headers.insert(
                "cursor".into(),
                AMQPValue::LongString(format!("{position}-0").into()),
            );
            let properties = BasicProperties::default()
                .with_message_id(e.id.to_string().into())
                .with_type("reservation.created".into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    "inventory.reservation.created".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body.as_bytes(),
                    properties,
                )
                .await
                .map_err(text)?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            if !confirm.await.map_err(text)?.is_ack() {
                return Err("RabbitMQ did not ack a baseline message".into());
            }
        }
    }
    Ok(())
}
