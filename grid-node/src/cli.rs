//! The `grid-node` command line. Lives in the library so test binaries can run a real
//! node process from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use grid_client::{GridClient, LockOptions, LockResult, Timeout};

use crate::clock::SystemClock;
use crate::config::{NodeConfig, DEFAULT_PORT};
use crate::server::{self, RunningNode};

/// A node of the in-memory data grid.
///
/// Serves objects (bytes with versions, timeouts and exclusive locks) to grid clients over
/// TCP. Without --auth-token the node only listens on loopback addresses; with it, every
/// client must present the token first. Stop it with Ctrl-C or SIGTERM: it stops
/// accepting, lets open connections flush their replies, and exits.
#[derive(Debug, Parser)]
#[command(name = "grid-node", version, args_conflicts_with_subcommands = true)]
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
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// Nodes to start. Multi-node clusters need the replicated cluster (coming next);
    /// until then only 1 is accepted.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Client port of the first node.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Check the grid and exit instead of serving until Ctrl-C.
    #[arg(long)]
    check_only: bool,
}

impl ServeArgs {
    fn config(&self) -> NodeConfig {
        NodeConfig {
            listen: self.listen,
            admin: self.admin,
            auth_token: self.auth_token.clone(),
            max_value_bytes: self.max_value_bytes,
            partitions: self.partitions,
            default_lock_lease: self.lock_lease,
            ..NodeConfig::default()
        }
    }
}

/// Parses the command line and runs the node until a signal stops it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve.config()).await,
            Some(Command::Local(args)) => local(args).await,
        }
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    let node = server::start(config, Arc::new(SystemClock)).await?;
    // One machine-readable line on stdout, for scripts and test harnesses.
    println!(
        "grid-node ready client={} admin={}",
        node.client_addr(),
        node.admin_addr()
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
    tracing::info!("signal received; shutting down");
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
    if args.nodes != 1 {
        bail!(
            "--nodes {}: this build runs single-node grids only; multi-node clusters arrive with the replicated cluster",
            args.nodes
        );
    }
    let config = NodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], args.port)),
        ..NodeConfig::default()
    };
    let signals = Signals::install()?;
    let node = start(config).await?;
    let connection = format!("bootstrapGateways={}", node.client_addr());
    println!("connection string: {connection}");
    let checked = self_check(&connection).await;
    if let Err(err) = &checked {
        println!("self-check FAILED: {err:#}");
    }
    if args.check_only || checked.is_err() {
        node.shutdown().await;
        return checked;
    }
    println!("try: GRID_CONNECTION='{connection}' gridctl get demo greeting");
    println!("serving until Ctrl-C");
    stop_on_signal(node, signals).await
}

/// Shows the grid working through the real client: write, read, lock, unlock.
async fn self_check(connection: &str) -> anyhow::Result<()> {
    let client = GridClient::connect(connection).await?;
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
