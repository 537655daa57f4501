//! `data-scale`: whether queries stay flat as the data grows. For each database (SQLite, and
//! PostgreSQL with `--postgres`), a small data set (S) and a large one (M, or L with
//! `--scale-size l`) are written with plain SQL through the service's schema
//! (`stockroom_harness::seed`), a server is started on each, and every list query and filter,
//! the stats, lookups by key and the outbox gauges are timed: one client, sequential requests,
//! 20 warm-up requests then `--samples` timed ones per operation, `--runs` passes. The table
//! gives each operation's p50 and p99 (medians over the passes) at both sizes side by side.
//!
//! With `--old-server-bin` (a build from before migration 8), it also times the upgrade: the
//! large set is written under the old build's schema, then `stockroom migrate` of this build
//! runs on it.

mod operations;
mod target;

use std::time::Instant;

use stockroom_harness::seed::Size;

use crate::load::median;
use crate::report::Row;
use crate::scenarios::Context;
use crate::server::{BenchResult, Server};
use operations::{ALL, Operation};
use target::{Backend, Target};

/// Requests per operation before timing starts.
const WARM_UP: u64 = 20;

/// p50 and p99 of one operation at one size, one value per pass, in milliseconds.
#[derive(Default, Clone)]
struct Figures {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Runs the scenario on every database asked for.
pub async fn data_scale(ctx: &Context) -> BenchResult<Vec<Row>> {
    let mut backends = vec![Backend::Sqlite];
    if ctx.postgres.is_some() {
        backends.push(Backend::Postgres);
    }
    let mut rows = Vec::new();
    for backend in backends {
        let mut sizes = Vec::new();
        for (label, size) in [("S", Size::SMALL), (ctx.scale_label(), ctx.scale_size())] {
            let (figures, setup) = measure(ctx, backend, label, size).await?;
            rows.extend(setup);
            sizes.push((label, figures));
        }
        print_table(backend, &sizes);
        for (label, figures) in &sizes {
            for (op, f) in ALL.iter().zip(figures) {
                let scenario = format!("data-scale {} {label}", backend.name());
                rows.push(Row::server_only(
                    &scenario,
                    &format!("{} p50", op.name),
                    "ms",
                    f.p50.clone(),
                ));
                rows.push(Row::server_only(
                    &scenario,
                    &format!("{} p99", op.name),
                    "ms",
                    f.p99.clone(),
                ));
            }
        }
        if let Some(old) = &ctx.old_binary {
            let seconds = target::upgrade_seconds(ctx, backend, old).await?;
            let scenario = format!("data-scale {}", backend.name());
            let metric = format!("migrations 8-11 on {}", ctx.scale_label());
            eprintln!("{scenario}: {metric}: {seconds:.1} s");
            rows.push(Row::figure(&scenario, &metric, "s", seconds));
        }
    }
    Ok(rows)
}

/// Seeds one data set, starts a server on it and times every operation.
async fn measure(
    ctx: &Context,
    backend: Backend,
    label: &str,
    size: Size,
) -> BenchResult<(Vec<Figures>, Vec<Row>)> {
    let scenario = format!("data-scale {} {label}", backend.name());
    let seeding = Instant::now();
    let target = Target::seeded(ctx, backend, label, size, true).await?;
    let seeded = seeding.elapsed().as_secs_f64();
    eprintln!("{scenario}: seeded {size:?} in {seeded:.1} s");
    let server = Server::start(&target.launch(ctx)).await?;
    let start_up = server.spawned_at.elapsed().as_secs_f64() * 1000.0;
    let gql = server.client(1)?;
    let mut figures = vec![Figures::default(); ALL.len()];
    for pass in 0..ctx.runs {
        for (op, f) in ALL.iter().zip(figures.iter_mut()) {
            let (p50, p99) = time(&gql, op, size, ctx.samples as u64).await?;
            f.p50.push(p50);
            f.p99.push(p99);
        }
        eprintln!("{scenario}: pass {} of {} done", pass + 1, ctx.runs);
    }
    server.stop().await;
    target.remove().await;
    let setup = vec![
        Row::figure(&scenario, "seeding", "s", seeded),
        Row::figure(&scenario, "start-up to listening", "ms", start_up),
    ];
    Ok((figures, setup))
}

/// Warms `op` up, then times `samples` sequential requests: (p50, p99) in milliseconds.
async fn time(
    gql: &crate::server::Gql,
    op: &Operation,
    size: Size,
    samples: u64,
) -> BenchResult<(f64, f64)> {
    let mut latencies = Vec::with_capacity(samples as usize);
    for k in 0..WARM_UP + samples {
        let variables = (op.variables)(k, size);
        let started = Instant::now();
        gql.run(op.query, variables)
            .await
            .map_err(|e| format!("{}: {e}", op.name))?;
        if k >= WARM_UP {
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}

/// Both sizes side by side: p50 and p99 (ms, medians over passes) and the p50 ratio.
fn print_table(backend: Backend, sizes: &[(&str, Vec<Figures>)]) {
    let [(small, s), (large, l)] = sizes else {
        return;
    };
    println!(
        "\ndata-scale on {}: p50 / p99 ms, medians of the passes\n",
        backend.name()
    );
    println!(
        "| operation | {small} p50 | {small} p99 | {large} p50 | {large} p99 | {large}/{small} p50 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for ((op, s), l) in ALL.iter().zip(s).zip(l) {
        let (sp50, lp50) = (median(&s.p50), median(&l.p50));
        println!(
            "| `{}` | {sp50:.2} | {:.2} | {lp50:.2} | {:.2} | {:.2}× |",
            op.name,
            median(&s.p99),
            median(&l.p99),
            lp50 / sp50
        );
    }
}
