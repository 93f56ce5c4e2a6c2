//! `gridctl`: the grid from the command line. Lives in the library so test binaries can
//! run it as a real process.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::connstr::Gateway;
use crate::{ClientError, GridClient, LockOptions, LockResult, RemoteRead, Timeout};
use clap::{Parser, Subcommand};
use grid_proto::{NodeStatus, PartitionMap};

/// Command-line client of the data grid.
///
/// Exit status: 0 on success (also when the reader of stdout goes away early, as with
/// `gridctl status | head -1`); 1 when the object is not found (or, for `lock`, locked by
/// someone else), with a one-line message on stderr; 2 on any error, with a one-line
/// message on stderr.
#[derive(Debug, Parser)]
#[command(name = "gridctl", version)]
struct Cli {
    /// Connection string, e.g. "bootstrapGateways=127.0.0.1:7210;authToken=...".
    #[arg(
        long,
        env = "GRID_CONNECTION",
        default_value = "bootstrapGateways=127.0.0.1:7210",
        hide_env_values = true
    )]
    connect: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the cluster: nodes, replicas and leaders per node, objects, the map epoch, and
    /// how replication is doing (nodes down, partitions short of replicas or moving).
    /// Every node is asked at once, each within the connection string's timeouts.
    Status,
    /// Store a value (from VALUE, or from stdin when VALUE is omitted or "-").
    Put {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The value; "-" or nothing reads stdin, so large or binary values work.
        value: Option<String>,
        /// Expire the object after this long, e.g. 30s or 20m (from the write; with
        /// --sliding, from the last access).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Make --ttl a sliding timeout: every access restarts it.
        #[arg(long, requires = "ttl")]
        sliding: bool,
    },
    /// Write the value to stdout.
    Get {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// If the object is not at this site, pull it from these sites (names as the
        /// nodes' --remote-store), in order; it then becomes primary here.
        #[arg(long, value_delimiter = ',')]
        remote_stores: Vec<String>,
    },
    /// Remove an object.
    Remove {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The lock id, if the object is locked by you.
        #[arg(long)]
        lock_id: Option<u64>,
    },
    /// Lock an object and print the lock id.
    Lock {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// Wait up to this long if someone else holds the lock, e.g. 5s.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wait: Duration,
        /// Lease after which the lock frees itself (default: the node's, 90s).
        #[arg(long, value_parser = humantime::parse_duration)]
        lease: Option<Duration>,
    },
    /// Release a lock.
    Unlock {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The lock id printed by `lock`.
        lock_id: u64,
    },
    /// Register for a namespace's events and print one line per event,
    /// `<cause> <key> <bytes>` (cause: expired or low-memory), acknowledging each, until
    /// interrupted. Several of these share the events: each goes to one of them.
    Events {
        /// Namespace.
        ns: String,
    },
}

/// How a command ended, beyond success.
enum Failure {
    /// An expected negative outcome (exit 1).
    Negative(String),
    /// An error (exit 2).
    Error(String),
    /// Whoever read stdout stopped reading: nothing more to say (exit 0, silently).
    Closed,
}

/// Standard output, where a reader that went away ends the command quietly instead of
/// panicking (`println!` panics on a closed pipe).
struct Out(std::io::Stdout);

impl Out {
    fn new() -> Self {
        Out(std::io::stdout())
    }

    /// Writes one line.
    fn line(&mut self, text: impl std::fmt::Display) -> Result<(), Failure> {
        let mut out = self.0.lock();
        writeln!(out, "{text}").map_err(write_failure)
    }

    /// Writes bytes as they are, flushed.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let mut out = self.0.lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(write_failure)
    }
}

fn write_failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Error(format!("cannot write to stdout: {e}"))
    }
}

/// One line on stderr; a closed stderr is ignored (there is nobody left to tell).
fn complain(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotFound => Failure::Negative("not found".into()),
            other => Failure::Error(other.to_string()),
        }
    }
}

