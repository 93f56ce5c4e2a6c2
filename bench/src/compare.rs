//! The side-by-side run: the grid, Redis and etcd on this machine, driven by the same
//! load generator with the same value size and concurrency, in interleaved rounds
//! (grid, redis, etcd, grid, redis, etcd, ...) so machine drift hits all alike; each cell
//! reports the median over rounds.
//!
//! Workloads (4 KB and 1 KB values, `KEYS_PER_CLIENT` keys per client, preloaded):
//! - `read`: grid linearizable `get`; Redis `GET`; etcd linearizable range.
//! - `write`: grid replicated `put` (R=3); Redis `SET` (unreplicated); `redis-repl`
//!   `SET` then `WAIT 2 1000` (a primary and 2 replicas); etcd put (3 members).
//! - `session`: grid read-and-lock + write-and-unlock (exclusive); the others the
//!   closest equivalent without a lock, read + write (`redis-repl`: + `WAIT`).
//! - `nearcache` (4 KB only): grid `get` through the client's near cache holding the key:
//!   it sends the cached version and gets `NotModified` (strict coherence); no equivalent
//!   on the others. Every other grid workload runs with the near cache off.
//!
//! Then, on fresh processes, one at a time: `memory` (bytes per object per replica,
//! [`crate::memory`]), `idle` (CPU of an idle grid, [`crate::idle`]) and `failover`
//! (write gaps after kill -9, [`crate::failover`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use grid_client::{GridClient, LockOptions, LockResult, Timeout, UpdateOptions};
use grid_proto::{ObjKey, ObjectInfo, Op, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::etcd_peer::{EtcdClient, EtcdCluster};
use crate::floor;
use crate::load::{self, LoadResult};
use crate::nodes::{connection_string, start_cluster};
use crate::redis_peer::{RedisClient, RedisReplicated, RedisServer, REPLICAS};
use crate::report::Row;

/// Keys each client works on.
pub const KEYS_PER_CLIENT: usize = 50;
/// Value size of the main rows (and the floor).
pub const VALUE_BYTES: usize = 4096;
/// The throughput cells: workload and value size.
const CELLS: [(&str, usize); 7] = [
    ("read", 4096),
    ("write", 4096),
    ("session", 4096),
    ("nearcache", 4096),
    ("read", 1024),
    ("write", 1024),
    ("session", 1024),
];
/// Objects written for the memory rows, as issue 15 measures them.
const MEMORY_OBJECTS: usize = 50_000;
/// Namespace of the grid's keys.
const NS: &str = "bench";

/// How long and how wide to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Client counts.
    pub clients: Vec<usize>,
    /// Unmeasured time before each cell.
    pub warmup: Duration,
    /// Measured time per cell.
    pub duration: Duration,
    /// Rounds of the whole matrix.
    pub rounds: usize,
    /// Objects of the memory rows.
    pub memory_objects: usize,
    /// Kills of the failover row.
    pub kills: usize,
    /// Measured time of the idle row.
    pub idle: Duration,
}

impl Plan {
    /// Seconds-long smoke run: 1 and 16 clients, one round.
    pub fn quick() -> Self {
        Self {
            clients: vec![1, 16],
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            rounds: 1,
            memory_objects: MEMORY_OBJECTS / 10,
            kills: 2,
            idle: Duration::from_secs(3),
        }
    }

    /// The full run: 1, 16 and 64 clients, three rounds.
    pub fn full() -> Self {
        Self {
            clients: vec![1, 16, 64],
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(4),
            rounds: 3,
            memory_objects: MEMORY_OBJECTS,
            kills: 5,
            idle: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Grid,
    Redis,
    RedisRepl,
    Etcd,
}

const BACKENDS: [Backend; 4] = [
    Backend::Grid,
    Backend::Redis,
    Backend::RedisRepl,
    Backend::Etcd,
];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Grid => "grid",
            Backend::Redis => "redis",
            Backend::RedisRepl => "redis-repl",
            Backend::Etcd => "etcd",
        }
    }
}

/// One client's connection to one backend.
enum Conn {
    Grid(GridClient),
    Redis(RedisClient),
    /// To the primary of the replicated Redis: every write waits for both replicas.
    RedisRepl(RedisClient),
    Etcd(EtcdClient),
}

/// Key `seq` (modulo the keys per client) of `client`, among the keys of `value_bytes`.
fn key(client: usize, seq: u64, value_bytes: usize) -> String {
    format!("k{value_bytes}-{client}-{}", seq % KEYS_PER_CLIENT as u64)
}

