//! What `/proc` says about a process: resident memory and CPU time.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

/// Resident set size of process `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// CPU time (user + system) process `pid` has used.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // The kernel reports clock ticks; 100 per second on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// The summed RSS of `pids` once it has stopped moving: two samples half a second apart
/// within 1 % of each other (followers finish applying, allocators return freed pages),
/// or the last sample after `limit`.
pub async fn settled_rss(pids: &[u32], limit: Duration) -> anyhow::Result<u64> {
    let sum = || -> anyhow::Result<u64> { pids.iter().map(|p| rss_bytes(*p)).sum() };
    let started = Instant::now();
    let mut last = sum()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sum()?;
        if now.abs_diff(last) * 100 <= last || started.elapsed() > limit {
            return Ok(now);
        }
        last = now;
    }
}
