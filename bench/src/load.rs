//! Closed-loop load: `clients` tasks each issue one request at a time for a fixed
//! duration after a warm-up; latencies go into an HDR histogram.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Completed operations per second in the measured window.
    pub ops_per_sec: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Worst.
    pub max_us: u64,
    /// Operations that failed.
    pub errors: u64,
}

/// Runs `op(client_index, sequence)` from `clients` tasks: `warmup` unmeasured, then
/// `duration` measured.
pub async fn run<F, Fut>(clients: usize, warmup: Duration, duration: Duration, op: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let merged = Arc::new(Mutex::new(new_histogram()));
    let errors = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, merged, errors) = (Arc::clone(&op), Arc::clone(&merged), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let mut failed = 0u64;
            let mut seq = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let ok = op(c, seq).await.is_ok();
                seq += 1;
                if began >= measure_from {
                    if ok {
                        let _ = hist.record(began.elapsed().as_micros().max(1) as u64);
                    } else {
                        failed += 1;
                    }
                }
            }
            if let Ok(mut m) = merged.lock() {
                let _ = m.add(&hist);
            }
            if let Ok(mut e) = errors.lock() {
                *e += failed;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let hist = merged
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| new_histogram());
    let errors = errors.lock().map(|e| *e).unwrap_or(0);
    LoadResult {
        clients,
        ops_per_sec: hist.len() as f64 / duration.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        errors,
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are constants that always work.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

/// The median of `values` (0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
