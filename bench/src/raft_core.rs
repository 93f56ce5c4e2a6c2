//! openraft's core alone, 0.9 (the grid's) against 0.10.0-alpha.37, on the grid's write
//! path: `groups` Raft groups of 3 replicas in one process, every replica with an
//! in-memory log and a key-value state machine, the replicas' RPCs direct calls into
//! each other (no sockets, no encoding). What is left is the library: its core, log and
//! replication tasks and channels, per write. The two versions run the same workload,
//! interleaved, in one process ([`compare`]); the grid's own transport, store and
//! client path are not in it.
//!
//! Each version's types and glue are in [`v09`] and [`v010`], behind [`Core`].

pub mod v010;
pub mod v09;

use crate::load::median;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procfs;

/// A write: what every log entry carries, in both versions. The value is shared, so a
/// clone of an entry (openraft clones one per follower send) copies no bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Put {
    /// The key written.
    pub key: u64,
    /// Its new value.
    pub value: Arc<[u8]>,
}

/// A replica's state: the last value of every key. Both versions' state machines hold
/// one, and build their snapshots from it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Kv {
    values: std::collections::HashMap<u64, Arc<[u8]>>,
}

impl Kv {
    /// Applies a write.
    pub fn apply(&mut self, put: &Put) {
        self.values.insert(put.key, Arc::clone(&put.value));
    }

    /// The state as snapshot bytes.
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        Ok(postcard::to_stdvec(self)?)
    }

    /// The state of snapshot bytes.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

impl std::fmt::Display for Put {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "put {} ({} bytes)", self.key, self.value.len())
    }
}

/// The cluster both versions build.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Raft groups; group `g`'s leader is replica `g % 3`, so leaders are spread.
    pub groups: usize,
    /// openraft's heartbeat interval.
    pub heartbeat: Duration,
    /// The lower bound of the election timeout (the upper is twice this).
    pub election: Duration,
    /// Log entries between snapshots (each version builds its own, from the state).
    pub snapshot_logs: u64,
}

/// The node ids of every group's three replicas.
const NODES: [u64; 3] = [1, 2, 3];

/// The replica that initializes group `group`, and so (normally) leads it: spread over
/// the nodes.
fn first_of(group: usize) -> u64 {
    NODES[group % NODES.len()]
}

/// Group `group`'s replica on node `id`, from (group, node id, handle) triples.
fn replica<R: Clone>(replicas: &[(usize, u64, R)], group: usize, id: u64) -> anyhow::Result<R> {
    replicas
        .iter()
        .find(|(g, i, _)| *g == group && *i == id)
        .map(|(_, _, r)| r.clone())
        .context("no such replica")
}

/// How a read is made linearizable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The leader confirms its leadership with a heartbeat round to a quorum.
    ReadIndex,
    /// The leader answers while its lease (the last quorum acknowledgement) holds, and
    /// by a read index when it has lapsed.
    Lease,
}

/// One version's in-process cluster.
pub trait Core: Sized + Send + Sync + 'static {
    /// The version, for the report.
    const NAME: &'static str;
    /// Builds the cluster and waits until every group has its leader.
    fn start(shape: Shape) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// A replicated write through group `group`'s leader, returned once applied there.
    fn write(&self, group: usize, put: Put) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Whether this version offers `mode`.
    fn offers(mode: ReadMode) -> bool;
    /// A linearizable read barrier on group `group`'s leader.
    fn read(&self, group: usize, mode: ReadMode)
        -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Stops every replica.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// The load of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Closed-loop clients; client `i` writes key `i` through group `i % groups`.
    pub clients: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Run before measuring.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

/// What one measurement saw.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// CPU time of the whole process (both cores) per operation, µs.
    pub cpu_us_per_op: f64,
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Replicated writes.
    Write,
    /// Linearizable read barriers.
    Read(ReadMode),
}

