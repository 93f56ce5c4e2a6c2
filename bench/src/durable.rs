//! The grid with `--data-dir` against Redis with its append-only file, and the costs of
//! durability an operator waits on:
//!
//! - replicated 4 KB writes from 64 clients: the grid (3 nodes, R = 3) with `--fsync
//!   always` and `everysec`, beside a replicated Redis (a primary and 2 replicas, each
//!   `SET` followed by `WAIT 2`) with `appendonly yes` and `appendfsync always` /
//!   `everysec`; every backend's files in a fresh directory under `--dir` (one file
//!   system), interleaved rounds, medians;
//! - a node holding `--fill` bytes killed with kill -9 and restarted with its directory:
//!   until it serves (its ready line), and until the cluster has settled again;
//! - `gridctl backup` of those bytes, and `gridctl restore` of the file into a fresh
//!   cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{self, TryStreamExt};
use grid_client::{GridClient, Timeout};

use crate::compare::replicated_set;
use crate::load::{self, median};
use crate::nodes::{connection_string, start_cluster_each, wait_settled, BenchNode};
use crate::redis_peer::{RedisClient, RedisReplicated};

const VALUE_BYTES: usize = 4096;
const NS: &str = "durable";
const KEYS_PER_CLIENT: u64 = 50;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where every backend's files go (a fresh directory each, removed after).
    pub dir: PathBuf,
    /// Concurrent writers.
    pub clients: usize,
    /// Warm-up before each measurement.
    pub warmup: Duration,
    /// Measured time per backend and round.
    pub duration: Duration,
    /// Rounds of the write comparison.
    pub rounds: usize,
    /// Bytes of values the restart and backup rows hold.
    pub fill: u64,
}

/// The backends of the write comparison.
const BACKENDS: [(&str, &str); 5] = [
    ("grid in memory (no --data-dir)", ""),
    ("grid --fsync always", "always"),
    ("redis-repl appendfsync always", "always"),
    ("grid --fsync everysec", "everysec"),
    ("redis-repl appendfsync everysec", "everysec"),
];

