//! The `grid-node` command line. Lives in the library so test binaries can run a real
//! node process from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use grid_client::{GridClient, LockOptions, LockResult, Timeout};

use crate::clock::SystemClock;
use crate::config::{NodeConfig, NodeTls, DEFAULT_PORT};
use crate::geo::GeoConfig;
use crate::limits::ConnLimits;

mod config_file;
use crate::server::{self, RunningNode};

/// A node of the in-memory data grid.
///
/// Serves objects (bytes with versions, timeouts and exclusive locks) to grid clients over
/// TCP. Without --join it bootstraps a new cluster; with --join it joins one through any
/// member. Each partition is a Raft group of --replicas nodes, so acknowledged writes
/// survive the loss of a node.
///
/// Security: clients present --auth-token; nodes prove --cluster-secret to each other
/// (clients never hold it); operators present --admin-token to the admin port. Without
/// them the node stays on loopback. --tls-cert/--tls-key put TLS on the client port.
///
/// Stop it with Ctrl-C or SIGTERM: in a cluster with other nodes it first leaves
/// gracefully (its replicas and leadership move to the others, up to 60 s), then stops
/// accepting, lets open connections flush their replies, and exits.
#[derive(Debug, Parser)]
#[command(
    name = "grid-node",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a grid on loopback for development, check it works, and print its
    /// connection string. Serves until Ctrl-C.
    Local(LocalArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Read settings from this TOML file first: one key per flag without its dashes
    /// (site = "east", remote-store = ["west=10.0.1.5:7300"]); flags on the command line
    /// override them.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address for client connections.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Address for the admin HTTP endpoint (/metrics in Prometheus text, /health).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Secret every client must present (connection string key authToken). Required to
    /// listen on a non-loopback address.
    #[arg(long, env = "GRID_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Secret the nodes of this cluster prove to each other (at least 16 bytes; clients
    /// never hold it). Required when the node listens, advertises or joins beyond
    /// loopback; give every node of the cluster the same one.
    #[arg(long, env = "GRID_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Bearer token for every admin HTTP route (Authorization: Bearer T). Required for an
    /// --admin address beyond loopback.
    #[arg(long, env = "GRID_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// PEM certificate chain for TLS on the client port (clients then need
    /// useSecure=true and tlsCaFile). Peers use TLS to this port too.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by these PEM certificates (mutual TLS); other
    /// nodes present their --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// PEM certificates trusted for the other nodes' ports (default: --tls-cert, when it
    /// is a single certificate; required when it holds a chain).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// A connection must authenticate within this long, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    hello_timeout: Duration,
    /// An authenticated connection with nothing in flight and no event registration is
    /// closed after this long without a request, e.g. 5m.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Connections open at once; more are refused (grid_connections_refused_total).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections that have not authenticated yet; more are refused at accept.
    #[arg(long, default_value_t = 1_000)]
    max_unauthenticated: usize,
    /// Requests one connection may have running at once; past it the node reads no
    /// more from it until one finishes.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Requests one connection may have waiting in lock queues.
    #[arg(long, default_value_t = 256)]
    max_lock_waits: usize,
    /// Bytes of replies a connection may leave unread before the node stops reading its
    /// requests.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    reply_queue_bytes: usize,
    /// A client that reads none of its replies for this long is disconnected, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
    /// Largest value accepted, in bytes; larger writes get a TooLarge error.
    #[arg(long, default_value_t = grid_proto::limits::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Partitions the key space is split into.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Lock lease when a client names none, e.g. 90s or 2m; a lock older than this frees
    /// itself.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    lock_lease: Duration,
    /// Join the cluster through these members (comma-separated host:port). Without it the
    /// node bootstraps a new cluster.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Replicas per partition of a new cluster (fewer while it has fewer nodes).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Address other nodes and clients reach this node at (default: the --listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// How long a node may be unreachable before its partitions are re-replicated
    /// elsewhere, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    down_after: Duration,
    /// Raft election timeout (lower bound; the upper is twice this, and is also the
    /// leader lease: a follower grants no other candidate its vote until that long after
    /// its leader was last heard). A leader whose process is gone (its port refuses
    /// connections) is succeeded after the lease; one that is cut off or paused, after the
    /// lease plus this timeout. E.g. 500ms.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    raft_election_timeout: Duration,
    /// Answer reads on a partition leader from its own state while its leader lease holds
    /// (40% of twice the election timeout after a quorum last confirmed it), instead of
    /// confirming leadership with a heartbeat round per read; reads fall back to that round
    /// when the lease has lapsed. "false" confirms every read.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    lease_reads: bool,
    /// Raft log entries between snapshots of a group. A snapshot costs nothing to take
    /// (it is the live state, encoded only when a follower needs it); after one, the
    /// entries it covers are released but the last 2 x N, so the log holds about 3 x N
    /// entries per group beside the values. A replica further behind catches up from a
    /// snapshot; while one does, its leader holds the next snapshot back (up to 32 x N
    /// entries) so the entries after the one sent stay.
    #[arg(long, default_value_t = 64)]
    raft_snapshot_logs: u64,
    /// Testing only: serve POST /faults/block on the admin port to cut this node off from
    /// the listed peers. Never enable in production.
    #[arg(long)]
    fault_injection: bool,
    /// How long a client registered for events has to acknowledge one before it is
    /// delivered to another client of the namespace, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    event_ack_timeout: Duration,
    /// Value bytes this node may hold over all its partition replicas. Past it the least
    /// recently used objects are evicted (each with a low-memory event), or, with
    /// --evict-on-low-memory false, writes fail with a LowMemory error. Default: no limit.
    #[arg(long)]
    max_memory: Option<u64>,
    /// Past --max-memory: evict least recently used objects (true) or refuse writes
    /// (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    evict_on_low_memory: bool,
    /// This cluster's site name, for geo replication (with --geo-listen).
    #[arg(long)]
    site: Option<String>,
    /// Address (UDP, QUIC) where other sites reach this node; turns geo replication on.
    /// Without --geo-token and certificates, loopback addresses only.
    #[arg(long, requires = "site")]
    geo_listen: Option<SocketAddr>,
    /// A site this node may pull objects from: NAME=host:port[,host:port...] (its nodes'
    /// --geo-listen addresses). Repeatable.
    #[arg(
        long = "remote-store",
        value_name = "NAME=ADDRS",
        requires = "geo_listen"
    )]
    remote_stores: Vec<String>,
    /// Secret every site presents on geo links (required beyond loopback).
    #[arg(
        long,
        env = "GRID_GEO_TOKEN",
        hide_env_values = true,
        requires = "geo_listen"
    )]
    geo_token: Option<String>,
    /// PEM certificate chain of this node on geo links (default: self-signed, loopback
    /// only).
    #[arg(long, requires_all = ["geo_key", "geo_listen"])]
    geo_cert: Option<std::path::PathBuf>,
    /// PEM private key for --geo-cert.
    #[arg(long, requires = "geo_cert")]
    geo_key: Option<std::path::PathBuf>,
    /// PEM certificates trusted for other sites' nodes (without it, other sites are
    /// reached on loopback only).
    #[arg(long, requires = "geo_listen")]
    geo_ca: Option<std::path::PathBuf>,
    /// Longest one remote store may take to answer a pull before the next is tried.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    geo_timeout: Duration,
    /// Keep every hosted partition's Raft log, vote and snapshot (and the node's
    /// identity) in this directory, so a node restarted with it comes back as the same
    /// member, with its data, and catches up from its own log. Without it everything is
    /// in memory and a restarted node rejoins empty under a new id.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// With --data-dir, when log appends reach the disk. always: synced before a write is
    /// acknowledged, so an acknowledged write is on a majority's disks and survives every
    /// node losing power at once. everysec: synced about once a second; a machine that
    /// loses power loses up to the last second of its appends (a write survives while a
    /// majority of its replicas' machines stay up; a killed process loses nothing).
    /// never: left to the operating system's write-back (as everysec, with a window of
    /// about 30 s).
    #[arg(long, default_value = "always", requires = "data_dir")]
    fsync: crate::disk::FsyncPolicy,
    /// With --data-dir, a partition writes its snapshot file (its whole state) once its
    /// log holds this many value bytes and at least half its state's, or 100000 entries;
    /// a restart replays at most that much log.
    #[arg(long, default_value_t = 16 * 1024 * 1024, requires = "data_dir")]
    raft_snapshot_bytes: u64,
    /// With --data-dir, refuse writes that add data (put, create, update) with a
    /// disk-full error while the data directory's disk has less free space than this;
    /// reads, removes, unlocks and everything already written go on. The reserve covers
    /// the entries the grid still writes meanwhile (locks, touches, expirations) and
    /// snapshot files (one is written only if it leaves half the reserve).
    #[arg(long, default_value_t = 64 * 1024 * 1024, requires = "data_dir")]
    disk_reserve: u64,
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// Nodes to start, on consecutive ports from --port; the first bootstraps the
    /// cluster and the others join it.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Client port of the first node; node i listens on port + i.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Check the grid and exit instead of serving until Ctrl-C.
    #[arg(long)]
    check_only: bool,
}