/// Runs `load` of `op` against `core` and measures it.
pub async fn measure<C: Core>(
    core: &Arc<C>,
    shape: Shape,
    op: Op,
    load: Load,
) -> anyhow::Result<Sample> {
    let value: Arc<[u8]> = vec![7u8; load.value_bytes].into();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..load.clients {
        let (core, value) = (Arc::clone(core), Arc::clone(&value));
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        let group = i % shape.groups;
        clients.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).context("histogram")?;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match op {
                    Op::Write => {
                        let put = Put {
                            key: i as u64,
                            value: Arc::clone(&value),
                        };
                        core.write(group, put).await?
                    }
                    Op::Read(mode) => core.read(group, mode).await?,
                }
                if measuring.load(Ordering::Relaxed) {
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
            }
            anyhow::Ok(hist)
        });
    }
    tokio::time::sleep(load.warmup).await;
    let pid = std::process::id();
    let cpu_before = procfs::cpu_time(pid)?;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = procfs::cpu_time(pid)?.saturating_sub(cpu_before);
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).context("histogram")?;
    while let Some(done) = clients.join_next().await {
        all.add(done.context("a client panicked")??)?;
    }
    let ops = all.len().max(1);
    Ok(Sample {
        ops_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        cpu_us_per_op: cpu.as_micros() as f64 / ops as f64,
    })
}

/// One row of the comparison: an operation at one client count, per version.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub op: Op,
    /// Closed-loop clients.
    pub clients: usize,
    /// 0.9's samples, one per round.
    pub v09: Vec<Sample>,
    /// 0.10's samples, one per round.
    pub v010: Vec<Sample>,
}

/// The whole comparison: every row, and the idle CPU of each version's cluster.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Raft groups of the clusters.
    pub groups: usize,
    /// Operations at client counts.
    pub rows: Vec<Row>,
    /// 0.9's idle CPU per node (the process's CPU over 3 nodes), % of a core, per round.
    pub idle_v09: Vec<f64>,
    /// 0.10's, likewise.
    pub idle_v010: Vec<f64>,
}

/// The operations measured, in order: writes, then each read mode.
const OPS: [Op; 3] = [
    Op::Write,
    Op::Read(ReadMode::ReadIndex),
    Op::Read(ReadMode::Lease),
];

/// `rounds` rounds of 0.9 then 0.10, each on a fresh cluster, each round measuring every
/// operation at every client count.
pub async fn compare(
    shape: Shape,
    client_counts: &[usize],
    load: Load,
    rounds: usize,
) -> anyhow::Result<Comparison> {
    let mut rows: Vec<Row> = OPS
        .iter()
        .flat_map(|op| {
            client_counts.iter().map(|&clients| Row {
                op: *op,
                clients,
                v09: Vec::new(),
                v010: Vec::new(),
            })
        })
        .collect();
    let (mut idle_v09, mut idle_v010) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}: openraft {}", v09::Core09::NAME);
        let (idle, samples) = one_version::<v09::Core09>(shape, client_counts, load).await?;
        idle_v09.push(idle);
        for (row, s) in rows.iter_mut().zip(samples) {
            row.v09.extend(s);
        }
        eprintln!(
            "round {round} of {rounds}: openraft {}",
            v010::Core010::NAME
        );
        let (idle, samples) = one_version::<v010::Core010>(shape, client_counts, load).await?;
        idle_v010.push(idle);
        for (row, s) in rows.iter_mut().zip(samples) {
            row.v010.extend(s);
        }
    }
    Ok(Comparison {
        groups: shape.groups,
        rows,
        idle_v09,
        idle_v010,
    })
}

/// The process's CPU over `load.duration` with the cluster idle (after `load.warmup`),
/// per node (a third of the process: it runs three nodes' replicas), % of a core.
async fn idle_percent(load: Load) -> anyhow::Result<f64> {
    tokio::time::sleep(load.warmup).await;
    let pid = std::process::id();
    let before = procfs::cpu_time(pid)?;
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    let cpu = procfs::cpu_time(pid)?.saturating_sub(before);
    Ok(100.0 * cpu.as_secs_f64() / started.elapsed().as_secs_f64() / 3.0)
}

/// The idle CPU of one fresh cluster of version `C`, then every operation at every
/// client count on it, in the order of the rows (`None` where `C` does not offer it).
async fn one_version<C: Core>(
    shape: Shape,
    client_counts: &[usize],
    load: Load,
) -> anyhow::Result<(f64, Vec<Option<Sample>>)> {
    let core = Arc::new(C::start(shape).await?);
    let idle = idle_percent(load).await?;
    let mut samples = Vec::new();
    for op in OPS {
        for &clients in client_counts {
            let offered = match op {
                Op::Write => true,
                Op::Read(mode) => C::offers(mode),
            };
            let sample = if offered {
                let load = Load { clients, ..load };
                Some(measure(&core, shape, op, load).await?)
            } else {
                None
            };
            samples.push(sample);
        }
    }
    let core = Arc::into_inner(core).context("a client still holds the cluster")?;
    core.stop().await;
    Ok((idle, samples))
}

