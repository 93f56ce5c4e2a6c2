//! Harness for the integration and fault tests: real node processes on 127.0.0.1 with
//! ephemeral ports or on hosts made of network namespaces, a raw protocol connection for
//! sending bad input, and condition waits with deadlines (never fixed sleeps).
//!
//! - [`process::NodeProcess`]: a `grid-node` process, killed by process id when dropped.
//! - [`cluster::TestCluster`]: several node processes forming one cluster, with kills and
//!   network partitions.
//! - [`in_process::InProcessCluster`]: several nodes in the test's own process, with
//!   filters (drop, delay) on their links by peer and message kind.
//! - [`netns::Lab`]: hosts made of Linux network namespaces on one bridge, with links to
//!   cut; [`netns::cluster::HostCluster`]: one node per host, clients on a host of their own.
//! - [`linearizability`]: a checker for recorded histories; [`history`]: the register
//!   workload that records them.
//! - [`raw::RawConn`]: frames by hand, including malformed ones.
//! - [`certs`]: a test CA and the certificates it signs, as PEM files.
//! - [`scratch::ScratchDir`]: a directory of the test's own, removed afterwards.
//! - [`http`]: web servers of the session demo as processes, and a minimal HTTP client.
//! - [`wait_until`]: polls a condition until it holds or a generous deadline passes.

pub mod certs;
pub mod cluster;
pub mod history;
pub mod http;
pub mod in_process;
pub mod linearizability;
pub mod netns;
pub mod process;
pub mod raw;
pub mod scratch;

use std::future::Future;
use std::time::{Duration, Instant};

/// Generous default deadline for conditions on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