/// Parses `--remote-store NAME=host:port[,host:port...]`.
fn parse_remote_store(text: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (name, addrs) = text.split_once('=').with_context(|| {
        format!("--remote-store {text}: expected NAME=host:port[,host:port...]")
    })?;
    let addrs: Vec<String> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if name.trim().is_empty() || addrs.is_empty() {
        bail!("--remote-store {text}: expected NAME=host:port[,host:port...]");
    }
    for addr in &addrs {
        addr.parse::<SocketAddr>()
            .with_context(|| format!("--remote-store {text}: '{addr}' is not ip:port"))?;
    }
    Ok((name.trim().to_string(), addrs))
}

impl ServeArgs {
    fn geo(&self) -> anyhow::Result<Option<GeoConfig>> {
        let (Some(site), Some(listen)) = (&self.site, self.geo_listen) else {
            return Ok(None);
        };
        let mut remotes = std::collections::BTreeMap::new();
        for text in &self.remote_stores {
            let (name, addrs) = parse_remote_store(text)?;
            if name == *site {
                bail!("--remote-store {name}: that is this node's own --site");
            }
            remotes.insert(name, addrs);
        }
        Ok(Some(GeoConfig {
            site: site.clone(),
            listen,
            remotes,
            token: self.geo_token.clone(),
            tls: geo_replication::TlsFiles {
                cert: self.geo_cert.clone(),
                key: self.geo_key.clone(),
                ca: self.geo_ca.clone(),
            },
            timeout: self.geo_timeout,
        }))
    }

