//! Closed-loop load: N workers each repeat an operation until a deadline; throughput and latency
//! percentiles over the successful operations; medians over runs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One timed run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

impl RunStats {
    /// Builds the figures from latencies (µs) of successes, the error count and the wall time.
    pub fn from_latencies(mut latencies: Vec<u32>, errors: u64, elapsed: Duration) -> RunStats {
        latencies.sort_unstable();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        RunStats {
            ops_per_sec: latencies.len() as f64 / seconds,
            p50_us: percentile(&latencies, 0.50),
            p99_us: percentile(&latencies, 0.99),
            ok: latencies.len() as u64,
            errors,
            seconds,
        }
    }
}

/// The `q` quantile of sorted samples (nearest rank), 0 when empty.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

/// The median of some values (mean of the middle two when even), 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Runs `op(worker, iteration)` from `workers` concurrent tasks for `duration`. Each worker keeps
/// one operation in flight (closed loop); an error counts and the worker carries on.
pub async fn run_async<F, Fut>(workers: usize, duration: Duration, op: F) -> RunStats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(worker, i).await {
                    Ok(()) => latencies.push(micros(t.elapsed())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += 1;
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, e, first)) = task.await {
            all.extend(latencies);
            errors += e;
            if let Some(first) = first {
                eprintln!("  worker error (first of its worker): {first}");
            }
        }
    }
    RunStats::from_latencies(all, errors, start.elapsed())
}

/// Latency in whole microseconds, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
