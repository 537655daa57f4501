//! `slowloris`: a normal client's request latency on fresh connections while 1,100
//! connections from another address (127.0.0.2) hold a request head open and never finish it,
//! against a server whose open-files limit is 1,024. The baseline is the same client against
//! the same server with no attack, measured in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::report::Row;
use crate::scenarios::Context;
use crate::server::{BenchResult, Launch, Server};

/// Slow connections opened per run.
const SLOW_CONNECTIONS: usize = 1_100;
/// The server's open-files limit.
const OPEN_FILES: u64 = 1_024;

/// Sequential requests on fresh connections for `duration`: (p50, p99) in µs and failures.
async fn client_latency(
    base: &str,
    key: &str,
    duration: Duration,
) -> BenchResult<(f64, f64, usize)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({ "query": "{ health { database } }" });
    let mut samples = Vec::new();
    let mut failures = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        let ok = client
            .post(format!("{base}/graphql"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            samples.push(sent.elapsed().as_secs_f64() * 1e6);
        } else {
            failures += 1;
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((at(0.5), at(0.99), failures))
}

/// Runs the scenario: per run, the client alone, then the client under attack.
pub async fn slowloris(ctx: &Context) -> BenchResult<Vec<Row>> {
    let name = "slowloris";
    if ctx.external.is_some() {
        return Err("slowloris starts its own server (with a 1,024 open-files limit)".into());
    }
    eprintln!(
        "{name}: {SLOW_CONNECTIONS} slow connections, open files {OPEN_FILES}, {} runs × {:?}",
        ctx.runs, ctx.duration
    );
    raise_own_open_files_limit();
    let mut launch = Launch::new(&ctx.binary, &ctx.scratch.join("slowloris.db"));
    launch.open_files = Some(OPEN_FILES);
    let server = Server::start(&launch).await?;
    let address: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("server address: {e}"))?;
    let (mut p99_attack, mut p99_alone, mut p50_attack, mut p50_alone) =
        (vec![], vec![], vec![], vec![]);
    let mut failures = 0;
    for run in 1..=ctx.runs {
        let (p50, p99, failed) = client_latency(&server.base, &server.key, ctx.duration).await?;
        eprintln!("  run {run} alone    p50 {p50:>8.0} µs  p99 {p99:>8.0} µs  ({failed} failed)");
        p50_alone.push(p50);
        p99_alone.push(p99);
        let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
        for _ in 0..SLOW_CONNECTIONS {
            if let Some(stream) = stockroom_harness::slow_connection(address).await {
                slow.push(stream);
            }
        }
        let (p50, p99, failed) = client_latency(&server.base, &server.key, ctx.duration).await?;
        eprintln!(
            "  run {run} attacked p50 {p50:>8.0} µs  p99 {p99:>8.0} µs  ({failed} failed, {} slow connections open)",
            slow.len()
        );
        failures += failed;
        p50_attack.push(p50);
        p99_attack.push(p99);
        drop(slow);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.stop().await;
    Ok(vec![
        Row::latency(
            name,
            "client p50 under attack (baseline: no attack)",
            p50_attack,
            p50_alone,
        ),
        Row::latency(
            name,
            "client p99 under attack (baseline: no attack)",
            p99_attack,
            p99_alone,
        ),
        Row::figure(
            name,
            "client requests failed under attack",
            "requests",
            failures as f64,
        ),
    ])
}

/// The bench holds more sockets than a default soft limit allows.
fn raise_own_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
