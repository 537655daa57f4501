//! Results: the printed table, the JSON file and a hand-drawn SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::median;

/// One measured figure: server and baseline medians over runs, plus every run's value.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name (`hot-reserve`, …).
    pub scenario: String,
    /// What is measured (`throughput`, `p50`, `p99`, `sql statements`).
    pub metric: String,
    /// Unit (`ops/s`, `µs`, …).
    pub unit: String,
    /// Median of the server runs.
    pub server: f64,
    /// Median of the baseline runs, when there is a baseline.
    pub baseline: Option<f64>,
    /// `server / baseline` for throughputs; `baseline / server` for the latencies that carry a
    /// ratio (fanout). Either way above 1 means the server is ahead.
    pub ratio: Option<f64>,
    /// How `ratio` is formed: `server/baseline` or `baseline/server`.
    pub ratio_of: Option<&'static str>,
    /// Each server run.
    pub server_runs: Vec<f64>,
    /// Each baseline run.
    pub baseline_runs: Vec<f64>,
}

impl Row {
    /// A throughput row: medians and the ratio server / baseline.
    pub fn throughput(scenario: &str, unit: &str, server: Vec<f64>, baseline: Vec<f64>) -> Row {
        Row::rate(scenario, "throughput", unit, server, baseline)
    }

    /// A rate other than the scenario's headline throughput (so the chart leaves it out):
    /// medians and the ratio server / baseline.
    pub fn rate(
        scenario: &str,
        metric: &str,
        unit: &str,
        server: Vec<f64>,
        baseline: Vec<f64>,
    ) -> Row {
        let mut row = Row::pair(scenario, metric, unit, server, baseline);
        let (s, b) = (row.server, row.baseline.unwrap_or(0.0));
        row.ratio = (b > 0.0).then(|| s / b);
        row.ratio_of = row.ratio.map(|_| "server/baseline");
        row
    }

    /// A latency row (no ratio).
    pub fn latency(scenario: &str, metric: &str, server: Vec<f64>, baseline: Vec<f64>) -> Row {
        Row::pair(scenario, metric, "µs", server, baseline)
    }

    /// A latency row with the ratio baseline / server (above 1: the server is faster).
    pub fn latency_vs_baseline(
        scenario: &str,
        metric: &str,
        server: Vec<f64>,
        baseline: Vec<f64>,
    ) -> Row {
        let mut row = Row::latency(scenario, metric, server, baseline);
        let (s, b) = (row.server, row.baseline.unwrap_or(0.0));
        row.ratio = (s > 0.0 && b > 0.0).then(|| b / s);
        row.ratio_of = row.ratio.map(|_| "baseline/server");
        row
    }

    /// Server and baseline medians side by side, without a ratio (counts, errors).
    pub fn pair(
        scenario: &str,
        metric: &str,
        unit: &str,
        server: Vec<f64>,
        baseline: Vec<f64>,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            unit: unit.into(),
            server: median(&server),
            baseline: (!baseline.is_empty()).then(|| median(&baseline)),
            ratio: None,
            ratio_of: None,
            server_runs: server,
            baseline_runs: baseline,
        }
    }

    /// The server's median over runs, with no baseline (e.g. its memory).
    pub fn server_only(scenario: &str, metric: &str, unit: &str, server: Vec<f64>) -> Row {
        Row::pair(scenario, metric, unit, server, Vec::new())
    }

    /// A single figure without baseline.
    pub fn figure(scenario: &str, metric: &str, unit: &str, value: f64) -> Row {
        Row::server_only(scenario, metric, unit, vec![value])
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table as text (also what the README quotes).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<16} | {:<38} | {:>15} | {:>17} | {:>7} |",
        "scenario", "metric", "server (median)", "baseline (median)", "ratio"
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|{}|",
        "-".repeat(18),
        "-".repeat(40),
        "-".repeat(17),
        "-".repeat(19),
        "-".repeat(9)
    );
    for r in rows {
        let metric = match r.ratio_of {
            Some(how @ "baseline/server") => format!("{} ({}; ratio {how})", r.metric, r.unit),
            _ => format!("{} ({})", r.metric, r.unit),
        };
        let _ = writeln!(
            out,
            "| {:<16} | {:<38} | {:>15} | {:>17} | {:>7} |",
            r.scenario,
            metric,
            num(r.server),
            r.baseline.map(num).unwrap_or_else(|| "-".into()),
            r.ratio
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    if rows.iter().any(|r| r.ratio_of == Some("baseline/server")) {
        let _ = writeln!(
            out,
            "\nratio: server/baseline for rates, baseline/server where the metric says so \
             (latencies); above 1 means the server is ahead"
        );
    }
    out
}

/// Writes `results.json` (settings, rows, the table) into `dir`.
pub fn write_json(dir: &Path, settings: &serde_json::Value, rows: &[Row]) -> std::io::Result<()> {
    let doc = serde_json::json!({ "settings": settings, "rows": rows });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), text)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const SERVER_COLOR: &str = "#3b6fd4";