    fn config(&self) -> anyhow::Result<NodeConfig> {
        Ok(NodeConfig {
            listen: self.listen,
            admin: self.admin,
            auth_token: self.auth_token.clone(),
            cluster_secret: self.cluster_secret.clone(),
            admin_token: self.admin_token.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(NodeTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                    peer_ca: self.tls_ca.clone(),
                }),
                _ => None,
            },
            limits: ConnLimits {
                hello_timeout: self.hello_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                max_unauthenticated: self.max_unauthenticated,
                max_in_flight: self.max_in_flight,
                max_lock_waits: self.max_lock_waits,
                reply_queue_bytes: self.reply_queue_bytes,
                write_timeout: self.write_timeout,
            },
            max_value_bytes: self.max_value_bytes,
            partitions: self.partitions,
            default_lock_lease: self.lock_lease,
            join: self.join.clone(),
            replicas: self.replicas,
            advertise: self.advertise.clone(),
            down_after: self.down_after,
            raft_election_timeout: self.raft_election_timeout,
            lease_reads: self.lease_reads,
            fault_injection: self.fault_injection,
            raft_snapshot_logs: self.raft_snapshot_logs,
            event_ack_timeout: self.event_ack_timeout,
            max_memory: self.max_memory,
            evict_on_low_memory: self.evict_on_low_memory,
            geo: self.geo()?,
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            raft_snapshot_bytes: self.raft_snapshot_bytes,
            disk_reserve: self.disk_reserve,
            ..NodeConfig::default()
        })
    }
}

/// Parses the command line and runs the node until a signal stops it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(config_file::expand(std::env::args().collect())?);
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve.config()?).await,
            Some(Command::Local(args)) => local(args).await,
        }
    })
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // openraft warns on every failed RPC of every group: while a peer is unreachable that
    // is hundreds of lines a second. One line per call site every 30 s says the same.
    let quiet = crate::log_limit::QuietRepeats::new("openraft", Duration::from_secs(30));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(quiet),
        )
        .try_init();
}

