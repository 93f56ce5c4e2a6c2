//! A cluster across lab hosts: one node process per host, each on its own address, and a
//! client host of its own. Every client-side call runs inside the client host (the
//! namespace the tests run in cannot reach the lab at all).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use grid_client::GridClient;

use crate::certs::{Identity, TestCa};
use crate::cluster::wait_settled_from;
use crate::netns::{lab_or_skip, Host, Lab};
use crate::process::NodeProcess;
use crate::DEADLINE;

/// The port every node listens on, on its host's address.
pub const PORT: u16 = 7210;

/// How long a node may be unreachable before it is marked down (`--down-after`).
pub const DOWN_AFTER: Duration = Duration::from_secs(3);

/// Failure detection and elections kept short so faults play out quickly.
const TIMING_ARGS: &[&str] = &["--down-after", "3s", "--raft-election-timeout", "500ms"];

/// Client settings for the harness's own queries (status, map, settling).
const QUERY_OPTS: &str = ";requestTimeout=2s;connectTimeout=1s;maxRequestRetries=2";

/// Every credential of a multi-host cluster, in one place: node flags and client options
/// both come from here, so adding one (a cluster secret for the peer plane, TLS for the
/// client port) is a change to these two functions, and every multi-host test gets it.
#[derive(Debug, Clone)]
pub struct Security {
    auth_token: String,
    cluster_secret: String,
    admin_token: String,
    /// The CA of the nodes' TLS certificates (its files live as long as it does).
    ca: std::sync::Arc<TestCa>,
    node_cert: Identity,
}

impl Security {
    /// Fresh credentials for one test run: tokens, a cluster secret, and a CA-signed TLS
    /// certificate naming every node address in `ips`.
    pub fn generate(ips: &[String]) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tag = format!("{:x}-{nanos:x}", std::process::id());
        let ca = TestCa::new(&format!("lab-{nanos:x}"))?;
        let names: Vec<&str> = ips.iter().map(String::as_str).collect();
        let node_cert = ca.issue("node", &names)?;
        Ok(Self {
            auth_token: format!("lab-client-{tag}"),
            cluster_secret: format!("lab-cluster-{tag}"),
            admin_token: format!("lab-admin-{tag}"),
            ca: std::sync::Arc::new(ca),
            node_cert,
        })
    }

    /// The flags every node is started with: the client token, the cluster secret, the
    /// admin token, and TLS on the client port (peers use it too).
    pub fn node_args(&self) -> Vec<String> {
        let path = |p: &std::path::Path| p.display().to_string();
        vec![
            "--auth-token".into(),
            self.auth_token.clone(),
            "--cluster-secret".into(),
            self.cluster_secret.clone(),
            "--admin-token".into(),
            self.admin_token.clone(),
            "--tls-cert".into(),
            path(&self.node_cert.cert),
            "--tls-key".into(),
            path(&self.node_cert.key),
            "--tls-ca".into(),
            path(&self.ca.ca_file()),
        ]
    }

    /// What every client adds to its connection string (`;key=value...`).
    pub fn client_options(&self) -> String {
        format!(";authToken={}{}", self.auth_token, self.tls_options())
    }

    /// The TLS part of [`Security::client_options`] alone: what a client without the
    /// token (an attacker, in tests) still needs to reach the nodes' TLS ports.
    pub fn tls_options(&self) -> String {
        format!(";useSecure=true;tlsCaFile={}", self.ca.ca_file().display())
    }
}

/// Node processes on hosts `0..n` of a lab, and host `n` for clients. Nodes are killed
/// (by process id) before the lab's namespaces are removed: fields drop in order.
#[derive(Debug)]
pub struct HostCluster {
    nodes: Vec<NodeProcess>,
    lab: Lab,
    security: Security,
}