/// Parses the command line, runs one command, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain(format_args!("gridctl: cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let mut out = Out::new();
    let result = runtime.block_on(run(cli, &mut out));
    // Flushed here, so a reader gone by now also ends quietly.
    let result = result.and_then(|()| out.0.lock().flush().map_err(write_failure));
    match result {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Negative(msg)) => {
            complain(msg);
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            complain(format_args!("gridctl: {msg}"));
            ExitCode::from(2)
        }
    }
}

/// What one node said when asked for its status.
type Answer = Result<NodeStatus, String>;

/// Longest one node may take to answer `status`: the connection string's connect plus
/// request timeouts, so a node that stopped answering costs that once, not once per row.
fn status_limit(client: &GridClient) -> Duration {
    client.config().connect_timeout + client.config().request_timeout
}

/// Asks every address at once, each within `limit`.
async fn ask_all(
    client: &GridClient,
    addrs: impl Iterator<Item = String>,
    limit: Duration,
) -> HashMap<String, Answer> {
    let asks = addrs.map(|addr| async move {
        let answer = match tokio::time::timeout(limit, client.node_status(&addr)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        (addr, answer)
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect()
}

/// The partition map of the node at `addr`, within `limit`.
async fn map_from(client: &GridClient, addr: &str, limit: Duration) -> Option<PartitionMap> {
    let (host, port) = addr.rsplit_once(':')?;
    let mut config = client.config().clone();
    config.gateways = vec![Gateway {
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port: port.parse().ok()?,
    }];
    let fresh = tokio::time::timeout(limit, GridClient::with_config(config))
        .await
        .ok()?
        .ok()?;
    fresh.partition_map()
}

/// Prints the cluster: every node with its replicas (from the map), the partitions it
/// leads and the objects in them, the map epoch, and how replication is doing. Every
/// node is asked at once, each within [`status_limit`]; the newest map any node has wins
/// (a node cut off from the cluster keeps an old one).
async fn print_status(client: &GridClient, out: &mut Out) -> Result<(), Failure> {
    let mut map = client
        .partition_map()
        .ok_or_else(|| Failure::Error("no partition map".into()))?;
    let limit = status_limit(client);
    let mut seen = ask_all(client, map.nodes.iter().map(|n| n.addr.clone()), limit).await;
    let newest = seen
        .iter()
        .filter_map(|(addr, a)| a.as_ref().ok().map(|s| (s.map_epoch, addr.clone())))
        .max();
    if let Some((epoch, addr)) = newest.filter(|(epoch, _)| *epoch > map.epoch) {
        if let Some(fresh) = map_from(client, &addr, limit).await {
            if fresh.epoch >= epoch {
                map = fresh;
                let unasked: Vec<String> = map
                    .nodes
                    .iter()
                    .map(|n| n.addr.clone())
                    .filter(|a| !seen.contains_key(a))
                    .collect();
                seen.extend(ask_all(client, unasked.into_iter(), limit).await);
            }
        }
    }
    print_nodes(&map, &seen, out)?;
    print_sites(&map, &seen, out)
}

/// One row per node, then the totals and a line on replication.
fn print_nodes(
    map: &PartitionMap,
    seen: &HashMap<String, Answer>,
    out: &mut Out,
) -> Result<(), Failure> {
    let mut replicas = BTreeMap::<u64, usize>::new();
    for set in &map.replicas {
        for id in set {
            *replicas.entry(*id).or_default() += 1;
        }
    }
    let active = map.nodes.iter().filter(|n| n.active).count();
    out.line(format_args!(
        "cluster: map epoch {}, {} partitions, {} nodes ({active} active)",
        map.epoch,
        map.partitions,
        map.nodes.len(),
    ))?;
    out.line(format_args!(
        "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  version",
        "node", "address", "state", "replicas", "leads", "objects", "bytes", "locked", "unsettled"
    ))?;
    let (mut objects, mut bytes, mut unsettled, mut down_alive) = (0u64, 0u64, 0u64, 0usize);
    for node in &map.nodes {
        let answer = seen.get(&node.addr);
        let own = answer
            .and_then(|a| a.as_ref().ok())
            .filter(|s| s.node_id == node.id);
        if !node.active {
            // Marked down or left: it holds nothing in the map. Alive under its id, it is
            // out of the cluster and asks to be back by itself.
            let replaced = map
                .nodes
                .iter()
                .find(|o| o.active && o.id != node.id && o.addr == node.addr);
            let (state, detail) = match (replaced, own) {
                (Some(by), _) => ("gone", format!("replaced by node {}", by.id)),
                (None, Some(s)) => {
                    down_alive += 1;
                    (
                        "down",
                        format!(
                            "alive, out of the cluster (its map: epoch {}); rejoins by itself once the control leader reaches it",
                            s.map_epoch
                        ),
                    )
                }
                (None, None) => ("gone", String::new()),
            };
            out.line(format_args!(
                "{:>4}  {:<22} {:<8} {:>8}  {detail}",
                node.id, node.addr, state, 0
            ))?;
            continue;
        }
        let held = replicas.get(&node.id).copied().unwrap_or(0);
        match (own, answer) {
            (Some(s), _) => {
                objects += s.objects;
                bytes += s.value_bytes;
                unsettled += u64::from(s.unsettled);
                let behind = if s.map_epoch < map.epoch {
                    format!("  (map epoch {}: catching up)", s.map_epoch)
                } else {
                    String::new()
                };
                out.line(format_args!(
                    "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  {}{behind}",
                    node.id,
                    node.addr,
                    "active",
                    held,
                    s.partitions_led,
                    s.objects,
                    s.value_bytes,
                    s.locked,
                    s.unsettled,
                    s.server_version
                ))?;
            }
            (None, Some(Ok(s))) => out.line(format_args!(
                "{:>4}  {:<22} {:<8} {:>8}  answers as node {}",
                node.id, node.addr, "active", held, s.node_id
            ))?,
            (None, other) => {
                let why = match other {
                    Some(Err(e)) => e.clone(),
                    _ => "not asked".to_string(),
                };
                out.line(format_args!(
                    "{:>4}  {:<22} {:<8} {:>8}  unreachable: {why}",
                    node.id, node.addr, "active", held
                ))?
            }
        }
    }
    out.line(format_args!("total: {objects} objects, {bytes} bytes"))?;
    out.line(replication_line(map, unsettled, down_alive))
}

/// How replication is doing: replicas per partition in the map, nodes down, and groups
/// whose Raft members do not match the map yet (data moving).
fn replication_line(map: &PartitionMap, unsettled: u64, down_alive: usize) -> String {
    let mut sizes = BTreeMap::<usize, usize>::new();
    for set in &map.replicas {
        *sizes.entry(set.len()).or_default() += 1;
    }
    let sizes: Vec<String> = sizes
        .iter()
        .rev()
        .map(|(replicas, partitions)| format!("{partitions} with {replicas}"))
        .collect();
    let mut line = format!("replication: partitions by replicas: {}", sizes.join(", "));
    let down = map.nodes.iter().filter(|n| !n.active).count();
    if down > 0 {
        line += &format!("; {down} nodes not active ({down_alive} alive and rejoining)");
    }
    if unsettled > 0 {
        line += &format!("; moving: {unsettled} replicas not settled yet");
    } else {
        line += "; settled";
    }
    line
}

/// The site and its remote stores, as the first answering active node sees them.
fn print_sites(
    map: &PartitionMap,
    seen: &HashMap<String, Answer>,
    out: &mut Out,
) -> Result<(), Failure> {
    let first = map
        .nodes
        .iter()
        .filter(|n| n.active)
        .find_map(|n| seen.get(&n.addr).and_then(|a| a.as_ref().ok()));
    let Some(s) = first else {
        return Ok(());
    };
    if s.site.is_empty() {
        return out.line("site: none (geo replication off)");
    }
    out.line(format_args!("site: {}", s.site))?;
    for r in &s.remote_stores {
        out.line(format_args!(
            "remote store {}: {} ({}) [{}]",
            r.name,
            if r.reachable {
                "reachable"
            } else {
                "unreachable"
            },
            r.detail,
            r.addrs.join(",")
        ))?;
    }
    Ok(())
}

fn read_value(value: Option<String>) -> Result<Vec<u8>, Failure> {
    match value.as_deref() {
        Some(v) if v != "-" => Ok(v.as_bytes().to_vec()),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Error(format!("cannot read the value from stdin: {e}")))?;
            Ok(buf)
        }
    }
}

async fn run(cli: Cli, out: &mut Out) -> Result<(), Failure> {
    let client = GridClient::connect(&cli.connect).await?;
    match cli.command {
        Command::Status => print_status(&client, out).await?,
        Command::Put {
            ns,
            key,
            value,
            ttl,
            sliding,
        } => {
            let value = read_value(value)?;
            let timeout = match ttl {
                None => Timeout::None,
                Some(d) if sliding => Timeout::Sliding {
                    ms: d.as_millis() as u64,
                },
                Some(d) => Timeout::Absolute {
                    ms: d.as_millis() as u64,
                },
            };
            let version = client.put(&ns, &key, value, timeout).await?;
            out.line(format_args!("version {version}"))?;
        }
        Command::Get {
            ns,
            key,
            remote_stores,
        } => {
            let object = if remote_stores.is_empty() {
                client.get(&ns, &key).await?.ok_or(ClientError::NotFound)?
            } else {
                match client.get_remote(&ns, &key, &remote_stores).await? {
                    RemoteRead::Found(object) => object,
                    RemoteRead::NotFound { reasons } if reasons.is_empty() => {
                        return Err(ClientError::NotFound.into())
                    }
                    RemoteRead::NotFound { reasons } => {
                        return Err(Failure::Negative(format!(
                            "not found ({})",
                            reasons.join("; ")
                        )))
                    }
                    RemoteRead::Locked {
                        lock_id,
                        lock_age_ms,
                    } => {
                        return Err(ClientError::Locked {
                            lock_id,
                            lock_age_ms,
                        }
                        .into())
                    }
                }
            };
            out.bytes(&object.value)?;
        }
        Command::Remove { ns, key, lock_id } => {
            if !client.remove(&ns, &key, lock_id).await? {
                return Err(ClientError::NotFound.into());
            }
            out.line("removed")?;
        }
        Command::Lock {
            ns,
            key,
            wait,
            lease,
        } => {
            let options = LockOptions {
                wait,
                lease,
                ..LockOptions::default()
            };
            match client.lock(&ns, &key, options).await? {
                LockResult::Acquired { lock_id, .. } => out.line(lock_id)?,
                LockResult::Locked {
                    lock_id,
                    lock_age_ms,
                } => {
                    return Err(Failure::Negative(format!(
                        "locked by lock id {lock_id} for {lock_age_ms} ms"
                    )))
                }
                LockResult::NotFound => return Err(ClientError::NotFound.into()),
            }
        }
        Command::Unlock { ns, key, lock_id } => {
            client.unlock(&ns, &key, lock_id).await?;
            out.line("unlocked")?;
        }
        Command::Events { ns } => print_events(&client, &ns, out).await?,
    }
    Ok(())
}

async fn print_events(client: &GridClient, ns: &str, out: &mut Out) -> Result<(), Failure> {
    let mut events = client.subscribe(ns).await?;
    loop {
        let delivery = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = events.next() => next.ok_or_else(|| Failure::Error("the event subscription stopped".into()))?,
        };
        let e = &delivery.event;
        let line = format!(
            "{} {} {}",
            e.cause,
            String::from_utf8_lossy(&e.obj.key),
            e.value.len()
        );
        // Printed (and flushed) before the ack: an event is never acknowledged unseen.
        if out.bytes(format!("{line}\n").as_bytes()).is_err() {
            return Ok(());
        }
        delivery.ack().await?;
    }
}