async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    let node = server::start(config, Arc::new(SystemClock)).await?;
    // One machine-readable line on stdout, for scripts and test harnesses.
    println!(
        "grid-node ready client={} admin={} geo={}",
        node.client_addr(),
        node.admin_addr()
            .map_or_else(|| "-".to_string(), |a| a.to_string()),
        node.geo_addr()
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    );
    Ok(node)
}

async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let node = start(config).await?;
    stop_on_signal(node, signals).await
}

async fn stop_on_signal(node: RunningNode, signals: Signals) -> anyhow::Result<()> {
    signals.recv().await;
    let cluster = node.node().cluster();
    if cluster.can_leave() {
        // Hand this node's replicas and leadership to the others before going.
        tracing::info!("signal received; leaving the cluster gracefully");
        if let Err(e) = cluster.leave(Duration::from_secs(60)).await {
            tracing::warn!(error = %e, "graceful leave incomplete; stopping anyway");
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM, watched from before the node announces it is ready, so a signal
/// sent right after the ready line is never missed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> anyhow::Result<Self> {
        Ok(Self {})
    }

    #[cfg(unix)]
    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn local(args: LocalArgs) -> anyhow::Result<()> {
    if !(1..=16).contains(&args.nodes) {
        bail!("--nodes {} must be between 1 and 16", args.nodes);
    }
    let signals = Signals::install()?;
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let port = args
            .port
            .checked_add(i as u16)
            .context("--port leaves no room for that many nodes")?;
        let join = nodes
            .first()
            .map(|n: &RunningNode| vec![n.client_addr().to_string()])
            .unwrap_or_default();
        let config = NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            join,
            ..NodeConfig::default()
        };
        nodes.push(start(config).await?);
    }
    let gateways: Vec<String> = nodes.iter().map(|n| n.client_addr().to_string()).collect();
    let connection = format!("bootstrapGateways={}", gateways.join(","));
    println!("connection string: {connection}");
    let checked = self_check(&connection, nodes.len()).await;
    if let Err(err) = &checked {
        println!("self-check FAILED: {err:#}");
    }
    if !args.check_only && checked.is_ok() {
        println!("try: GRID_CONNECTION='{connection}' gridctl status");
        println!("serving until Ctrl-C");
        signals.recv().await;
    }
    for node in nodes.into_iter().rev() {
        node.shutdown().await;
    }
    checked
}

/// Shows the grid working through the real client: every node holds its share of the
/// partitions, then a write, read, lock and unlock.
async fn self_check(connection: &str, nodes: usize) -> anyhow::Result<()> {
    let client = GridClient::connect(connection).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let map = client.partition_map().context("no partition map")?;
        let active = map.nodes.iter().filter(|n| n.active).count();
        let placed = map.replicas.iter().all(|r| r.len() == nodes.min(3));
        if active == nodes && placed {
            println!(
                "cluster: {active} nodes, {} partitions, map epoch {}",
                map.partitions, map.epoch
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the cluster did not form within 60 s ({active} of {nodes} nodes active)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.refresh().await?;
    }
    let version = client
        .put("demo", "greeting", "hello from the grid", Timeout::None)
        .await?;
    println!("put demo/greeting -> version {version}");
    let object = client
        .get("demo", "greeting")
        .await?
        .context("demo/greeting missing right after put")?;
    println!(
        "get demo/greeting -> {:?}",
        String::from_utf8_lossy(&object.value)
    );
    let lock_id = match client
        .lock("demo", "greeting", LockOptions::default())
        .await?
    {
        LockResult::Acquired { lock_id, .. } => lock_id,
        other => bail!("lock demo/greeting: {other:?}"),
    };
    println!("lock demo/greeting -> lock id {lock_id}");
    client.unlock("demo", "greeting", lock_id).await?;
    println!("unlock demo/greeting -> ok");
    let status = client.status().await?;
    println!(
        "status: {} objects, {} partitions, server {}",
        status.objects, status.partitions, status.server_version
    );
    println!("self-check passed");
    Ok(())
}