impl HostCluster {
    /// Builds a lab of `n` node hosts and a client host, starts a node on each node host
    /// (the first bootstraps, the others join through the ones before them) with `extra`
    /// arguments, and waits until the cluster has settled with every partition on
    /// `min(n, 3)` nodes. `Ok(None)` when the machine cannot build a lab and the test is
    /// skipped (see [`lab_or_skip`]).
    pub async fn start(
        test: &str,
        bin: &str,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Option<Self>> {
        let Some(lab) = lab_or_skip(test, n + 1)? else {
            return Ok(None);
        };
        let ips: Vec<String> = (0..n).map(|i| lab.host(i).addr().to_string()).collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            security: Security::generate(&ips)?,
            lab,
        };
        for i in 0..n {
            let addr = cluster.addr(i);
            let mut args = cluster.security.node_args();
            args.extend(["--advertise".to_string(), addr.clone()]);
            args.extend(TIMING_ARGS.iter().map(|s| s.to_string()));
            args.extend(extra.iter().map(|s| s.to_string()));
            if i > 0 {
                let join: Vec<String> = (0..i).map(|j| cluster.addr(j)).collect();
                args.extend(["--join".to_string(), join.join(",")]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let host = cluster.lab.host(i);
            let node = NodeProcess::start_through(&host.exec_prefix(), bin, &addr, &args)
                .with_context(|| format!("node {i} on {}", host.ns()))?;
            cluster.nodes.push(node);
        }
        cluster
            .wait_settled(n, Some(n.min(3)), DEADLINE * 3)
            .await
            .context("the new cluster did not settle")?;
        Ok(Some(cluster))
    }

    /// The lab, to cut and heal links.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The credentials the nodes were started with.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Nodes started.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s process.
    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    /// The host node `i` runs on.
    pub fn node_host(&self, i: usize) -> &Host {
        self.lab.host(i)
    }

    /// The host for clients (no node runs there).
    pub fn client_host(&self) -> &Host {
        self.lab.host(self.nodes.len())
    }

    /// Where node `i` listens and is reached (`ADDR:PORT` on its host).
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{PORT}", self.lab.host(i).addr())
    }

    /// Every node's address, by index.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.addr(i)).collect()
    }

    /// A connection string naming the nodes `gateways`, with the credentials and `extra`.
    pub fn connection_string_to(&self, gateways: &[usize], extra: &str) -> String {
        let addrs: Vec<String> = gateways.iter().map(|i| self.addr(*i)).collect();
        format!(
            "bootstrapGateways={}{}{extra}",
            addrs.join(","),
            self.security.client_options()
        )
    }

    /// A connection string naming every node, with the credentials and `extra`.
    pub fn connection_string(&self, extra: &str) -> String {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.connection_string_to(&all, extra)
    }

    /// Connects a client on the client host and runs `f` with it there, for up to
    /// `deadline`.
    pub async fn with_client<T, F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        f: F,
    ) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(GridClient) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let cs = self.connection_string(QUERY_OPTS);
        self.client_host()
            .run(what, move || async move {
                let client = GridClient::connect(&cs).await?;
                f(client).await
            })?
            .join(deadline)
            .await
    }

    /// Waits, from the client host, until `expected` nodes are active, every node
    /// answers with the map's epoch and nothing unsettled, every partition has a leader,
    /// and with `replicas` every partition is on that many active nodes.
    pub async fn wait_settled(
        &self,
        expected: usize,
        replicas: Option<usize>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let addrs = self.addrs();
        self.with_client("settle", deadline + DEADLINE, move |client| async move {
            wait_settled_from(&client, &addrs, expected, replicas, deadline).await
        })
        .await
    }

    /// Index of the node leading the most partitions right now.
    pub async fn busiest_leader(&self) -> anyhow::Result<usize> {
        let addrs = self.addrs();
        self.with_client("busiest leader", DEADLINE, move |client| async move {
            let mut best: Option<(usize, u32)> = None;
            for (i, addr) in addrs.iter().enumerate() {
                let led = client.node_status(addr).await?.partitions_led;
                if best.is_none_or(|(_, most)| led > most) {
                    best = Some((i, led));
                }
            }
            best.map(|(i, _)| i).context("no node answered")
        })
        .await
    }
}
