//! `grid-node` processes for benchmarks, found beside this binary (build both with
//! `cargo build --release -p grid-node -p bench`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use grid_client::GridClient;

/// A node process; killed when dropped.
#[derive(Debug)]
pub struct BenchNode {
    child: Child,
    /// Its client address.
    pub addr: String,
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `grid-node` binary next to the running one.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("grid-node");
    if !path.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p grid-node",
            path.display()
        );
    }
    Ok(path)
}

impl BenchNode {
    /// Starts a node on an ephemeral loopback port with `args`.
    pub fn start(args: &[String]) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0", args)
    }

    /// Like [`BenchNode::start`], listening at `listen` (a restart where it was).
    pub fn start_at(listen: &str, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(node_binary()?)
            .args(["--listen", listen])
            .args(args)
            // Errors only, unless the caller's environment asks for more.
            .env(
                "GRID_LOG",
                std::env::var("GRID_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("node printed no ready line"))?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("client="))
            .ok_or_else(|| anyhow!("unexpected ready line {line:?}"))?
            .to_string();
        Ok(Self { child, addr })
    }

    /// CPU time (user + system) the process has used.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        crate::procfs::cpu_time(self.pid())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Starts an `n`-node cluster (the first bootstraps, the rest join) with `args` for every
/// node, and waits until every partition is fully replicated and every node leads the
/// partitions the placement prefers it for (leadership hand-overs are done).
pub async fn start_cluster(n: usize, args: &[String]) -> anyhow::Result<Vec<BenchNode>> {
    start_cluster_each(vec![args.to_vec(); n]).await
}

/// Like [`start_cluster`], node `i` with `per_node[i]` as its arguments.
pub async fn start_cluster_each(per_node: Vec<Vec<String>>) -> anyhow::Result<Vec<BenchNode>> {
    let mut nodes: Vec<BenchNode> = Vec::new();
    for args in per_node {
        let mut node_args = args;
        if let Some(first) = nodes.first() {
            node_args.extend(["--join".to_string(), first.addr.clone()]);
        }
        nodes.push(BenchNode::start(&node_args)?);
    }
    wait_settled(&nodes).await?;
    Ok(nodes)
}

/// Waits (up to 120 s) until `nodes` are the cluster's active members, every partition is
/// fully replicated, and every node leads the partitions the placement prefers it for.
pub async fn wait_settled(nodes: &[BenchNode]) -> anyhow::Result<()> {
    let n = nodes.len();
    let client = GridClient::connect(&connection_string(nodes)).await?;
    let started = Instant::now();
    loop {
        client.refresh().await?;
        let map = client.partition_map().context("no map")?;
        let mut settled = map.nodes.iter().filter(|n| n.active).count() == n;
        for node in nodes {
            let status = client.node_status(&node.addr).await?;
            let id = map.nodes.iter().find(|m| m.addr == node.addr).map(|m| m.id);
            let preferred = map
                .replicas
                .iter()
                .filter(|r| r.first().copied() == id)
                .count();
            settled &= status.unsettled == 0
                && status.map_epoch == map.epoch
                && status.partitions_led as usize == preferred;
        }
        if settled {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("cluster did not settle within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection string naming every node.
pub fn connection_string(nodes: &[BenchNode]) -> String {
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    format!("bootstrapGateways={}", addrs.join(","))
}
