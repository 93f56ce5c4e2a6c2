//! A cluster of real node processes on loopback for fault tests.

use std::net::SocketAddr;
use std::time::Duration;

use grid_proto::sync::lock;

use anyhow::{bail, Context};
use grid_client::GridClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::NodeProcess;
use crate::{wait_until, DEADLINE};

/// The cluster secret of test clusters: nodes prove it to each other, tests use it to
/// act as a node (and attack tests to show that nothing else will do).
pub const TEST_CLUSTER_SECRET: &str = "test-cluster-secret-of-some-length";

/// Settings every test node gets: fast failure detection and fault injection.
const NODE_ARGS: &[&str] = &[
    "--cluster-secret",
    TEST_CLUSTER_SECRET,
    "--admin",
    "127.0.0.1:0",
    "--fault-injection",
    "--raft-election-timeout",
    "500ms",
    "--down-after",
    "3s",
];

/// Real node processes forming one cluster. Killed nodes stay as `None`.
#[derive(Debug)]
pub struct TestCluster {
    bin: String,
    extra: Vec<String>,
    /// Arguments of node `i` only (its geo address, say), by start order.
    per_node: Vec<Vec<String>>,
    nodes: Vec<Option<NodeProcess>>,
}

impl TestCluster {
    /// Starts `n` nodes: the first bootstraps, the others join it. Waits until the
    /// cluster has settled (every partition fully replicated as the map says).
    pub async fn start(bin: &str, n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_each(bin, extra, vec![Vec::new(); n]).await
    }

    /// Like [`TestCluster::start`], with `per_node[i]` added to node `i`'s arguments.
    pub async fn start_each(
        bin: &str,
        extra: &[&str],
        per_node: Vec<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let n = per_node.len();
        let mut cluster = Self {
            bin: bin.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            per_node,
            nodes: Vec::new(),
        };
        for _ in 0..n {
            cluster.add_node_process()?;
        }
        cluster.wait_settled(n).await?;
        Ok(cluster)
    }

    /// Starts one more node, joining through the live ones. Does not wait for it to settle.
    pub fn add_node_process(&mut self) -> anyhow::Result<usize> {
        self.start_node("127.0.0.1:0", self.nodes.len())
    }

    /// Restarts killed node `i` at its old address, with its own arguments. Without a
    /// data directory it is a fresh process that rejoins (it comes back empty, under a
    /// new node id, and catches up from the others); with one it resumes as itself.
    pub fn restart(&mut self, i: usize, addr: &str) -> anyhow::Result<()> {
        let index = self.start_node(addr, i)?;
        let node = self.nodes.pop().flatten();
        debug_assert_eq!(index, self.nodes.len());
        self.nodes[i] = node;
        Ok(())
    }

    /// Kills every live node with one SIGKILL call, so none outlives the others by more
    /// than the kernel takes to deliver it.
    pub fn kill_all(&mut self) -> anyhow::Result<()> {
        let pids: Vec<String> = self.live().map(|n| n.pid().to_string()).collect();
        let status = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()?;
        if !status.success() {
            bail!("kill -KILL {pids:?} failed");
        }
        for node in &mut self.nodes {
            drop(node.take());
        }
        Ok(())
    }

