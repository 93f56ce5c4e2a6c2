//! The side-by-side run: the grid, Redis and etcd on this machine, driven by the same
//! load generator with the same value size and concurrency, in interleaved rounds
//! (grid, redis, etcd, grid, redis, etcd, ...) so machine drift hits all alike; each cell
//! reports the median over rounds.
//!
//! Workloads (4 KB values, `KEYS_PER_CLIENT` keys per client, preloaded):
//! - `read`: grid linearizable `get`; Redis `GET`; etcd linearizable range.
//! - `write`: grid replicated `put` (R=3); Redis `SET` (unreplicated); etcd put (3 members).
//! - `session`: grid read-and-lock + write-and-unlock (exclusive); Redis and etcd the
//!   closest equivalent without a lock, read + write.
//! - `nearcache`: grid `get` through the client's near cache holding the key: it sends
//!   the cached version and gets `NotModified` (strict coherence); no equivalent on the
//!   others. Every other grid workload runs with the near cache off.

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
use crate::redis_peer::{RedisClient, RedisServer};
use crate::report::Row;

/// Keys each client works on.
pub const KEYS_PER_CLIENT: usize = 50;
/// Value size.
pub const VALUE_BYTES: usize = 4096;
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
}

impl Plan {
    /// Seconds-long smoke run: 1 and 16 clients, one round.
    pub fn quick() -> Self {
        Self {
            clients: vec![1, 16],
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            rounds: 1,
        }
    }

    /// The full run: 1, 16 and 64 clients, three rounds.
    pub fn full() -> Self {
        Self {
            clients: vec![1, 16, 64],
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(4),
            rounds: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Grid,
    Redis,
    Etcd,
}

const BACKENDS: [Backend; 3] = [Backend::Grid, Backend::Redis, Backend::Etcd];
const WORKLOADS: [&str; 4] = ["read", "write", "session", "nearcache"];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Grid => "grid",
            Backend::Redis => "redis",
            Backend::Etcd => "etcd",
        }
    }
}

/// One client's connection to one backend.
enum Conn {
    Grid(GridClient),
    Redis(RedisClient),
    Etcd(EtcdClient),
}

