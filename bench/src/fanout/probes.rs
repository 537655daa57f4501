//! Readings off the running server: `/metrics` values, the settled feed position, `/proc` memory, the open-files limit.

use super::*;

/// The sum of the Prometheus samples of `name` (0 when absent).
pub(super) async fn metric(
    http: &reqwest::Client,
    server: &Server,
    name: &str,
) -> BenchResult<f64> {
    let response = http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET /metrics: HTTP {status}"));
    }
    let text = response
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    Ok(stockroom_harness::metric_sum(&text, name))
}

/// The feed's position once it has stopped moving (earlier writes, such as the warm-up, all
/// published), so that every event above it belongs to the coming run.
pub(super) async fn settled_position(http: &reqwest::Client, server: &Server) -> BenchResult<u64> {
    let started = Instant::now();
    let mut position = metric(http, server, "stockroom_feed_position").await?;
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(300) && started.elapsed() < OPEN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = metric(http, server, "stockroom_feed_position").await?;
        if now != position {
            position = now;
            still = Instant::now();
        }
    }
    Ok(position as u64)
}

/// `(VmRSS, VmHWM)` of a process in KiB, from `/proc/PID/status`.
pub(crate) fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Fails early when this process may not open the baseline's descriptors: it holds both ends
/// of every connection.
pub(super) fn check_open_files(subscribers: usize) -> BenchResult<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    let needed = 2 * subscribers as u64 + 256;
    match soft {
        Some(limit) if limit < needed => Err(format!(
            "{subscribers} subscribers need about {needed} open files here (the baseline holds \
             both ends of each connection), the limit is {limit}: raise it (ulimit -n) or pass \
             fewer --subscribers"
        )),
        _ => Ok(()),
    }
}