    fn start_node(&mut self, listen: &str, args_of: usize) -> anyhow::Result<usize> {
        let join: Vec<String> = self.live().map(|n| n.client_addr().to_string()).collect();
        let mut args: Vec<String> = NODE_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(self.extra.iter().cloned());
        args.extend(self.per_node.get(args_of).into_iter().flatten().cloned());
        if !join.is_empty() {
            args.push("--join".into());
            args.push(join.join(","));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes
            .push(Some(NodeProcess::start_at(&self.bin, listen, &args)?));
        Ok(self.nodes.len() - 1)
    }

    /// The live nodes.
    pub fn live(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.iter().flatten()
    }

    /// Node `i`, if alive.
    pub fn node(&self, i: usize) -> Option<&NodeProcess> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Index of the live node at `addr`.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.as_ref()
                .is_some_and(|n| n.client_addr().to_string() == addr)
        })
    }

    /// A connection string naming every live node.
    pub fn connection_string(&self, extra: &str) -> String {
        let gateways: Vec<String> = self.live().map(|n| n.client_addr().to_string()).collect();
        format!("bootstrapGateways={}{extra}", gateways.join(","))
    }

    /// Kills node `i` with SIGKILL, by process id.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(i)
            .and_then(Option::take)
            .context("no such live node")?;
        node.signal("KILL")?;
        drop(node);
        Ok(())
    }

    /// Waits for node `i` to exit by itself; it no longer counts as live afterwards.
    pub fn wait_exit(
        &mut self,
        i: usize,
        deadline: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let node = self
            .nodes
            .get_mut(i)
            .and_then(Option::as_mut)
            .context("no such live node")?;
        let status = node.wait_exit(deadline)?;
        self.nodes[i] = None;
        Ok(status)
    }

    /// Waits until `expected` nodes are active in the map, every live node knows the same
    /// epoch, every partition has a leader, and no live node reports unsettled groups.
    pub async fn wait_settled(&self, expected: usize) -> anyhow::Result<()> {
        let cs = self.connection_string(";requestTimeout=2s;connectTimeout=1s");
        // Nodes resuming from their data directories answer once their control group
        // has a leader again.
        let client = wait_until("a node to answer", DEADLINE, || async {
            GridClient::connect(&cs).await.ok()
        })
        .await?;
        let addrs: Vec<String> = self.live().map(|n| n.client_addr().to_string()).collect();
        wait_settled_from(&client, &addrs, expected, None, DEADLINE * 3).await
    }

    /// Waits until leadership has spread: every live node leads within one partition of
    /// every other. Leadership moves after a start (the hand-overs to planned leaders);
    /// tests that count deliveries exactly start after it.
    pub async fn wait_leaders_spread(&self) -> anyhow::Result<()> {
        let client = GridClient::connect(&self.connection_string(";connectTimeout=1s")).await?;
        let addrs: Vec<String> = self.live().map(|n| n.client_addr().to_string()).collect();
        wait_until("leaders spread", DEADLINE * 2, || async {
            let mut led = Vec::new();
            for addr in &addrs {
                led.push(client.node_status(addr).await.ok()?.partitions_led);
            }
            let (min, max) = (led.iter().min()?, led.iter().max()?);
            (max - min <= 1).then_some(())
        })
        .await
    }

    /// The sum of a status counter over the live nodes; `None` if one does not answer.
    pub async fn sum_status(
        &self,
        client: &GridClient,
        counter: impl Fn(&grid_proto::NodeStatus) -> u64,
    ) -> Option<u64> {
        let mut total = 0;
        for node in self.live() {
            total += counter(
                &client
                    .node_status(&node.client_addr().to_string())
                    .await
                    .ok()?,
            );
        }
        Some(total)
    }

    /// Waits until no node has an event waiting for its acknowledgement: nothing can be
    /// delivered again after this.
    pub async fn wait_events_acknowledged(&self, client: &GridClient) -> anyhow::Result<()> {
        wait_until("every event acknowledged", DEADLINE, || async {
            let pending = self.sum_status(client, |s| s.pending_events).await?;
            (pending == 0).then_some(())
        })
        .await
    }

    /// Index of the live node leading the most partitions (after bootstrap, the one that
    /// leads them all until leadership spreads).
    pub async fn busiest_leader(&self) -> anyhow::Result<usize> {
        let client = GridClient::connect(&self.connection_string(";connectTimeout=1s")).await?;
        let mut best = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let led = client
                .node_status(&node.client_addr().to_string())
                .await?
                .partitions_led;
            if best.is_none_or(|(_, most)| led >= most) {
                best = Some((i, led));
            }
        }
        best.map(|(i, _)| i).context("no live node")
    }

    /// Splits the live nodes (the first against the rest) for `duration`, then heals.
    pub async fn split_for(&self, duration: Duration) -> anyhow::Result<()> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.node(*i).is_some())
            .collect();
        self.partition(&live[..1], &live[1..]).await?;
        // The fault's duration, not a wait for a result.
        tokio::time::sleep(duration).await;
        self.heal().await
    }

    /// Cuts node `i` off from the peers at `others` (its outgoing messages to them fail);
    /// an empty list heals it.
    pub async fn block(&self, i: usize, others: &[usize]) -> anyhow::Result<()> {
        let node = self.node(i).context("no such live node")?;
        let admin = node.admin_addr().context("node has no admin address")?;
        let body: Vec<String> = others
            .iter()
            .filter_map(|j| self.node(*j).map(|n| n.client_addr().to_string()))
            .collect();
        http_post(admin, "/faults/block", &body.join(",")).await
    }

    /// Splits the live nodes into two sides that cannot reach each other.
    pub async fn partition(&self, side_a: &[usize], side_b: &[usize]) -> anyhow::Result<()> {
        for a in side_a {
            self.block(*a, side_b).await?;
        }
        for b in side_b {
            self.block(*b, side_a).await?;
        }
        Ok(())
    }

    /// Heals every partition.
    pub async fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.node(i).is_some() {
                self.block(i, &[]).await?;
            }
        }
        Ok(())
    }
}

