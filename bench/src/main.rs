//! `grid-bench`: measurements of the grid on this machine. See `bench/RESULTS.md`.

use std::time::Duration;

use anyhow::Context;
use bench::nodes::{connection_string, start_cluster};
use bench::{compare, load, report};
use clap::{Parser, Subcommand};
use grid_client::{GridClient, Timeout};

/// Benchmarks of the data grid (release builds; run `cargo build --release -p grid-node -p bench` first).
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The grid, Redis and etcd side by side (starts all three on 127.0.0.1), writing
    /// latest.json, latest.md and latest.svg to --out.
    Compare {
        /// A seconds-long pass (1 and 16 clients, one round) instead of the full run.
        #[arg(long)]
        quick: bool,
        /// Where the results go.
        #[arg(long, default_value = "bench/results")]
        out: std::path::PathBuf,
    },
    /// Writes latest.md and latest.svg again from a run's latest.json.
    Render {
        /// The results directory holding latest.json.
        #[arg(long, default_value = "bench/results")]
        out: std::path::PathBuf,
    },
    /// Internal: the echo server of the floor measurement (another process).
    #[command(hide = true)]
    Echo {
        /// Bytes per message.
        #[arg(long)]
        payload: usize,
    },
    /// Idle CPU of each node of a 3-node cluster, for several partition counts.
    Idle {
        /// Partition counts to try.
        #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
        partitions: Vec<u32>,
        /// How long to measure each.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Resident memory per object per replica of the grid, Redis and etcd, each fresh,
    /// after writing `--objects` values of 4 KB.
    Memory {
        /// Objects written.
        #[arg(long, default_value_t = 50_000)]
        objects: usize,
    },
    /// Write gaps after kill -9 of a node of a 3-node grid, one line per kill.
    Failover {
        /// Nodes killed, one after the other (a fresh node replaces each).
        #[arg(long, default_value_t = 5)]
        kills: usize,
    },
    /// Two sites on loopback: pull-on-miss of a 4 KB object against a local read, and a
    /// ping over the QUIC geo link against one over TCP.
    Geo {
        /// Operations of each kind.
        #[arg(long, default_value_t = 500)]
        count: u64,
    },
    /// The session provider on a 3-node cluster: request cycles per second (lock-read and
    /// write-back of a 4 KB session) and the lock hand-off latency between two requests.
    Session {
        /// Concurrent clients, each on its own session.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Warm-up before each measurement.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured time per client count.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// The session items' compression: LZ4 against Snappy and deflate on session-like
    /// JSON (3 KB, 64 KB, 256 KB): ratio and MB/s each way; markdown on stdout.
    Codec,
    /// A 256 KB session changed by 100 bytes per request: cycles per second and bytes
    /// sent per cycle with the whole session written back (before per-item writes), with
    /// only the changed item (now), and for a replicated Redis session store (GET, SET,
    /// WAIT 2); interleaved rounds, medians; markdown on stdout.
    LargeSession {
        /// Concurrent clients, each on its own session.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Rounds (each backend once per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Warm-up before each measurement.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured time per backend and round.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// The on-disk log's choice: the node's segment files against redb, appending 4 KB
    /// entries with a sync per entry, per 16 entries and none, then reading them back
    /// after a reopen; rounds alternate the two; a markdown table of medians.
    LogStore {
        /// A directory on the file system to measure (each backend writes a fresh
        /// directory under it and removes it).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: std::path::PathBuf,
        /// Value size in bytes.
        #[arg(long, default_value_t = 4096)]
        value_bytes: usize,
        /// Measured time per mode.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        each: Duration,
        /// Rounds (each backend once per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Durability: replicated 4 KB writes with `--fsync always` and `everysec` beside a
    /// replicated Redis with `appendfsync always` and `everysec` (interleaved rounds,
    /// files under --dir), then a node holding --fill bytes restarted after kill -9, and
    /// a backup and restore of those bytes; markdown on stdout.
    Durable {
        /// A directory on the file system to measure (each backend writes a fresh
        /// directory under it and removes it).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: std::path::PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Warm-up before each measurement.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured time per backend and round.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Rounds (each backend once per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Bytes of 4 KB values the restart, backup and restore rows hold.
        #[arg(long, default_value_t = 1 << 30)]
        fill: u64,
    },
    /// openraft's core alone, the grid's 0.9 against 0.10.0-alpha.37: replicated writes
    /// and read barriers (read index; lease on 0.10) on 3-replica groups in this process,
    /// RPCs as direct calls (no sockets), rounds of 0.9 then 0.10 on fresh clusters,
    /// medians in a markdown table.
    RaftCore {
        /// Raft groups of 3 replicas; leaders spread over the replicas.
        #[arg(long, default_value_t = 64)]
        groups: usize,
        /// Concurrent clients; client i writes key i through group i % groups.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        /// Value size in bytes.
        #[arg(long, default_value_t = 4096)]
        value_bytes: usize,
        /// Warm-up before each measurement.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured time per operation and client count.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Rounds (each version once per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// 4 KB writes (replicated, R=3), linearizable reads, or near-cache hits on a 3-node
    /// cluster, at several client counts, with bytes on the wire per operation.
    Load {
        /// What each client does.
        #[arg(long, value_enum, default_value = "write")]
        workload: Workload,
        /// Concurrent clients, one connection each.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Partitions of the cluster.
        #[arg(long, default_value_t = 64)]
        partitions: u32,
        /// Value size in bytes.
        #[arg(long, default_value_t = 4096)]
        value_bytes: usize,
        /// Warm-up before each measurement.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured time per client count.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// An extra argument for every node, repeatable (e.g. `--node-arg=--lease-reads=false`
        /// to measure against a setting).
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Compare { quick, out } => compare(quick, &out).await,
        Command::Echo { payload } => bench::floor::serve_echo(payload).await,
        Command::Render { out } => {
            let json =
                std::fs::read_to_string(out.join("latest.json")).context("no latest.json")?;
            let rows: Vec<report::Row> = serde_json::from_str(&json)?;
            write_reports(&rows, &out)
        }
        Command::Idle {
            partitions,
            duration,
        } => idle(&partitions, duration).await,
        Command::Session {
            clients,
            warmup,
            duration,
        } => bench::session::run(&clients, warmup, duration).await,
        Command::Geo { count } => bench::geo::run(count).await,
        Command::Codec => {
            print!("{}", bench::codec::run()?);
            Ok(())
        }
        Command::LargeSession {
            clients,
            rounds,
            warmup,
            duration,
        } => {
            anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
            let table = bench::large_session::run(clients, rounds, warmup, duration).await?;
            print!("{table}");
            Ok(())
        }
        Command::Memory { objects } => {
            println!("| backend | bytes per 4 KB object per replica |\n|---|---:|");
            let grid = bench::memory::grid(objects, 4096).await?;
            println!("| grid | {grid:.0} |");
            let redis = bench::memory::redis(objects, 4096).await?;
            println!("| redis | {redis:.0} |");
            let etcd = bench::memory::etcd(objects, 4096).await?;
            println!("| etcd | {etcd:.0} |");
            println!("\ngrid / redis: {:.2}", grid / redis);
            Ok(())
        }
        Command::Durable {
            dir,
            clients,
            warmup,
            duration,
            rounds,
            fill,
        } => {
            anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
            let plan = bench::durable::Plan {
                dir,
                clients,
                warmup,
                duration,
                rounds,
                fill,
            };
            print!("{}", bench::durable::run(&plan).await?);
            Ok(())
        }
        Command::Failover { kills } => {
            let gaps = bench::failover::run(kills).await?;
            println!("longest write gap per kill, ms: {gaps:.0?}");
            Ok(())
        }
        Command::LogStore {
            dir,
            value_bytes,
            each,
            rounds,
        } => {
            anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
            print!(
                "{}",
                bench::log_store::run(&dir, value_bytes, each, rounds)?
            );
            Ok(())
        }
        Command::RaftCore {
            groups,
            clients,
            value_bytes,
            warmup,
            duration,
            rounds,
        } => {
            anyhow::ensure!(
                groups > 0 && rounds > 0,
                "--groups and --rounds must be at least 1"
            );
            // The grid's defaults: --raft-heartbeat 100ms, --raft-election-timeout 500ms,
            // --raft-snapshot-logs 64.
            let shape = bench::raft_core::Shape {
                groups,
                heartbeat: Duration::from_millis(100),
                election: Duration::from_millis(500),
                snapshot_logs: 64,
            };
            let load = bench::raft_core::Load {
                clients: 1,
                value_bytes,
                warmup,
                duration,
            };
            let comparison = bench::raft_core::compare(shape, &clients, load, rounds).await?;
            print!("{}", bench::raft_core::markdown(&comparison));
            Ok(())
        }
        Command::Load {
            workload,
            clients,
            partitions,
            value_bytes,
            warmup,
            duration,
            node_args,
        } => {
            load_run(
                workload,
                &clients,
                partitions,
                &node_args,
                value_bytes,
                warmup,
                duration,
            )
            .await
        }
    }
}

async fn compare(quick: bool, out: &std::path::Path) -> anyhow::Result<()> {
    let plan = if quick {
        compare::Plan::quick()
    } else {
        compare::Plan::full()
    };
    let rows = compare::run(&plan).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    write_reports(&rows, out)
}

fn write_reports(rows: &[report::Row], out: &std::path::Path) -> anyhow::Result<()> {
    let table = report::markdown(rows);
    std::fs::write(out.join("latest.md"), &table)?;
    std::fs::write(out.join("latest.svg"), report::svg(rows))?;
    println!("{table}");
    println!("wrote {}/latest.{{json,md,svg}}", out.display());
    Ok(())
}

async fn idle(partitions: &[u32], duration: Duration) -> anyhow::Result<()> {
    println!("| partitions | node 1 CPU | node 2 CPU | node 3 CPU | mean |");
    println!("|---:|---:|---:|---:|---:|");
    for &p in partitions {
        let pct = bench::idle::cpu_percent(p, duration).await?;
        let mean = pct.iter().sum::<f64>() / pct.len() as f64;
        println!(
            "| {p} | {:.1}% | {:.1}% | {:.1}% | {mean:.1}% |",
            pct[0], pct[1], pct[2]
        );
    }
    Ok(())
}

/// A load workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// `put` of a value to one of 1000 keys per client.
    Write,
    /// Linearizable `get` of one of 1000 preloaded keys per client, near cache off.
    Read,
    /// The same `get` through a near cache holding every key: the node answers
    /// `NotModified` and the bytes come from the cache (near-cache hit latency).
    CachedRead,
}

/// Keys each client cycles through.
const KEYS_PER_CLIENT: u64 = 1000;

async fn load_run(
    workload: Workload,
    clients: &[usize],
    partitions: u32,
    node_args: &[String],
    value_bytes: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut args = vec!["--partitions".to_string(), partitions.to_string()];
    args.extend(node_args.iter().cloned());
    let nodes = start_cluster(3, &args).await?;
    // Plain reads and writes carry the bytes every time; cached reads keep every key of
    // a client in its near cache.
    let cache = match workload {
        Workload::CachedRead => {
            format!("clientCacheType=LRU;clientCacheCapacity={KEYS_PER_CLIENT}")
        }
        _ => "clientCacheType=None".to_string(),
    };
    let cs = format!("{};maxPoolSize=1;{cache}", connection_string(&nodes));
    println!("| clients | {workload:?} ops/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | bytes/op |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in clients {
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(GridClient::connect(&cs).await.context("connect")?);
        }
        let value = vec![0x5a_u8; value_bytes];
        if workload != Workload::Write {
            for (c, client) in conns.iter().enumerate() {
                for k in 0..KEYS_PER_CLIENT {
                    client
                        .put("bench", format!("k{c}-{k}"), value.clone(), Timeout::None)
                        .await?;
                }
            }
        }
        let op = move |client: GridClient, c: usize, seq: u64, value: Vec<u8>| async move {
            let key = format!("k{c}-{}", seq % KEYS_PER_CLIENT);
            match workload {
                Workload::Write => {
                    client.put("bench", key, value, Timeout::None).await?;
                }
                Workload::Read | Workload::CachedRead => {
                    client
                        .get("bench", key)
                        .await?
                        .context("preloaded key missing")?;
                }
            }
            anyhow::Ok(())
        };
        let probe = conns[0].clone();
        let r = load::run(n, warmup, duration, {
            let value = value.clone();
            move |c, seq| op(conns[c].clone(), c, seq, value.clone())
        })
        .await;
        // Bytes both ways per operation, from one client's counters over a short pass.
        let before = probe.wire_bytes();
        const PROBE_OPS: u64 = 100;
        for seq in 0..PROBE_OPS {
            op(probe.clone(), 0, seq, value.clone()).await?;
        }
        let after = probe.wire_bytes();
        let bytes = (after.sent + after.received - before.sent - before.received) / PROBE_OPS;
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {bytes} |",
            r.clients, r.ops_per_sec, r.p50_us, r.p99_us, r.p999_us, r.max_us, r.errors
        );
    }
    Ok(())
}
