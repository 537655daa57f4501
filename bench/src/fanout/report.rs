//! Summaries of runs, the printed lines and the report rows.

use super::*;

/// The run's figures from what every subscriber saw.
pub(super) fn summarize(
    received: Vec<Received>,
    written: u64,
    write_secs: f64,
    started: Instant,
) -> FanoutRun {
    let mut latencies = Vec::new();
    let mut delivered = 0;
    let mut missing = 0;
    let mut repeated = 0;
    let mut complete = 0;
    let mut min_received = u64::MAX;
    let mut last_at = None::<Instant>;
    let mut frame_bytes = 0;
    let mut first_error = None;
    let mut broken = 0;
    for r in received {
        delivered += r.events;
        missing += written.saturating_sub(r.events);
        repeated += r.repeated;
        complete += usize::from(r.events >= written);
        min_received = min_received.min(r.events);
        last_at = last_at.max(r.last_at);
        frame_bytes = frame_bytes.max(r.frame_bytes);
        if let Some(e) = r.error {
            broken += 1;
            first_error.get_or_insert(e);
        }
        latencies.extend(r.latencies);
    }
    if let Some(e) = first_error {
        eprintln!("  {broken} subscriber connection(s) ended early, first: {e}");
    }
    latencies.sort_unstable();
    let window = last_at.map_or(0.0, |at| at.duration_since(started).as_secs_f64());
    FanoutRun {
        written,
        write_rate: written as f64 / write_secs.max(1e-9),
        delivered,
        delivered_rate: if window > 0.0 {
            delivered as f64 / window
        } else {
            0.0
        },
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().map_or(0.0, f64::from),
        min_received: if min_received == u64::MAX {
            0
        } else {
            min_received
        },
        complete,
        missing,
        repeated,
        write_errors: 0,
        frame_bytes,
        memory: None,
    }
}

pub(super) fn print_run(label: &str, run: usize, r: &FanoutRun) {
    let memory = r.memory.map_or(String::new(), |m| {
        format!(
            "  RSS {:.0} → peak {:.0} MiB (HWM {:.0})",
            mib(m.subscribed),
            mib(m.peak),
            mib(m.hwm)
        )
    });
    eprintln!(
        "  run {run} {label:<8} {:>9.0} msgs/s ({} delivered)  {} events at {:.0}/s  \
         p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  fewest/subscriber {}  complete {}  \
         missing {}  repeated {}  failed writes {}  frame {} B{memory}",
        r.delivered_rate,
        r.delivered,
        r.written,
        r.write_rate,
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.max_us / 1000.0,
        r.min_received,
        r.complete,
        r.missing,
        r.repeated,
        r.write_errors,
        r.frame_bytes,
    );
}

pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table rows: medians over runs. Rates against the baseline at `--rate`, latencies against
/// the baseline at the server's achieved rate.
pub(super) fn rows(runs: &Runs) -> Vec<Row> {
    let (server, baseline) = (&runs.server, &runs.baseline);
    let matched = &runs.latency_baseline();
    let pick =
        |runs: &[FanoutRun], f: fn(&FanoutRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        Row::throughput(
            NAME,
            "msgs/s",
            pick(server, |r| r.delivered_rate),
            pick(baseline, |r| r.delivered_rate),
        ),
        Row::rate(
            NAME,
            "write rate",
            "events/s",
            pick(server, |r| r.write_rate),
            pick(baseline, |r| r.write_rate),
        ),
    ];
    for (metric, f) in [
        ("p50", (|r: &FanoutRun| r.p50_us) as fn(&FanoutRun) -> f64),
        ("p99", |r| r.p99_us),
        ("max", |r| r.max_us),
    ] {
        rows.push(Row::latency_vs_baseline(
            NAME,
            metric,
            pick(server, f),
            pick(matched, f),
        ));
    }
    rows.push(Row::pair(
        NAME,
        "latency baseline rate",
        "events/s",
        pick(server, |r| r.write_rate),
        pick(matched, |r| r.write_rate),
    ));
    rows.push(Row::pair(
        NAME,
        "events written",
        "events",
        pick(server, |r| r.written as f64),
        pick(baseline, |r| r.written as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "min received per subscriber",
        "events",
        pick(server, |r| r.min_received as f64),
        pick(baseline, |r| r.min_received as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "errors: missing deliveries",
        "msgs",
        pick(server, |r| (r.missing + r.repeated) as f64),
        baseline
            .iter()
            .zip(&runs.matched)
            .map(|(b, m)| {
                let m = m.as_ref().map_or(0, |m| m.missing + m.repeated);
                (b.missing + b.repeated + m) as f64
            })
            .collect(),
    ));
    rows.push(Row::server_only(
        NAME,
        "errors: failed writes",
        "writes",
        pick(server, |r| r.write_errors as f64),
    ));
    rows.push(Row::pair(
        NAME,
        "frame size",
        "bytes",
        pick(server, |r| r.frame_bytes as f64),
        pick(baseline, |r| r.frame_bytes as f64),
    ));
    let memory: Option<Vec<Memory>> = server.iter().map(|r| r.memory).collect();
    if let Some(memory) = memory.filter(|m| !m.is_empty()) {
        let of = |f: fn(&Memory) -> u64| memory.iter().map(|m| mib(f(m))).collect::<Vec<_>>();
        rows.push(Row::server_only(
            NAME,
            "server VmRSS, subscribed",
            "MiB",
            of(|m| m.subscribed),
        ));
        rows.push(Row::server_only(
            NAME,
            "server VmRSS, peak",
            "MiB",
            of(|m| m.peak),
        ));
        rows.push(Row::server_only(NAME, "server VmHWM", "MiB", of(|m| m.hwm)));
    }
    rows
}
