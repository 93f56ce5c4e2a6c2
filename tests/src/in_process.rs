//! Several nodes in one test process: the very runtime `grid-node` runs (listeners on
//! 127.0.0.1 with ephemeral ports, the peer handshake, Raft, liveness, moves), started in
//! the test's own tokio runtime, with filters on what each node sends its peers (drop or
//! delay, by peer and by message kind; see `grid_node::cluster::filter`). A node starts in
//! milliseconds and a link is cut without processes or namespaces, so joins, moves,
//! hand-overs and healing get fast tests; the process and namespace tests stay for what
//! only they show (kill -9, pauses, real links).

use std::time::Duration;

use anyhow::Context;
use grid_client::GridClient;
use grid_node::cluster::filter::{Filters, Rule};
use grid_node::{NodeConfig, RunningNode, SystemClock};
use grid_proto::{NodeStatus, WorkerStatus};

use crate::cluster::wait_settled_from;
use crate::{wait_until, DEADLINE};

/// Settings every in-process node gets: fast elections and failure detection.
fn base_config() -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        partitions: 16,
        raft_election_timeout: Duration::from_millis(500),
        down_after: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(1),
        ..NodeConfig::default()
    }
}

/// Nodes of one cluster in this process, by start order. Stopped nodes stay as `None`.
#[derive(Debug)]
pub struct InProcessCluster {
    nodes: Vec<Option<RunningNode>>,
    config: NodeConfig,
}

impl InProcessCluster {
    /// Starts `n` nodes with the base settings changed by `tweak`: the first bootstraps,
    /// the others join it. Waits until every partition is on `min(n, replicas)` nodes.
    pub async fn start(n: usize, tweak: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<Self> {
        let mut config = base_config();
        tweak(&mut config);
        let mut cluster = Self {
            nodes: Vec::new(),
            config,
        };
        for _ in 0..n {
            cluster.add_node().await?;
        }
        let replicas = n.min(cluster.config.replicas as usize);
        cluster.wait_settled(n, replicas).await?;
        Ok(cluster)
    }

    /// Starts one more node, joining through the running ones; returns its index. Does
    /// not wait for data to move to it.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let mut config = self.config.clone();
        config.join = self.addrs();
        let node = grid_node::start(config, std::sync::Arc::new(SystemClock))
            .await
            .context("starting an in-process node")?;
        self.nodes.push(Some(node));
        Ok(self.nodes.len() - 1)
    }

    /// Node `i`, unless stopped.
    pub fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Node `i`'s client (and peer) address.
    pub fn addr(&self, i: usize) -> String {
        self.node(i).client_addr().to_string()
    }

    /// The addresses of the running nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.client_addr().to_string())
            .collect()
    }

    /// A connection string naming every running node, with `extra` appended.
    pub fn connection_string(&self, extra: &str) -> String {
        format!("bootstrapGateways={}{extra}", self.addrs().join(","))
    }

    /// Sets what node `i` sends its peers through (replacing its filters).
    pub fn filter(&self, i: usize, filters: Filters) {
        self.node(i).node().cluster().filter_peers(filters);
    }

    /// Cuts every link between the nodes of `side` and the other running nodes, both
    /// ways (replacing every node's filters).
    pub fn partition(&self, side: &[usize]) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        for &i in &running {
            let mine = side.contains(&i);
            let rules = running
                .iter()
                .filter(|j| side.contains(j) != mine)
                .map(|j| Rule::cut(self.addr(*j)))
                .collect();
            self.filter(i, Filters::new(rules));
        }
    }

    /// Removes every filter of every running node.
    pub fn heal(&self) {
        for node in self.nodes.iter().flatten() {
            node.node().cluster().filter_peers(Filters::default());
        }
    }

    /// Node `i`'s status, read in process.
    pub fn status(&self, i: usize) -> NodeStatus {
        let node = self.node(i);
        node.node().status(node.client_addr().to_string())
    }

    /// Rounds node `i`'s job `name` has run.
    pub fn rounds(&self, i: usize, name: &str) -> u64 {
        let jobs: Vec<WorkerStatus> = self.node(i).node().workers().status();
        jobs.iter().find(|w| w.name == name).map_or(0, |w| w.runs)
    }

    /// Waits until `active` nodes are active, every partition is on `replicas` of them,
    /// and every running node agrees with the map and has nothing moving.
    pub async fn wait_settled(&self, active: usize, replicas: usize) -> anyhow::Result<()> {
        let client =
            GridClient::connect(&self.connection_string(";requestTimeout=2s;connectTimeout=1s"))
                .await?;
        wait_settled_from(&client, &self.addrs(), active, Some(replicas), DEADLINE * 3).await
    }

    /// Waits until every running node's job `name` has run `more` rounds past now: the
    /// runtime's own progress as a clock, so "nothing happened" is asserted after real
    /// work rather than after a sleep.
    pub async fn wait_rounds(&self, name: &str, more: u64) -> anyhow::Result<()> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        let start: Vec<u64> = running.iter().map(|i| self.rounds(*i, name)).collect();
        wait_until(&format!("{more} rounds of {name}"), DEADLINE, || {
            let done = running
                .iter()
                .zip(&start)
                .all(|(i, s)| self.rounds(*i, name) >= s + more);
            std::future::ready(done.then_some(()))
        })
        .await
    }

    /// Stops node `i` (gracefully: it closes its connections and stops its groups).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
