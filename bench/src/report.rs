//! The comparison's outputs: JSON rows, a markdown table with ratios, and an SVG plot of
//! throughput and p99 per workload and client count, one series per backend.

use std::collections::BTreeMap;
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `grid`, `redis`, `etcd` or `floor`.
    pub backend: String,
    /// `read`, `write`, `session`, `nearcache` (or `pingpong` for the floor).
    pub workload: String,
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
}

fn find<'a>(rows: &'a [Row], backend: &str, workload: &str, clients: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.backend == backend && r.workload == workload && r.clients == clients)
}

fn ratio(a: Option<&Row>, b: Option<&Row>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => {
            format!("{:.2}", a.ops_per_sec / b.ops_per_sec)
        }
        _ => "-".into(),
    }
}

/// The markdown table: one line per workload and client count, the three backends side
/// by side, and the grid/Redis and grid/etcd throughput ratios.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    if let Some(floor) = rows.iter().find(|r| r.backend == "floor") {
        let _ = writeln!(
            out,
            "Floor (raw loopback TCP ping-pong, same payload, 1 client): {:.0} round trips/s, p50 {} µs, p99 {} µs.\n",
            floor.ops_per_sec, floor.p50_us, floor.p99_us
        );
    }
    out.push_str("| workload | clients | grid ops/s | redis ops/s | etcd ops/s | grid/redis | grid/etcd | grid p50/p99 µs | redis p50/p99 µs | etcd p50/p99 µs | grid bytes/op |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut cells: BTreeMap<(usize, String, usize), ()> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.backend != "floor") {
        cells.insert((rank(&r.workload), r.workload.clone(), r.clients), ());
    }
    for (_, workload, clients) in cells.keys() {
        let (g, r, e) = (
            find(rows, "grid", workload, *clients),
            find(rows, "redis", workload, *clients),
            find(rows, "etcd", workload, *clients),
        );
        let ops = |x: Option<&Row>| x.map_or("-".into(), |x| format!("{:.0}", x.ops_per_sec));
        let lat = |x: Option<&Row>| x.map_or("-".into(), |x| format!("{}/{}", x.p50_us, x.p99_us));
        let _ = writeln!(
            out,
            "| {workload} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ops(g),
            ops(r),
            ops(e),
            ratio(g, r),
            ratio(g, e),
            lat(g),
            lat(r),
            lat(e),
            g.map_or("-".into(), |g| g.bytes_per_op.to_string()),
        );
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

const COLORS: [(&str, &str); 3] = [
    ("grid", "#1b7837"),
    ("redis", "#c51b7d"),
    ("etcd", "#2166ac"),
];

/// Grouped bars: for each workload, throughput (top) and p99 latency (bottom) per client
/// count, one bar per backend. Log scale, as the backends differ by orders of magnitude.
pub fn svg(rows: &[Row]) -> String {
    let workloads: Vec<String> = {
        let mut w: Vec<String> = Vec::new();
        for r in rows.iter().filter(|r| r.backend != "floor") {
            if !w.contains(&r.workload) {
                w.push(r.workload.clone());
            }
        }
        w.sort_by_key(|w| rank(w));
        w
    };
    let mut clients: Vec<usize> = rows
        .iter()
        .filter(|r| r.backend != "floor")
        .map(|r| r.clients)
        .collect();
    clients.sort_unstable();
    clients.dedup();
    let (panel_w, panel_h, margin) = (320.0_f64, 220.0_f64, 60.0_f64);
    let width = margin + workloads.len() as f64 * (panel_w + margin);
    let height = 2.0 * (panel_h + margin) + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (name, color)) in COLORS.iter().enumerate() {
        let x = margin + i as f64 * 90.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="10" width="12" height="12" fill="{color}"/><text x="{}" y="20">{name}</text>"#,
            x + 16.0
        );
    }
    for (metric_i, (metric, label)) in [("ops", "ops/s (log)"), ("p99", "p99 µs (log)")]
        .iter()
        .enumerate()
    {
        let top = 40.0 + metric_i as f64 * (panel_h + margin);
        let value = |r: &Row| {
            if *metric == "ops" {
                r.ops_per_sec
            } else {
                r.p99_us as f64
            }
        };
        let max = rows
            .iter()
            .filter(|r| r.backend != "floor")
            .map(value)
            .fold(1.0_f64, f64::max);
        let scale = |v: f64| {
            if v <= 1.0 {
                0.0
            } else {
                v.log10() / max.log10() * (panel_h - 20.0)
            }
        };
        for (wi, workload) in workloads.iter().enumerate() {
            let left = margin + wi as f64 * (panel_w + margin);
            let base = top + panel_h;
            let _ = writeln!(
                out,
                r#"<text x="{left}" y="{}" font-weight="bold">{workload}: {label}</text>"#,
                top - 4.0
            );
            let _ = writeln!(
                out,
                r#"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#,
                left + panel_w
            );
            let group_w = panel_w / clients.len().max(1) as f64;
            for (ci, c) in clients.iter().enumerate() {
                let gx = left + ci as f64 * group_w;
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}">{c} clients</text>"#,
                    gx + 8.0,
                    base + 14.0
                );
                for (bi, (backend, color)) in COLORS.iter().enumerate() {
                    let Some(r) = find(rows, backend, workload, *c) else {
                        continue;
                    };
                    let h = scale(value(r));
                    let bw = (group_w - 16.0) / COLORS.len() as f64;
                    let x = gx + 8.0 + bi as f64 * bw;
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"><title>{backend} {workload} {c}: {:.0}</title></rect>"#,
                        base - h,
                        bw - 2.0,
                        value(r)
                    );
                    let _ = writeln!(
                        out,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                        x + (bw - 2.0) / 2.0,
                        base - h - 3.0,
                        compact(value(r), metric == &"p99")
                    );
                }
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