/// The comparison as a markdown table: medians over the rounds, with 0.10's ratio to 0.9,
/// and a line on idle CPU.
pub fn markdown(comparison: &Comparison) -> String {
    let rows = &comparison.rows;
    let mut out = String::from(
        "| operation | clients | 0.9 ops/s | 0.10 ops/s | 0.10 / 0.9 | 0.9 p50/p99 µs | 0.10 p50/p99 µs | 0.9 CPU µs/op | 0.10 CPU µs/op |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let name = match row.op {
            Op::Write => "write",
            Op::Read(ReadMode::ReadIndex) => "read (read index)",
            Op::Read(ReadMode::Lease) => "read (lease)",
        };
        let cell = |s: &[Sample]| -> [String; 3] {
            if s.is_empty() {
                return ["-".into(), "-".into(), "-".into()];
            }
            let ops = median(s.iter().map(|x| x.ops_per_sec).collect());
            let p50 = median(s.iter().map(|x| x.p50_us as f64).collect());
            let p99 = median(s.iter().map(|x| x.p99_us as f64).collect());
            let cpu = median(s.iter().map(|x| x.cpu_us_per_op).collect());
            [
                format!("{ops:.0}"),
                format!("{p50:.0}/{p99:.0}"),
                format!("{cpu:.1}"),
            ]
        };
        let [a_ops, a_lat, a_cpu] = cell(&row.v09);
        let [b_ops, b_lat, b_cpu] = cell(&row.v010);
        let ratio = if row.v09.is_empty() || row.v010.is_empty() {
            "-".to_string()
        } else {
            let a = median(row.v09.iter().map(|x| x.ops_per_sec).collect());
            let b = median(row.v010.iter().map(|x| x.ops_per_sec).collect());
            format!("{:.2}", b / a.max(f64::MIN_POSITIVE))
        };
        out.push_str(&format!(
            "| {name} | {} | {a_ops} | {b_ops} | {ratio} | {a_lat} | {b_lat} | {a_cpu} | {b_cpu} |\n",
            row.clients
        ));
    }
    out.push_str(&format!(
        "\nIdle CPU per node, {} groups: 0.9 {:.1} %, 0.10 {:.1} % of a core (rounds: {:.1?} and {:.1?})\n",
        comparison.groups,
        median(comparison.idle_v09.clone()),
        median(comparison.idle_v010.clone()),
        comparison.idle_v09,
        comparison.idle_v010,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timeouts far above the grid's: a debug build on a loaded 2-core machine (the
    /// suite runs test binaries side by side) must not see an election mid-test, which
    /// would fail the harness's writes (it sends each to the leader it found at start).
    const SHAPE: Shape = Shape {
        groups: 3,
        heartbeat: Duration::from_millis(500),
        election: Duration::from_secs(5),
        snapshot_logs: 16,
    };

    /// Both versions' clusters commit writes through every group's leader (past several
    /// snapshots) and answer read barriers, each read mode they offer.
    async fn serves<C: Core>() {
        let core = Arc::new(C::start(SHAPE).await.unwrap());
        let load = Load {
            clients: 6,
            value_bytes: 64,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
        };
        let writes = measure(&core, SHAPE, Op::Write, load).await.unwrap();
        assert!(writes.ops_per_sec > 0.0, "{} wrote nothing", C::NAME);
        for mode in [ReadMode::ReadIndex, ReadMode::Lease] {
            if C::offers(mode) {
                let reads = measure(&core, SHAPE, Op::Read(mode), load).await.unwrap();
                assert!(reads.ops_per_sec > 0.0, "{} {mode:?} read nothing", C::NAME);
            } else {
                assert!(core.read(0, mode).await.is_err());
            }
        }
        Arc::into_inner(core).unwrap().stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_09_serves() {
        serves::<v09::Core09>().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_010_serves() {
        serves::<v010::Core010>().await;
    }
}