const BASELINE_COLOR: &str = "#9aa3ad";

/// Writes `chart.svg` into `dir`: throughput bars (server beside baseline, scaled per scenario,
/// with the ratio) and latency percentile bars (log scale).
pub fn write_svg(dir: &Path, rows: &[Row]) -> std::io::Result<()> {
    let throughputs: Vec<&Row> = rows.iter().filter(|r| r.metric == "throughput").collect();
    let latencies: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "p50" || r.metric == "p99")
        .collect();
    let width = 900.0;
    let label_w = 230.0;
    let bar_max = width - label_w - 170.0;
    let bar_h = 16.0;
    let mut y = 60.0;
    let mut body = String::new();
    let _ = writeln!(
        body,
        r#"<text x="20" y="32" font-size="18" font-weight="bold">Stockroom benchmark — medians</text>"#
    );
    let _ = writeln!(
        body,
        r#"<rect x="560" y="20" width="12" height="12" fill="{SERVER_COLOR}"/><text x="578" y="31" font-size="12">server (HTTP/GraphQL)</text><rect x="720" y="20" width="12" height="12" fill="{BASELINE_COLOR}"/><text x="738" y="31" font-size="12">raw baseline</text>"#
    );
    let _ = writeln!(
        body,
        r#"<text x="20" y="{y}" font-size="14" font-weight="bold">Throughput (bars scaled per scenario)</text>"#
    );
    y += 14.0;
    for r in &throughputs {
        let base = r.baseline.unwrap_or(0.0);
        let max = r.server.max(base).max(1e-9);
        let ratio = r
            .ratio
            .map(|x| format!("ratio {x:.2}×"))
            .unwrap_or_default();
        let _ = writeln!(
            body,
            r##"<text x="20" y="{:.0}" font-size="13">{}</text><text x="20" y="{:.0}" font-size="11" fill="#555">{} ({})</text>"##,
            y + 14.0,
            escape(&r.scenario),
            y + 30.0,
            escape(&ratio),
            escape(&r.unit)
        );
        for (i, (value, color)) in [(r.server, SERVER_COLOR), (base, BASELINE_COLOR)]
            .into_iter()
            .enumerate()
        {
            let bar = Bar {
                x: label_w,
                y: y + 4.0 + i as f64 * (bar_h + 3.0),
                width: (value / max * bar_max).max(1.0),
                height: bar_h,
                color,
            };
            bar.draw(&mut body, &num(value));
        }
        y += 2.0 * (bar_h + 3.0) + 16.0;
    }
    y += 20.0;
    let _ = writeln!(
        body,
        r#"<text x="20" y="{y}" font-size="14" font-weight="bold">Latency percentiles (µs, log scale)</text>"#
    );
    y += 14.0;
    let top = latencies
        .iter()
        .flat_map(|r| [r.server, r.baseline.unwrap_or(0.0)])
        .fold(10.0_f64, f64::max);
    let scale = |v: f64| (v.max(1.0).log10() / top.log10() * bar_max).max(1.0);
    for r in &latencies {
        let _ = writeln!(
            body,
            r#"<text x="20" y="{:.0}" font-size="13">{} {}</text>"#,
            y + 14.0,
            escape(&r.scenario),
            escape(&r.metric)
        );
        let mut bars = vec![(r.server, SERVER_COLOR)];
        if let Some(b) = r.baseline {
            bars.push((b, BASELINE_COLOR));
        }
        for (i, (value, color)) in bars.into_iter().enumerate() {
            let bar = Bar {
                x: label_w,
                y: y + 4.0 + i as f64 * (bar_h + 3.0),
                width: scale(value),
                height: bar_h,
                color,
            };
            bar.draw(&mut body, &format!("{} µs", num(value)));
        }
        y += 2.0 * (bar_h + 3.0) + 10.0;
    }
    let height = y + 20.0;
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" viewBox="0 0 {width} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#
    );
    std::fs::write(dir.join("chart.svg"), svg)
}

/// One horizontal bar of the chart, labelled at its end.
struct Bar {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    color: &'static str,
}

impl Bar {
    fn draw(&self, body: &mut String, label: &str) {
        let Bar {
            x,
            y,
            width,
            height,
            color,
        } = self;
        let _ = writeln!(
            body,
            r#"<rect x="{x}" y="{y:.0}" width="{width:.1}" height="{height}" fill="{color}"/><text x="{:.1}" y="{:.0}" font-size="11">{}</text>"#,
            x + width + 6.0,
            y + 12.0,
            escape(label)
        );
    }
}
