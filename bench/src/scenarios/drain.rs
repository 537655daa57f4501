//! `relay-drain`: a backlog in the outbox, the server started against a fresh stream, timed
//! until the stream holds all of it, beside raw pipelined `XADD`. With `--postgres`, the
//! outbox is a fresh PostgreSQL database per run.

use super::*;

/// `relay-drain`: a backlog of unpublished events in the outbox, a fresh Redis, and the time
/// until the stream holds them all, beside raw pipelined XADD of the same entries.
pub async fn relay_drain(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "relay-drain";
    if ctx.external.is_some() {
        eprintln!("{name}: skipped (needs a server the bench starts)");
        return Ok(Vec::new());
    }
    eprintln!("{name}: {} events, {} runs", ctx.events, ctx.runs);
    let redis = RedisServer::start(&ctx.redis_binary).await?;
    let mut conn = redis.connect().await?;
    let events = Arc::new(baseline::make_events(ctx.events));
    let mut server_rates = Vec::new();
    let mut baseline_rates = Vec::new();
    let n = ctx.events as f64;
    for run in 1..=ctx.runs {
        let db = ctx.db(&format!("drain-{run}"));
        let postgres = match &ctx.postgres {
            Some(url) => {
                let database =
                    crate::pg::Database::create(url, &format!("drain_{run}"), &ctx.binary).await?;
                crate::pg::insert_backlog(&database.url, &events).await?;
                Some(database)
            }
            None => {
                baseline::migrate(&ctx.binary, &db).await?;
                let (path, ev) = (db.clone(), events.clone());
                tokio::task::spawn_blocking(move || baseline::insert_backlog(&path, &ev))
                    .await
                    .map_err(|e| e.to_string())??;
                None
            }
        };
        let stream = format!("bench-drain-{run}");
        let mut launch = Launch::new(&ctx.binary, &db);
        launch.database_url = postgres.as_ref().map(|database| database.url.clone());
        launch.redis_url = Some(redis.url.clone());
        launch.stream = Some(stream.clone());
        let server = Server::start(&launch).await?;
        let deadline = Instant::now() + Duration::from_secs(180);
        let elapsed = loop {
            let len = redis_util::xlen(&mut conn, &stream).await?;
            if len >= ctx.events as u64 {
                break server.spawned_at.elapsed();
            }
            if Instant::now() > deadline {
                server.stop().await;
                return Err(format!(
                    "relay drained only {len} of {} events in 180 s",
                    ctx.events
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        server.stop().await;
        if let Some(database) = postgres {
            database.drop_now().await;
        }
        let rate = n / elapsed.as_secs_f64();
        eprintln!("  run {run} server   {rate:>10.0} events/s ({elapsed:.2?} from process start)");
        server_rates.push(rate);
        let raw_key = format!("bench-raw-{run}");
        let took = redis_util::raw_xadd(&mut conn, &raw_key, &events, 1000, 1_000_000).await?;
        let raw_len = redis_util::xlen(&mut conn, &raw_key).await?;
        if raw_len != ctx.events as u64 {
            return Err(format!("raw XADD stream holds {raw_len} entries"));
        }
        let raw_rate = n / took.as_secs_f64();
        eprintln!("  run {run} baseline {raw_rate:>10.0} events/s ({took:.2?})");
        baseline_rates.push(raw_rate);
        redis_util::del(&mut conn, &stream).await?;
        redis_util::del(&mut conn, &raw_key).await?;
        let _ = std::fs::remove_file(&db);
    }
    let name = match ctx.postgres {
        Some(_) => "relay-drain-pg",
        None => name,
    };
    Ok(vec![Row::throughput(
        name,
        "events/s",
        server_rates,
        baseline_rates,
    )])
}
