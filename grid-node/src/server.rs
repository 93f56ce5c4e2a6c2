//! Starting and stopping a node: the listeners, the accept loop, the ticker and the
//! admin endpoint, all owned by one supervisor and stopped by one token.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::clock::Clock;
use crate::cluster::durable::DataDir;
use crate::cluster::runtime::{ClusterConfig, ClusterError, ClusterNode, MemoryLimit};
use crate::config::{ConfigError, NodeConfig};
use crate::conn::{self, ConnContext};
use crate::geo::GeoService;
use crate::log_limit::RateLimit;
use crate::metrics::inc;
use crate::node::Node;
use crate::tls;
use grid_client::NodeCredentials;

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node could not bootstrap or join its cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An address could not be bound.
    #[error("cannot listen on {addr} (--{flag}): {source}")]
    Bind {
        /// The flag naming the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// Geo replication could not start (certificates, address, token).
    #[error("geo replication: {0}")]
    Geo(String),
    /// The data directory cannot be opened.
    #[error("--data-dir: {0}")]
    DataDir(String),
    /// The client port's TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] grid_client::tls::TlsError),
}

/// How often a repeated warning (refused connections, failed authentications) is logged.
const LOG_REPEAT: Duration = Duration::from_secs(10);

/// A node serving in this process. Dropping it does not stop it; call
/// [`RunningNode::shutdown`].
#[derive(Debug)]
pub struct RunningNode {
    client_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    geo_addr: Option<SocketAddr>,
    node: Arc<Node>,
    shutdown: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl RunningNode {
    /// Where clients connect (the real port when 0 was asked for).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where other sites reach this node, if geo replication is on.
    pub fn geo_addr(&self) -> Option<SocketAddr> {
        self.geo_addr
    }

    /// Where the admin endpoint listens, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The node's state, for in-process inspection.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets connections flush, stops every task, and returns when all
    /// have ended (bounded by the configured grace).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the node has stopped (after its token was cancelled).
    pub async fn wait(self) {
        let _ = self.supervisor.await;
    }
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { flag, addr, source })
}

