//! The comparison's outputs: JSON rows, a markdown table with ratios, and an SVG plot of
//! throughput and p99 per workload and client count, one series per backend.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Workloads in the order the reports show them.
const ORDER: [&str; 4] = ["read", "write", "session", "nearcache"];

fn rank(workload: &str) -> usize {
    ORDER
        .iter()
        .position(|w| *w == workload)
        .unwrap_or(ORDER.len())
}

/// One measured cell.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// `grid`, `redis`, `redis-repl`, `etcd` or `floor`.
    pub backend: String,
    /// `read`, `write`, `session`, `nearcache` (or `pingpong` for the floor); `memory`,
    /// `failover` and `idle` rows carry their own measure below instead of ops/s.
    pub workload: String,
    /// Size of each value.
    #[serde(default = "default_value_bytes")]
    pub value_bytes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Median over rounds.
    pub ops_per_sec: f64,
    /// Median over rounds.
    pub p50_us: u64,
    /// Median over rounds.
    pub p99_us: u64,
    /// Bytes on the wire per operation, both directions.
    pub bytes_per_op: u64,
    /// `memory`: resident bytes per object per replica, beyond the empty process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_object: Option<f64>,
    /// `failover`: median over kills of the longest write gap of a key the killed node led.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// `failover`: the longest such gap over all kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// `idle`: CPU per node, percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
}

fn default_value_bytes() -> usize {
    4096
}

/// Workloads measured in ops/s; the others have a row of their own kind.
fn is_throughput(r: &Row) -> bool {
    r.backend != "floor" && ORDER.contains(&r.workload.as_str())
}

/// `read` for 4 KB values, `read 1KB` otherwise: the name of a panel or table line.
fn label(workload: &str, value_bytes: usize) -> String {
    match value_bytes {
        4096 => workload.to_string(),
        n if n % 1024 == 0 => format!("{workload} {}KB", n / 1024),
        n => format!("{workload} {n}B"),
    }
}

/// Peers the grid is compared with, in table and plot order.
const PEERS: [&str; 3] = ["redis", "redis-repl", "etcd"];

fn find<'a>(rows: &'a [Row], backend: &str, panel: &str, clients: usize) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.backend == backend
            && is_throughput(r)
            && label(&r.workload, r.value_bytes) == panel
            && r.clients == clients
    })
}

fn ratio_of(a: Option<&Row>, b: Option<&Row>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => Some(a.ops_per_sec / b.ops_per_sec),
        _ => None,
    }
}

fn ratio(a: Option<&Row>, b: Option<&Row>) -> String {
    ratio_of(a, b).map_or("-".into(), |r| format!("{r:.2}"))
}