/// `SET` then `WAIT` for every replica: a write acknowledged by all three copies.
pub(crate) async fn replicated_set(
    c: &mut RedisClient,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    c.set(key, value).await?;
    let acked = c.wait(REPLICAS, 1_000).await?;
    anyhow::ensure!(
        acked == REPLICAS,
        "WAIT: {acked} of {REPLICAS} replicas acknowledged"
    );
    Ok(())
}

impl Conn {
    async fn op(&mut self, workload: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match (self, workload) {
            (Conn::Grid(client), "read" | "nearcache") => {
                client.get(NS, key).await?.context("missing key")?;
            }
            (Conn::Grid(client), "write") => {
                client.put(NS, key, value.to_vec(), Timeout::None).await?;
            }
            (Conn::Grid(client), "session") => {
                let lock = LockOptions {
                    wait: Duration::from_secs(5),
                    ..LockOptions::default()
                };
                let LockResult::Acquired { lock_id, .. } = client.lock(NS, key, lock).await? else {
                    anyhow::bail!("lock not acquired");
                };
                let release = UpdateOptions {
                    lock_id: Some(lock_id),
                    unlock: true,
                    ..UpdateOptions::default()
                };
                client.update(NS, key, value.to_vec(), release).await?;
            }
            (Conn::Redis(c), "read") => {
                c.get(key).await?.context("missing key")?;
            }
            (Conn::Redis(c), "write") => c.set(key, value).await?,
            (Conn::Redis(c), "session") => {
                c.get(key).await?.context("missing key")?;
                c.set(key, value).await?;
            }
            (Conn::RedisRepl(c), "write") => replicated_set(c, key, value).await?,
            (Conn::RedisRepl(c), "session") => {
                c.get(key).await?.context("missing key")?;
                replicated_set(c, key, value).await?;
            }
            (Conn::Etcd(c), "read") => {
                c.get(key).await?.context("missing key")?;
            }
            (Conn::Etcd(c), "write") => c.put(key, value).await?,
            (Conn::Etcd(c), "session") => {
                c.get(key).await?.context("missing key")?;
                c.put(key, value).await?;
            }
            (_, other) => anyhow::bail!("workload {other} does not apply"),
        }
        Ok(())
    }
}

/// The backends, running.
struct Backends {
    grid_cs: String,
    _grid: Vec<crate::nodes::BenchNode>,
    redis: RedisServer,
    redis_repl: RedisReplicated,
    etcd: EtcdCluster,
}

impl Backends {
    /// A client of `backend`; for the grid, with the near cache on (and filled with the
    /// client's keys) for the `nearcache` workload, off otherwise.
    async fn connect(
        &self,
        backend: Backend,
        client: usize,
        (workload, value_bytes): (&str, usize),
        via: Option<&str>,
    ) -> anyhow::Result<Conn> {
        Ok(match backend {
            Backend::Grid => {
                let cache = match workload {
                    "nearcache" => "clientCacheType=LRU",
                    _ => "clientCacheType=None",
                };
                let cs = format!("{};maxPoolSize=1;{cache}", self.grid_cs);
                let client_handle = GridClient::connect(&cs).await?;
                if workload == "nearcache" {
                    for k in 0..KEYS_PER_CLIENT as u64 {
                        client_handle.get(NS, key(client, k, value_bytes)).await?;
                    }
                }
                Conn::Grid(client_handle)
            }
            Backend::Redis => {
                Conn::Redis(RedisClient::connect(via.unwrap_or(&self.redis.addr())).await?)
            }
            Backend::RedisRepl => Conn::RedisRepl(
                RedisClient::connect(via.unwrap_or(&self.redis_repl.primary.addr())).await?,
            ),
            Backend::Etcd => {
                let endpoints = self.etcd.endpoints();
                let endpoint = via
                    .map(str::to_string)
                    .unwrap_or_else(|| endpoints[client % endpoints.len()].clone());
                Conn::Etcd(EtcdClient::connect(&endpoint).await?)
            }
        })
    }

