//! `gridctl`: the grid from the command line. Lives in the library so test binaries can
//! run it as a real process.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::{ClientError, GridClient, LockOptions, LockResult, RemoteRead, Timeout};
use clap::{Parser, Subcommand};

/// Command-line client of the data grid.
///
/// Exit status: 0 on success; 1 when the object is not found (or, for `lock`, locked by
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
    /// Show the cluster: nodes, replicas and leaders per node, objects, and the map epoch.
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
            eprintln!("gridctl: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Negative(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("gridctl: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Prints the cluster: every node with its replicas (from the map), the partitions it
/// leads and the objects in them, and the map epoch.
async fn print_status(client: &GridClient) -> Result<(), Failure> {
    client.refresh().await?;
    let map = client
        .partition_map()
        .ok_or_else(|| Failure::Error("no partition map".into()))?;
    let mut replicas = std::collections::BTreeMap::<u64, usize>::new();
    for set in &map.replicas {
        for id in set {
            *replicas.entry(*id).or_default() += 1;
        }
    }
    println!(
        "cluster: map epoch {}, {} partitions, {} nodes ({} active)",
        map.epoch,
        map.partitions,
        map.nodes.len(),
        map.nodes.iter().filter(|n| n.active).count()
    );
    println!(
        "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  version",
        "node", "address", "state", "replicas", "leads", "objects", "bytes", "locked", "unsettled"
    );
    let mut totals = (0u64, 0u64);
    for node in &map.nodes {
        if !node.active {
            // Left or marked down: it holds nothing and is not asked.
            println!("{:>4}  {:<22} {:<8} {:>8}", node.id, node.addr, "gone", 0);
            continue;
        }
        let state = "active";
        let held = replicas.get(&node.id).copied().unwrap_or(0);
        match client.node_status(&node.addr).await {
            Ok(s) => {
                totals.0 += s.objects;
                totals.1 += s.value_bytes;
                println!(
                    "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  {}",
                    node.id,
                    node.addr,
                    state,
                    held,
                    s.partitions_led,
                    s.objects,
                    s.value_bytes,
                    s.locked,
                    s.unsettled,
                    s.server_version
                );
            }
            Err(e) => println!(
                "{:>4}  {:<22} {:<8} {:>8}  unreachable: {e}",
                node.id, node.addr, state, held
            ),
        }
    }
    println!("total: {} objects, {} bytes", totals.0, totals.1);
    print_sites(client, &map).await;
    Ok(())
}

/// The site and its remote stores, as the first answering node sees them.
async fn print_sites(client: &GridClient, map: &grid_proto::PartitionMap) {
    for node in map.nodes.iter().filter(|n| n.active) {
        let Ok(s) = client.node_status(&node.addr).await else {
            continue;
        };
        if s.site.is_empty() {
            println!("site: none (geo replication off)");
            return;
        }
        println!("site: {}", s.site);
        for r in &s.remote_stores {
            println!(
                "remote store {}: {} ({}) [{}]",
                r.name,
                if r.reachable {
                    "reachable"
                } else {
                    "unreachable"
                },
                r.detail,
                r.addrs.join(",")
            );
        }
        return;
    }
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = GridClient::connect(&cli.connect).await?;
    match cli.command {
        Command::Status => print_status(&client).await?,
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
            println!("version {version}");
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
            let mut out = std::io::stdout().lock();
            out.write_all(&object.value)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Error(format!("cannot write to stdout: {e}")))?;
        }
        Command::Remove { ns, key, lock_id } => {
            if !client.remove(&ns, &key, lock_id).await? {
                return Err(ClientError::NotFound.into());
            }
            println!("removed");
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
                LockResult::Acquired { lock_id, .. } => println!("{lock_id}"),
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
            println!("unlocked");
        }
        Command::Events { ns } => print_events(&client, &ns).await?,
    }
    Ok(())
}

async fn print_events(client: &GridClient, ns: &str) -> Result<(), Failure> {
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
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        drop(out);
        delivery.ack().await?;
    }
}
