//! `fanout-isolation`: hot-reserve throughput while `--subscribers` subscriptions are open whose
//! filters match none of the writes (they watch another store), against the same server with
//! none open; runs alternate, so noise hits both alike. The ratio is watched / unwatched.

use super::*;
use crate::scenarios::{print_run as print_load, reserve_run};

/// What every idle subscriber watches: a store nobody writes to.
const ELSEWHERE: &str =
    "subscription { inventoryEvents(filter: {storeId: \"elsewhere\"}) { position } }";

/// `fanout-isolation`.
pub async fn isolation(ctx: &Context) -> BenchResult<Vec<Row>> {
    const NAME: &str = "fanout-isolation";
    let n = ctx.subscribers;
    eprintln!(
        "{NAME}: hot-reserve, {} clients, with and without {n} subscriptions elsewhere, {} runs × {:?}",
        ctx.clients, ctx.runs, ctx.duration
    );
    let (server, skus) = fanout_server(ctx, "fanout-isolation-server", 1).await?;
    let outcome = measure_both(ctx, &server, skus).await;
    server.stop().await;
    let (watched, quiet) = outcome?;
    Ok(vec![Row::rate(
        NAME,
        "hot-reserve with subscriptions elsewhere / without",
        "ops/s",
        watched,
        quiet,
    )])
}

async fn measure_both(
    ctx: &Context,
    server: &Server,
    skus: Vec<Sku>,
) -> BenchResult<(Vec<f64>, Vec<f64>)> {
    let skus = Arc::new(skus);
    let gql = server.client(ctx.clients)?;
    let http = http_client()?;
    reserve_run(&gql, &skus, ctx.clients, true, Duration::from_millis(500)).await;
    let ws_url = stockroom_harness::ws_url(&server.base);
    let (mut watched, mut quiet) = (Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        let q = reserve_run(&gql, &skus, ctx.clients, true, ctx.duration).await;
        print_load("without", run, &q, "ops/s");
        quiet.push(q.ops_per_sec);

        let sockets = open_all(ctx.subscribers, |_| {
            subscribe_to(ws_url.clone(), server.key.clone(), ELSEWHERE)
        })
        .await?;
        let audience = Audience::listen(sockets, 0);
        let opened = Instant::now();
        while metric(&http, server, "stockroom_subscriptions_open").await? < ctx.subscribers as f64
        {
            if opened.elapsed() > OPEN_TIMEOUT {
                return Err("the idle subscriptions did not open".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let w = reserve_run(&gql, &skus, ctx.clients, true, ctx.duration).await;
        print_load("with", run, &w, "ops/s");
        watched.push(w.ops_per_sec);
        let received = audience.finish().await?;
        let delivered: u64 = received.iter().map(|r| r.events).sum();
        if delivered > 0 {
            return Err(format!(
                "{delivered} events reached subscribers that match none"
            ));
        }
        while metric(&http, server, "stockroom_subscriptions_open").await? > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((watched, quiet))
}