/// Panels (workload and value size) in report order.
fn panels(rows: &[Row]) -> Vec<String> {
    let mut keys: Vec<(usize, usize, String)> = rows
        .iter()
        .filter(|r| is_throughput(r))
        .map(|r| {
            (
                usize::MAX - r.value_bytes,
                rank(&r.workload),
                label(&r.workload, r.value_bytes),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().map(|(_, _, l)| l).collect()
}

/// The markdown tables: one line per workload, value size and client count with the
/// backends side by side and the grid's throughput ratio to each peer; then the memory,
/// failover and idle rows.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    if let Some(floor) = rows.iter().find(|r| r.backend == "floor") {
        let _ = writeln!(
            out,
            "Floor (raw loopback TCP ping-pong, same payload, 1 client): {:.0} round trips/s, p50 {} µs, p99 {} µs.\n",
            floor.ops_per_sec, floor.p50_us, floor.p99_us
        );
    }
    out.push_str("| workload | clients | grid ops/s | redis ops/s | redis-repl ops/s | etcd ops/s | grid/redis | grid/redis-repl | grid/etcd | grid p50/p99 µs | redis p50/p99 µs | redis-repl p50/p99 µs | etcd p50/p99 µs | grid bytes/op |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let clients = client_counts(rows);
    for panel in panels(rows) {
        for &c in &clients {
            let g = find(rows, "grid", &panel, c);
            let peers: Vec<Option<&Row>> = PEERS.iter().map(|p| find(rows, p, &panel, c)).collect();
            if g.is_none() && peers.iter().all(Option::is_none) {
                continue;
            }
            let ops = |x: Option<&Row>| x.map_or("-".into(), |x| format!("{:.0}", x.ops_per_sec));
            let lat =
                |x: Option<&Row>| x.map_or("-".into(), |x| format!("{}/{}", x.p50_us, x.p99_us));
            let mut line = format!("| {panel} | {c} | {}", ops(g));
            for p in &peers {
                let _ = write!(line, " | {}", ops(*p));
            }
            for p in &peers {
                let _ = write!(line, " | {}", ratio(g, *p));
            }
            let _ = write!(line, " | {}", lat(g));
            for p in &peers {
                let _ = write!(line, " | {}", lat(*p));
            }
            let _ = writeln!(
                line,
                " | {} |",
                g.map_or("-".into(), |g| g.bytes_per_op.to_string())
            );
            out.push_str(&line);
        }
    }
    let others: Vec<&Row> = rows
        .iter()
        .filter(|r| !is_throughput(r) && r.backend != "floor")
        .collect();
    if !others.is_empty() {
        out.push_str("\n| backend | measure | value |\n|---|---|---:|\n");
        for r in &others {
            let value = match (r.bytes_per_object, r.p50_ms, r.max_ms, r.cpu_percent) {
                (Some(b), ..) => format!("{b:.0} bytes per {} B object per replica", r.value_bytes),
                (_, Some(p50), Some(max), _) => format!("p50 {p50:.0} ms, max {max:.0} ms"),
                (.., Some(cpu)) => format!("{cpu:.1} % of a core per node"),
                _ => "-".into(),
            };
            let _ = writeln!(out, "| {} | {} | {value} |", r.backend, r.workload);
        }
        if let (Some(g), Some(r)) = (
            others
                .iter()
                .find(|r| r.backend == "grid" && r.workload == "memory"),
            others
                .iter()
                .find(|r| r.backend == "redis" && r.workload == "memory"),
        ) {
            if let (Some(g), Some(r)) = (g.bytes_per_object, r.bytes_per_object) {
                let _ = writeln!(out, "\nMemory per replica, grid / Redis: {:.2}.", g / r);
            }
        }
    }
    out
}

/// A short label: 14.5k for counts, 12.3ms or 850µs for latencies.
fn compact(v: f64, micros: bool) -> String {
    match (micros, v) {
        (true, v) if v >= 1000.0 => format!("{:.1}ms", v / 1000.0),
        (true, v) => format!("{v:.0}µs"),
        (false, v) if v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        (false, v) => format!("{v:.0}"),
    }
}

const COLORS: [(&str, &str); 4] = [
    ("grid", "#1b7837"),
    ("redis", "#c51b7d"),
    ("redis-repl", "#f1a340"),
    ("etcd", "#2166ac"),
];

fn color_of(backend: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(b, _)| *b == backend)
        .map_or("gray", |(_, c)| c)
}

/// A bar of a panel: its height in pixels, its value, and its label.
struct Bar {
    series: &'static str,
    height: f64,
    value: f64,
    text: String,
}

/// The client counts of the throughput rows, ascending, each once.
fn client_counts(rows: &[Row]) -> Vec<usize> {
    let mut clients: Vec<usize> = rows
        .iter()
        .filter(|r| is_throughput(r))
        .map(|r| r.clients)
        .collect();
    clients.sort_unstable();
    clients.dedup();
    clients
}

/// Grouped bars, one panel per workload and value size: throughput (top row) and p99
/// latency (middle row), one bar per backend on a log scale as the backends differ by
/// orders of magnitude; and (bottom row) the grid's throughput divided by each peer's on
/// a linear axis with a line at 1, where a 10x gap looks like one.
pub fn svg(rows: &[Row]) -> String {
    let panels = panels(rows);
    let clients = client_counts(rows);
    let (panel_w, panel_h, margin) = (320.0_f64, 220.0_f64, 60.0_f64);
    let width = margin + panels.len() as f64 * (panel_w + margin);
    let height = 3.0 * (panel_h + margin) + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (name, color)) in COLORS.iter().enumerate() {
        let x = margin + i as f64 * 110.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="10" width="12" height="12" fill="{color}"/><text x="{}" y="20">{name}</text>"#,
            x + 16.0
        );
    }
    let bar_h = panel_h - 20.0;
    let log_max = |f: &dyn Fn(&Row) -> f64| {
        rows.iter()
            .filter(|r| is_throughput(r))
            .map(f)
            .fold(1.0_f64, f64::max)
            .log10()
    };
    let log_bar = |v: f64, max_log: f64| {
        if v <= 1.0 || max_log <= 0.0 {
            0.0
        } else {
            v.log10() / max_log * bar_h
        }
    };
    let ops_max = log_max(&|r| r.ops_per_sec);
    let p99_max = log_max(&|r| r.p99_us as f64);
    let ratios = |panel: &str, c: usize| -> Vec<(&'static str, f64)> {
        let g = find(rows, "grid", panel, c);
        PEERS
            .iter()
            .filter_map(|p| Some((*p, ratio_of(g, find(rows, p, panel, c))?)))
            .collect()
    };
    let ratio_max = panels
        .iter()
        .flat_map(|p| clients.iter().flat_map(move |c| ratios(p, *c)))
        .map(|(_, r)| r)
        .fold(1.0_f64, f64::max);
    for (row_i, title) in [
        "ops/s (log)",
        "p99 µs (log)",
        "grid ops/s ÷ peer's (linear)",
    ]
    .iter()
    .enumerate()
    {
        let top = 40.0 + row_i as f64 * (panel_h + margin);
        let base = top + panel_h;
        for (pi, panel) in panels.iter().enumerate() {
            let left = margin + pi as f64 * (panel_w + margin);
            let _ = writeln!(
                out,
                r#"<text x="{left}" y="{}" font-weight="bold">{panel}: {title}</text>"#,
                top - 4.0
            );
            let _ = writeln!(
                out,
                r#"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#,
                left + panel_w
            );
            if row_i == 2 {
                let y = base - bar_h / ratio_max;
                let _ = writeln!(
                    out,
                    r#"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="black" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" font-size="9">1×</text>"#,
                    left + panel_w,
                    left + panel_w + 2.0,
                    y + 3.0
                );
            }
            let group_w = panel_w / clients.len().max(1) as f64;
            for (ci, c) in clients.iter().enumerate() {
                let gx = left + ci as f64 * group_w;
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}">{c} clients</text>"#,
                    gx + 8.0,
                    base + 14.0
                );
                let bars: Vec<Bar> = match row_i {
                    2 => ratios(panel, *c)
                        .into_iter()
                        .map(|(peer, r)| Bar {
                            series: peer,
                            height: r / ratio_max * bar_h,
                            value: r,
                            text: format!("{r:.2}"),
                        })
                        .collect(),
                    _ => COLORS
                        .iter()
                        .filter_map(|(backend, _)| {
                            let r = find(rows, backend, panel, *c)?;
                            let (v, max, micros) = if row_i == 0 {
                                (r.ops_per_sec, ops_max, false)
                            } else {
                                (r.p99_us as f64, p99_max, true)
                            };
                            Some(Bar {
                                series: backend,
                                height: log_bar(v, max),
                                value: v,
                                text: compact(v, micros),
                            })
                        })
                        .collect(),
                };
                let bw = (group_w - 16.0) / COLORS.len() as f64;
                for (bi, bar) in bars.iter().enumerate() {
                    let x = gx + 8.0 + bi as f64 * bw;
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {panel} {c}: {:.2}</title></rect>"#,
                        base - bar.height,
                        bw - 2.0,
                        bar.height,
                        color_of(bar.series),
                        bar.series,
                        bar.value
                    );
                    let _ = writeln!(
                        out,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                        x + (bw - 2.0) / 2.0,
                        base - bar.height - 3.0,
                        bar.text
                    );
                }
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
