//! The server side of a run: writers at the target rate and the subscribers reading.

use super::*;

/// One server run: open the subscriptions, write for the run's duration, drain, close.
pub(super) async fn server_run(
    ctx: &Context,
    server: &Server,
    gql: &Gql,
    http: &reqwest::Client,
    skus: &[Sku],
) -> BenchResult<FanoutRun> {
    let n = ctx.subscribers;
    let open_before = metric(http, server, "stockroom_subscriptions_open").await?;
    let after = settled_position(http, server).await?;
    let ws_url = stockroom_harness::ws_url(&server.base);
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
pub(super) async fn write(gql: &Gql, skus: &[Sku], rate: u64, duration: Duration) -> (u64, u64) {
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
