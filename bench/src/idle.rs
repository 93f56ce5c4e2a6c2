//! Idle CPU: a 3-node cluster with no client load, each node's CPU time over a window,
//! as a percentage of one core.

use std::time::Duration;

use crate::nodes::start_cluster;

/// Each node's CPU over `duration` (percent of one core), once a fresh cluster of
/// `partitions` partitions has settled.
pub async fn cpu_percent(partitions: u32, duration: Duration) -> anyhow::Result<Vec<f64>> {
    let nodes = start_cluster(3, &["--partitions".into(), partitions.to_string()]).await?;
    // Let the after-effects of elections and moves (snapshots, hand-overs) pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<Duration> = nodes
        .iter()
        .map(|n| n.cpu_time())
        .collect::<Result<_, _>>()?;
    tokio::time::sleep(duration).await;
    let after: Vec<Duration> = nodes
        .iter()
        .map(|n| n.cpu_time())
        .collect::<Result<_, _>>()?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| 100.0 * (*a - *b).as_secs_f64() / duration.as_secs_f64())
        .collect())
}