/// Validates the config, binds the listeners and starts serving.
pub async fn start(config: NodeConfig, clock: Arc<dyn Clock>) -> Result<RunningNode, StartError> {
    config.validate()?;
    let listener = bind("listen", config.listen).await?;
    let client_addr = listener.local_addr().map_err(|source| StartError::Bind {
        flag: "listen",
        addr: config.listen,
        source,
    })?;
    let admin_listener = match config.admin {
        Some(addr) => Some(bind("admin", addr).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let grace = config.shutdown_grace;
    let tick = config.tick_interval;
    let (acceptor, peer_tls) = match &config.tls {
        Some(files) => (
            Some(tls::server_config(files)?),
            Some(tls::peer_client(files)?),
        ),
        None => (None, None),
    };
    let peer_key = config.peer_key();
    let data = match &config.data_dir {
        Some(dir) => Some(Arc::new(
            DataDir::open(dir, config.fsync, config.disk_reserve)
                .map_err(|e| StartError::DataDir(e.to_string()))?,
        )),
        None => None,
    };
    let cluster = Arc::new(ClusterNode::new(
        ClusterConfig {
            advertise: config
                .advertise
                .clone()
                .unwrap_or_else(|| client_addr.to_string()),
            join: config.join.clone(),
            partitions: config.partitions,
            replicas: config.replicas,
            down_after: config.down_after,
            heartbeat: config.raft_heartbeat,
            election_timeout: config.raft_election_timeout,
            lease_reads: config.lease_reads,
            peer_key: peer_key.clone(),
            peer_tls: peer_tls.clone(),
            snapshot_logs: config.raft_snapshot_logs,
            snapshot_bytes: config.raft_snapshot_bytes,
            partition: config.partition_config(),
            event_ack_timeout: config.event_ack_timeout,
            memory: MemoryLimit {
                max: config.max_memory,
                evict: config.evict_on_low_memory,
            },
            data,
        },
        Arc::clone(&clock),
    )?);
    let geo = match &config.geo {
        Some(geo_config) => {
            let cluster_addr = config
                .advertise
                .clone()
                .unwrap_or_else(|| client_addr.to_string());
            let service = GeoService::bind(
                geo_config.clone(),
                &cluster_addr,
                NodeCredentials {
                    key: peer_key.clone(),
                    tls: peer_tls,
                },
                Arc::clone(&clock),
            )
            .map_err(|e| StartError::Geo(e.to_string()))?;
            Some(Arc::new(service))
        }
        None => None,
    };
    let geo_addr = geo.as_ref().and_then(|g| g.local_addr());
    let node = Arc::new(Node::new(config, Arc::clone(&cluster), clock, geo.clone()));
    let shutdown = CancellationToken::new();

    let mut tasks = JoinSet::new();
    let ctx = ConnContext {
        node: Arc::clone(&node),
        listen: client_addr.to_string(),
        shutdown: shutdown.clone(),
        tls: acceptor,
        peer_key,
        unauthenticated: Arc::default(),
        auth_failures: Arc::new(RateLimit::new(LOG_REPEAT)),
    };
    let workers = node.workers().clone();
    tasks.spawn(workers.add("accept").serve({
        let ctx = ctx.clone();
        async move {
            accept_loop(listener, ctx, grace).await;
            Ok(())
        }
    }));
    // Peers must reach this node while it joins, so the listener is up first.
    if let Err(e) = cluster.start().await {
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        return Err(e.into());
    }
    let runtime = {
        let (cluster, shutdown, workers) =
            (Arc::clone(&cluster), shutdown.clone(), workers.clone());
        async move { cluster.run(tick, shutdown, &workers).await }
    };
    tasks.spawn(runtime);
    if let Some(listener) = admin_listener {
        tasks.spawn(workers.add("admin").serve(admin::serve(listener, ctx)));
    }
    if let Some(geo) = geo {
        tasks.spawn(geo.run(Arc::clone(&cluster), shutdown.clone(), workers));
    }
    let supervisor = tokio::spawn(async move {
        while let Some(result) = tasks.join_next().await {
            if let Err(err) = result {
                tracing::error!(error = %err, "a node task failed");
            }
        }
    });
    tracing::info!(client = %client_addr, admin = ?admin_addr, "node serving");
    Ok(RunningNode {
        client_addr,
        admin_addr,
        geo_addr,
        node,
        shutdown,
        supervisor,
    })
}

async fn accept_loop(listener: TcpListener, ctx: ConnContext, grace: Duration) {
    let mut conns = JoinSet::new();
    // A flood of refusals is one line per period, with the count held back.
    let refusals = RateLimit::new(LOG_REPEAT);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let node = &ctx.node;
                    while conns.try_join_next().is_some() {}
                    let limits = &node.config().limits;
                    let unproven = ctx.unauthenticated.load(Ordering::Acquire);
                    if conns.len() >= limits.max_connections
                        || unproven >= limits.max_unauthenticated
                    {
                        inc(&node.metrics.connections_refused_total);
                        let limit = if unproven >= limits.max_unauthenticated {
                            "--max-unauthenticated"
                        } else {
                            "--max-connections"
                        };
                        if let Some(more) = refusals.allow(limit, std::time::Instant::now()) {
                            tracing::warn!(%from, earlier_unlogged = more, "connection refused: {limit} reached");
                        }
                        drop(stream);
                        continue;
                    }
                    ctx.unauthenticated.fetch_add(1, Ordering::AcqRel);
                    tracing::debug!(%from, "connection accepted");
                    conns.spawn(conn::serve(stream, from, ctx.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} });
    if drained.await.is_err() {
        conns.abort_all();
    }
}