/// Waits, through `client`, until `expected` nodes are active in the map, every node at
/// `addrs` answers with the map's epoch and no unsettled groups, and every partition has a
/// leader. With `replicas`, also until every partition's replica set holds that many
/// distinct active nodes (full replication). The error names what was seen last.
pub async fn wait_settled_from(
    client: &GridClient,
    addrs: &[String],
    expected: usize,
    replicas: Option<usize>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let last_seen = std::sync::Mutex::new(String::new());
    let settled = wait_until("cluster settled", deadline, || {
        let last_seen = &last_seen;
        async move {
            client.refresh().await.ok()?;
            let map = client.partition_map()?;
            let active = map.nodes.iter().filter(|n| n.active).count();
            let mut seen = format!("map epoch {}, {active} active; ", map.epoch);
            let mut done = active == expected;
            if let Some(want) = replicas {
                let short = map
                    .replicas
                    .iter()
                    .filter(|set| {
                        let mut ids: Vec<u64> = set
                            .iter()
                            .copied()
                            .filter(|id| map.nodes.iter().any(|n| n.id == *id && n.active))
                            .collect();
                        ids.sort_unstable();
                        ids.dedup();
                        ids.len() != want
                    })
                    .count();
                seen += &format!("{short} partitions not on {want} nodes; ");
                done &= short == 0 && map.replicas.len() == map.partitions as usize;
            }
            let mut led = 0u32;
            for addr in addrs {
                match client.node_status(addr).await {
                    Ok(s) => {
                        seen += &format!(
                            "[node {} {addr}: epoch {}, hosts {}, leads {}, unsettled {}] ",
                            s.node_id, s.map_epoch, s.partitions, s.partitions_led, s.unsettled
                        );
                        done &= s.unsettled == 0 && s.map_epoch == map.epoch;
                        led += s.partitions_led;
                    }
                    Err(e) => {
                        seen += &format!("[{addr}: {e}] ");
                        done = false;
                    }
                }
            }
            done &= led == map.partitions;
            *lock(last_seen) = seen;
            done.then_some(())
        }
    })
    .await;
    settled.with_context(|| format!("last seen: {}", lock(&last_seen)))
}

/// A minimal HTTP POST over loopback, for the admin endpoint.
async fn http_post(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<()> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .context("admin connect timed out")??;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .context("admin answer timed out")??;
    if !response.starts_with("HTTP/1.1 200") {
        bail!(
            "admin {path} answered: {}",
            response.lines().next().unwrap_or("")
        );
    }
    Ok(())
}