fn key(client: usize, seq: u64) -> String {
    format!("k{client}-{}", seq % KEYS_PER_CLIENT as u64)
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

/// The three backends, running.
struct Backends {
    grid_cs: String,
    _grid: Vec<crate::nodes::BenchNode>,
    redis: RedisServer,
    etcd: EtcdCluster,
}

impl Backends {
    /// A client of `backend`; for the grid, with the near cache on (and filled with the
    /// client's keys) for the `nearcache` workload, off otherwise.
    async fn connect(
        &self,
        backend: Backend,
        client: usize,
        workload: &str,
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
                        client_handle.get(NS, key(client, k)).await?;
                    }
                }
                Conn::Grid(client_handle)
            }
            Backend::Redis => {
                Conn::Redis(RedisClient::connect(via.unwrap_or(&self.redis.addr())).await?)
            }
            Backend::Etcd => {
                let endpoints = self.etcd.endpoints();
                let endpoint = via
                    .map(str::to_string)
                    .unwrap_or_else(|| endpoints[client % endpoints.len()].clone());
                Conn::Etcd(EtcdClient::connect(&endpoint).await?)
            }
        })
    }

    /// Writes every key once, so reads find them.
    async fn preload(&self, backend: Backend, clients: usize) -> anyhow::Result<()> {
        let value = vec![0x5a_u8; VALUE_BYTES];
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut conn = self.connect(backend, c, "write", None).await?;
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..KEYS_PER_CLIENT as u64 {
                    conn.op("write", &key(c, k), &value).await?;
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
    workload != "nearcache" || backend == Backend::Grid
}

async fn measure(
    backends: &Backends,
    backend: Backend,
    workload: &'static str,
    clients: usize,
    plan: &Plan,
) -> anyhow::Result<LoadResult> {
    let mut conns = Vec::new();
    for c in 0..clients {
        conns.push(Mutex::new(
            backends.connect(backend, c, workload, None).await?,
        ));
    }
    let conns = Arc::new(conns);
    let value: Arc<[u8]> = vec![0xa5_u8; VALUE_BYTES].into();
    Ok(
        load::run(clients, plan.warmup, plan.duration, move |c, seq| {
            let (conns, value) = (Arc::clone(&conns), Arc::clone(&value));
            async move {
                conns[c]
                    .lock()
                    .await
                    .op(workload, &key(c, seq), &value)
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
        clients: 1,
        ops_per_sec: floor.ops_per_sec,
        p50_us: floor.p50_us,
        p99_us: floor.p99_us,
        bytes_per_op: 2 * VALUE_BYTES as u64,
    }];
    eprintln!("starting the grid (3 nodes, R=3), Redis and etcd (3 members on tmpfs)");
    let grid = start_cluster(3, &["--partitions".into(), "64".into()]).await?;
    let backends = Backends {
        grid_cs: connection_string(&grid),
        _grid: grid,
        redis: RedisServer::start().await?,
        etcd: EtcdCluster::start().await?,
    };
    let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
    for backend in BACKENDS {
        backends.preload(backend, max_clients).await?;
    }
    let mut results: BTreeMap<(Backend, &str, usize), Vec<LoadResult>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for workload in WORKLOADS {
            for &clients in &plan.clients {
                for backend in BACKENDS.into_iter().filter(|b| applies(*b, workload)) {
                    let r = measure(&backends, backend, workload, clients, plan).await?;
                    eprintln!(
                        "round {} {} {workload} x{clients}: {:.0} ops/s p50 {} µs p99 {} µs ({} errors)",
                        round + 1,
                        backend.name(),
                        r.ops_per_sec,
                        r.p50_us,
                        r.p99_us,
                        r.errors
                    );
                    results
                        .entry((backend, workload, clients))
                        .or_default()
                        .push(r);
                }
            }
        }
    }
    for ((backend, workload, clients), runs) in results {
        let median = |f: &dyn Fn(&LoadResult) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        rows.push(Row {
            backend: backend.name().into(),
            workload: workload.into(),
            clients,
            ops_per_sec: median(&|r| r.ops_per_sec),
            p50_us: median(&|r| r.p50_us as f64) as u64,
            p99_us: median(&|r| r.p99_us as f64) as u64,
            bytes_per_op: bytes_per_op(&backends, backend, workload).await?,
        });
    }
    Ok(rows)
}

/// Bytes on the wire for one operation, both directions: computed from the encoding for
/// the grid (its frames are deterministic), counted through a proxy for Redis and etcd.
async fn bytes_per_op(
    backends: &Backends,
    backend: Backend,
    workload: &str,
) -> anyhow::Result<u64> {
    match backend {
        Backend::Grid => Ok(grid_bytes(workload)),
        Backend::Redis | Backend::Etcd => {
            let target = match backend {
                Backend::Redis => backends.redis.addr(),
                _ => backends.etcd.endpoints()[0].clone(),
            };
            let target = target.trim_start_matches("http://").to_string();
            let (addr, counted, _proxy) = counting_proxy(target).await?;
            let via = match backend {
                Backend::Etcd => format!("http://{addr}"),
                _ => addr.to_string(),
            };
            let mut conn = backends.connect(backend, 0, workload, Some(&via)).await?;
            let value = vec![0xa5_u8; VALUE_BYTES];
            conn.op(workload, &key(0, 0), &value).await?; // connection set-up, not counted
            let before = counted.load(Ordering::Relaxed);
            const N: u64 = 50;
            for seq in 0..N {
                conn.op(workload, &key(0, seq), &value).await?;
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

fn grid_bytes(workload: &str) -> u64 {
    let obj = ObjKey::new(NS, key(0, 7).into_bytes());
    let value = vec![0u8; VALUE_BYTES];
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