/// A fresh directory under `root`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(root: &Path, name: &str) -> anyhow::Result<Self> {
        let path = root.join(format!("grid-durable-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| path.display().to_string())?;
        Ok(Self(path))
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn grid_args(dir: &Scratch, fsync: &str) -> Vec<Vec<String>> {
    (0..3)
        .map(|i| {
            if fsync.is_empty() {
                return Vec::new();
            }
            [
                "--data-dir",
                &dir.join(&format!("node{i}")),
                "--fsync",
                fsync,
            ]
            .map(str::to_string)
            .to_vec()
        })
        .collect()
}

async fn grid_writes(
    plan: &Plan,
    fsync: &str,
    scratch: &Scratch,
) -> anyhow::Result<load::LoadResult> {
    let nodes = start_cluster_each(grid_args(scratch, fsync)).await?;
    let cs = format!(
        "{};maxPoolSize=1;clientCacheType=None",
        connection_string(&nodes)
    );
    let mut clients = Vec::new();
    for _ in 0..plan.clients {
        clients.push(GridClient::connect(&cs).await?);
    }
    let clients = Arc::new(clients);
    let value: Arc<Vec<u8>> = Arc::new(vec![b'x'; VALUE_BYTES]);
    let result = load::run(plan.clients, plan.warmup, plan.duration, move |c, seq| {
        let (clients, value) = (Arc::clone(&clients), Arc::clone(&value));
        async move {
            let key = format!("k{c}-{}", seq % KEYS_PER_CLIENT);
            clients[c]
                .put(NS, key, value.as_slice(), Timeout::None)
                .await?;
            Ok(())
        }
    })
    .await;
    drop(nodes);
    Ok(result)
}

async fn redis_writes(
    plan: &Plan,
    fsync: &str,
    scratch: &Scratch,
) -> anyhow::Result<load::LoadResult> {
    let redis = RedisReplicated::start_with(|i| {
        let dir = scratch.0.join(format!("redis{i}"));
        let _ = std::fs::create_dir_all(&dir);
        [
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync,
            "--dir",
            &dir.display().to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    })
    .await?;
    let mut conns = Vec::new();
    for _ in 0..plan.clients {
        conns.push(tokio::sync::Mutex::new(
            RedisClient::connect(&redis.primary.addr()).await?,
        ));
    }
    let conns = Arc::new(conns);
    let value: Arc<Vec<u8>> = Arc::new(vec![b'x'; VALUE_BYTES]);
    let result = load::run(plan.clients, plan.warmup, plan.duration, move |c, seq| {
        let (conns, value) = (Arc::clone(&conns), Arc::clone(&value));
        async move {
            let key = format!("k{c}-{}", seq % KEYS_PER_CLIENT);
            replicated_set(&mut *conns[c].lock().await, &key, &value).await
        }
    })
    .await;
    drop(redis);
    Ok(result)
}

/// Writes `bytes` of 4 KB values from 64 writers.
async fn fill(client: &GridClient, bytes: u64) -> anyhow::Result<u64> {
    let count = bytes / VALUE_BYTES as u64;
    let value = vec![b'v'; VALUE_BYTES];
    stream::iter((0..count).map(Ok::<u64, grid_client::ClientError>))
        .try_for_each_concurrent(64, |i| {
            let value = value.clone();
            async move {
                client
                    .put(NS, format!("fill-{i}"), value, Timeout::None)
                    .await
                    .map(drop)
            }
        })
        .await?;
    Ok(count)
}

/// Runs the plan and returns its markdown.
pub async fn run(plan: &Plan) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut samples: Vec<Vec<load::LoadResult>> = vec![Vec::new(); BACKENDS.len()];
    for round in 0..plan.rounds {
        for (b, (name, fsync)) in BACKENDS.iter().enumerate() {
            let scratch = Scratch::new(&plan.dir, &format!("w{round}-{b}"))?;
            let result = if name.starts_with("grid") {
                grid_writes(plan, fsync, &scratch).await?
            } else {
                redis_writes(plan, fsync, &scratch).await?
            };
            eprintln!(
                "round {round} {name}: {:.0} writes/s, p50 {} µs, p99 {} µs, {} errors",
                result.ops_per_sec, result.p50_us, result.p99_us, result.errors
            );
            samples[b].push(result);
        }
    }
    let ops: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|r| r.ops_per_sec).collect()))
        .collect();
    out += &format!(
        "Replicated 4 KB writes, {} clients, {} rounds of {:?} (medians; files on one file system):\n\n\
         | backend | writes/s | p50 µs | p99 µs | errors |\n|---|---:|---:|---:|---:|\n",
        plan.clients, plan.rounds, plan.duration
    );
    for (b, (name, _)) in BACKENDS.iter().enumerate() {
        let s = &samples[b];
        let p50 = median(s.iter().map(|r| r.p50_us as f64).collect());
        let p99 = median(s.iter().map(|r| r.p99_us as f64).collect());
        let errors: u64 = s.iter().map(|r| r.errors).sum();
        out += &format!(
            "| {name} | {:.0} | {p50:.0} | {p99:.0} | {errors} |\n",
            ops[b]
        );
    }
    out += &format!(
        "\ngrid / redis-repl: always {:.2}, everysec {:.2}; grid everysec / in memory {:.2}\n\n",
        ops[1] / ops[2],
        ops[3] / ops[4],
        ops[3] / ops[0]
    );

    // A node holding the fill, restarted; then a backup and a restore of it.
    let scratch = Scratch::new(&plan.dir, "restart")?;
    let mut nodes = start_cluster_each(grid_args(&scratch, "everysec")).await?;
    let client = GridClient::connect(&connection_string(&nodes)).await?;
    let filled = Instant::now();
    let objects = fill(&client, plan.fill).await?;
    let fill_took = filled.elapsed();
    let addr = nodes[2].addr.clone();
    let args = grid_args(&scratch, "everysec").swap_remove(2);
    nodes[2].kill()?;
    let started = Instant::now();
    let mut node_args = args;
    node_args.extend(["--join".to_string(), nodes[0].addr.clone()]);
    nodes[2] = BenchNode::start_at(&addr, &node_args)?;
    let serving = started.elapsed();
    wait_settled(&nodes).await?;
    let settled = started.elapsed();
    let mib = plan.fill as f64 / (1024.0 * 1024.0);
    out += &format!(
        "A node holding {mib:.0} MiB ({objects} values of 4 KB, filled in {:.1}s), killed with kill -9 \
         and restarted with its directory: serving after {:.1}s (its groups reopened from their \
         snapshots and logs), cluster settled after {:.1}s.\n\n",
        fill_took.as_secs_f64(),
        serving.as_secs_f64(),
        settled.as_secs_f64()
    );
    let file = scratch.0.join("grid.backup");
    let backed = grid_client::backup::backup(&client, &file).await?;
    let file_bytes = std::fs::metadata(&file)?.len();
    drop(client);
    drop(nodes);
    let fresh = crate::nodes::start_cluster(3, &[]).await?;
    let target = GridClient::connect(&connection_string(&fresh)).await?;
    let restored = grid_client::backup::restore(&target, &file).await?;
    anyhow::ensure!(
        restored.objects == backed.objects,
        "restored {} of {} objects",
        restored.objects,
        backed.objects
    );
    out += &format!(
        "`gridctl backup` of it: {:.1}s ({} objects, a {:.0} MiB file); `gridctl restore` into a \
         fresh in-memory cluster: {:.1}s.\n",
        backed.took.as_secs_f64(),
        backed.objects,
        file_bytes as f64 / (1024.0 * 1024.0),
        restored.took.as_secs_f64()
    );
    Ok(out)
}