    /// Writes every key of `value_bytes` once, so reads find them.
    async fn preload(
        &self,
        backend: Backend,
        clients: usize,
        value_bytes: usize,
    ) -> anyhow::Result<()> {
        let value = vec![0x5a_u8; value_bytes];
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut conn = self
                .connect(backend, c, ("write", value_bytes), None)
                .await?;
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..KEYS_PER_CLIENT as u64 {
                    conn.op("write", &key(c, k, value_bytes), &value).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }
}

fn applies(backend: Backend, workload: &str) -> bool {
    match backend {
        Backend::Grid => true,
        Backend::RedisRepl => matches!(workload, "write" | "session"),
        Backend::Redis | Backend::Etcd => workload != "nearcache",
    }
}

async fn measure(
    backends: &Backends,
    backend: Backend,
    (workload, value_bytes): (&'static str, usize),
    clients: usize,
    plan: &Plan,
) -> anyhow::Result<LoadResult> {
    let mut conns = Vec::new();
    for c in 0..clients {
        conns.push(Mutex::new(
            backends
                .connect(backend, c, (workload, value_bytes), None)
                .await?,
        ));
    }
    let conns = Arc::new(conns);
    let value: Arc<[u8]> = vec![0xa5_u8; value_bytes].into();
    Ok(
        load::run(clients, plan.warmup, plan.duration, move |c, seq| {
            let (conns, value) = (Arc::clone(&conns), Arc::clone(&value));
            async move {
                conns[c]
                    .lock()
                    .await
                    .op(workload, &key(c, seq, value_bytes), &value)
                    .await
            }
        })
        .await,
    )
}

/// Runs everything and returns the rows (medians over rounds), the floor first.
pub async fn run(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let floor = floor::ping_pong(VALUE_BYTES, plan.warmup, plan.duration).await?;
    let mut rows = vec![Row {
        backend: "floor".into(),
        workload: "pingpong".into(),
        value_bytes: VALUE_BYTES,
        clients: 1,
        ops_per_sec: floor.ops_per_sec,
        p50_us: floor.p50_us,
        p99_us: floor.p99_us,
        bytes_per_op: 2 * VALUE_BYTES as u64,
        ..Row::default()
    }];
    rows.extend(throughput(plan).await?);
    rows.extend(memory(plan.memory_objects).await?);
    eprintln!("idle: a fresh grid, 64 partitions, {:?}", plan.idle);
    let cpu = crate::idle::cpu_percent(64, plan.idle).await?;
    rows.push(Row {
        backend: "grid".into(),
        workload: "idle".into(),
        cpu_percent: Some(cpu.iter().sum::<f64>() / cpu.len() as f64),
        ..Row::default()
    });
    eprintln!("failover: a fresh grid, {} kills", plan.kills);
    let mut gaps = crate::failover::run(plan.kills).await?;
    gaps.sort_by(f64::total_cmp);
    rows.push(Row {
        backend: "grid".into(),
        workload: "failover".into(),
        value_bytes: 1024,
        p50_ms: gaps.get(gaps.len() / 2).copied(),
        max_ms: gaps.last().copied(),
        ..Row::default()
    });
    Ok(rows)
}

/// The memory rows: grid, Redis and etcd, each fresh, one after the other.
async fn memory(objects: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for backend in [Backend::Grid, Backend::Redis, Backend::Etcd] {
        eprintln!(
            "memory: {} with {objects} x {VALUE_BYTES} B",
            backend.name()
        );
        let per_object = match backend {
            Backend::Grid => crate::memory::grid(objects, VALUE_BYTES).await?,
            Backend::Redis => crate::memory::redis(objects, VALUE_BYTES).await?,
            _ => crate::memory::etcd(objects, VALUE_BYTES).await?,
        };
        rows.push(Row {
            backend: backend.name().into(),
            workload: "memory".into(),
            value_bytes: VALUE_BYTES,
            bytes_per_object: Some(per_object),
            ..Row::default()
        });
    }
    Ok(rows)
}

/// The throughput matrix, every backend running at once, in interleaved rounds.
async fn throughput(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    eprintln!("starting the grid (3 nodes, R=3), Redis, Redis with 2 replicas and etcd (3 members on tmpfs)");
    let grid = start_cluster(3, &["--partitions".into(), "64".into()]).await?;
    let backends = Backends {
        grid_cs: connection_string(&grid),
        _grid: grid,
        redis: RedisServer::start().await?,
        redis_repl: RedisReplicated::start().await?,
        etcd: EtcdCluster::start().await?,
    };
    let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
    for backend in BACKENDS {
        for value_bytes in [4096, 1024] {
            backends.preload(backend, max_clients, value_bytes).await?;
        }
    }
    let mut results: BTreeMap<(Backend, &str, usize, usize), Vec<LoadResult>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for cell in CELLS {
            let (workload, value_bytes) = cell;
            for &clients in &plan.clients {
                for backend in BACKENDS.into_iter().filter(|b| applies(*b, workload)) {
                    let r = measure(&backends, backend, cell, clients, plan).await?;
                    eprintln!(
                        "round {} {} {workload} {value_bytes} B x{clients}: {:.0} ops/s p50 {} µs p99 {} µs ({} errors)",
                        round + 1,
                        backend.name(),
                        r.ops_per_sec,
                        r.p50_us,
                        r.p99_us,
                        r.errors
                    );
                    results
                        .entry((backend, workload, value_bytes, clients))
                        .or_default()
                        .push(r);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for ((backend, workload, value_bytes, clients), runs) in results {
        let median = |f: &dyn Fn(&LoadResult) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        rows.push(Row {
            backend: backend.name().into(),
            workload: workload.into(),
            value_bytes,
            clients,
            ops_per_sec: median(&|r| r.ops_per_sec),
            p50_us: median(&|r| r.p50_us as f64) as u64,
            p99_us: median(&|r| r.p99_us as f64) as u64,
            bytes_per_op: bytes_per_op(&backends, backend, (workload, value_bytes)).await?,
            ..Row::default()
        });
    }
    Ok(rows)
}

/// Bytes on the wire for one operation, both directions: computed from the encoding for
/// the grid (its frames are deterministic), counted through a proxy for Redis and etcd.
async fn bytes_per_op(
    backends: &Backends,
    backend: Backend,
    cell: (&str, usize),
) -> anyhow::Result<u64> {
    let (workload, value_bytes) = cell;
    match backend {
        Backend::Grid => Ok(grid_bytes(workload, value_bytes)),
        Backend::Redis | Backend::RedisRepl | Backend::Etcd => {
            let target = match backend {
                Backend::Redis => backends.redis.addr(),
                Backend::RedisRepl => backends.redis_repl.primary.addr(),
                _ => backends.etcd.endpoints()[0].clone(),
            };
            let target = target.trim_start_matches("http://").to_string();
            let (addr, counted, _proxy) = counting_proxy(target).await?;
            let via = match backend {
                Backend::Etcd => format!("http://{addr}"),
                _ => addr.to_string(),
            };
            let mut conn = backends.connect(backend, 0, cell, Some(&via)).await?;
            let value = vec![0xa5_u8; value_bytes];
            // Connection set-up, not counted.
            conn.op(workload, &key(0, 0, value_bytes), &value).await?;
            let before = counted.load(Ordering::Relaxed);
            const N: u64 = 50;
            for seq in 0..N {
                conn.op(workload, &key(0, seq, value_bytes), &value).await?;
            }
            Ok((counted.load(Ordering::Relaxed) - before) / N)
        }
    }
}

fn frame_len<T>(msg: &T) -> u64
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    // Length prefix, version, request id, payload.
    13 + grid_proto::encode(msg).len() as u64
}

fn grid_bytes(workload: &str, value_bytes: usize) -> u64 {
    let obj = ObjKey::new(NS, key(0, 7, value_bytes).into_bytes());
    let value = vec![0u8; value_bytes];
    let info = ObjectInfo {
        version: 1_000,
        lock_id: None,
        lock_age_ms: 0,
        uninitialized: false,
        timeout: Timeout::None,
    };
    let op = |op: Op| frame_len(&Request::Op(op));
    let read = op(Op::Read {
        obj: obj.clone(),
        cached_version: None,
    }) + frame_len(&Reply::Retrieved {
        value: value.clone(),
        info,
    });
    let write = op(Op::Put {
        obj: obj.clone(),
        value: value.clone(),
        timeout: Timeout::None,
        lock_id: None,
    }) + frame_len(&Reply::Updated { version: 1_001 });
    match workload {
        "read" => read,
        "write" => write,
        "session" => {
            let locked = ObjectInfo {
                lock_id: Some(1_002),
                ..info
            };
            op(Op::ReadAndLock {
                obj: obj.clone(),
                cached_version: None,
                lease_ms: None,
                wait_ms: 5_000,
                take_over_after_ms: None,
            }) + frame_len(&Reply::Retrieved {
                value: value.clone(),
                info: locked,
            }) + op(Op::Update {
                obj: obj.clone(),
                value: value.clone(),
                timeout: None,
                expected_version: None,
                lock_id: Some(1_002),
                unlock: true,
            }) + frame_len(&Reply::Updated { version: 1_003 })
        }
        _ => {
            op(Op::Read {
                obj,
                cached_version: Some(1_000),
            }) + frame_len(&Reply::NotModified { info })
        }
    }
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A loopback TCP proxy to `target` that counts the bytes it forwards both ways; it
/// stops when the returned guard is dropped.
async fn counting_proxy(
    target: String,
) -> anyhow::Result<(std::net::SocketAddr, Arc<AtomicU64>, AbortOnDrop)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counted = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&counted);
    let task = tokio::spawn(async move {
        // Connections are pumped inside this task, so aborting it stops them all.
        let mut pumps = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let total = Arc::clone(&total);
            pumps.spawn(async move {
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = pump(&mut ri, &mut wo, Arc::clone(&total));
                let down = pump(&mut ro, &mut wi, total);
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok((addr, counted, AbortOnDrop(task)))
}

async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counted: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counted.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}
