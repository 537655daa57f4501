//! `fanout-capacity`: the highest write rate at which every one of `--subscribers` subscribers
//! receives every event with p99 commit → receive at most 100 ms, found by stepping the rate up
//! until a step fails; the same search for the raw broadcaster, in the same run. Each step is a
//! whole `fanout` run of `--seconds`.

use super::*;

/// The rates tried, in order, events per second.
const STEPS: [u64; 16] = [
    100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1700, 2000, 2500, 3000,
];
/// The latency a step must hold at p99, µs.
const P99_LIMIT_US: f64 = 100_000.0;

/// True when a run at `rate` held: the writes kept up, every subscriber got every event once,
/// and p99 stayed within the limit.
fn held(run: &FanoutRun, rate: u64) -> bool {
    run.missing == 0
        && run.repeated == 0
        && run.write_errors == 0
        && run.write_rate >= KEPT_UP * rate as f64
        && run.p99_us <= P99_LIMIT_US
}

/// The scenario's settings at `rate`.
fn at_rate(ctx: &Context, rate: u64) -> Context {
    Context {
        rate,
        ..ctx.clone()
    }
}

/// Prints a step of `side` and says whether it held.
fn held_at(side: &str, run: usize, rate: u64, step: &FanoutRun) -> bool {
    print_run(&format!("{side} {rate}/s"), run, step);
    held(step, rate)
}

/// `fanout-capacity`: each run searches the server's capacity, then the broadcaster's.
pub async fn capacity(ctx: &Context) -> BenchResult<Vec<Row>> {
    const NAME: &str = "fanout-capacity";
    eprintln!(
        "{NAME}: {} subscribers, p99 ≤ {} ms, steps of {:?}, {} runs",
        ctx.subscribers,
        P99_LIMIT_US / 1000.0,
        ctx.duration,
        ctx.runs
    );
    let (server, skus) = fanout_server(ctx, "fanout-capacity-server", WRITERS).await?;
    let outcome = search_both(ctx, &server, &skus).await;
    server.stop().await;
    let (servers, baselines) = outcome?;
    Ok(vec![Row::rate(
        NAME,
        "capacity at p99 ≤ 100 ms",
        "events/s",
        servers,
        baselines,
    )])
}

async fn search_both(
    ctx: &Context,
    server: &Server,
    skus: &[Sku],
) -> BenchResult<(Vec<f64>, Vec<f64>)> {
    let gql = server.client(WRITERS)?;
    let http = http_client()?;
    write(&gql, skus, 100, Duration::from_millis(300)).await;
    let (mut servers, mut baselines) = (Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        let mut found = 0;
        for rate in STEPS {
            let at = at_rate(ctx, rate);
            let step = server_run(&at, server, &gql, &http, skus).await?;
            if !held_at("server", run, rate, &step) {
                break;
            }
            found = rate;
        }
        eprintln!("  run {run} server capacity {found} events/s");
        servers.push(found as f64);
        let mut found = 0;
        for rate in STEPS {
            let step = baseline_run(&at_rate(ctx, rate), rate as f64).await?;
            if !held_at("baseline", run, rate, &step) {
                break;
            }
            found = rate;
        }
        eprintln!("  run {run} baseline capacity {found} events/s");
        baselines.push(found as f64);
    }
    Ok((servers, baselines))
}
