//! Memory per object: a fresh backend, its resident memory empty and after `objects`
//! values of `value_bytes` each were written, divided by the objects. For the grid (3
//! nodes, R = 3: every node holds every object) the mean over its nodes, so it is the
//! memory of one replica; for Redis, `used_memory_rss` of the one server; for etcd, the
//! mean RSS of its members.

use std::time::Duration;

use anyhow::Context;
use grid_client::{GridClient, Timeout};

use crate::etcd_peer::{EtcdClient, EtcdCluster};
use crate::nodes::{connection_string, start_cluster};
use crate::procfs::settled_rss;
use crate::redis_peer::{RedisClient, RedisServer};

/// Writers loading the objects at once.
const WRITERS: usize = 64;
/// How long the resident memory may take to stop moving after the load.
const SETTLE: Duration = Duration::from_secs(20);

/// Runs `write(writer, key)` for `objects` distinct keys from [`WRITERS`] tasks, each
/// with the connection `connect` gave it.
async fn load<C, W, Fut>(
    objects: usize,
    connect: impl AsyncFn() -> anyhow::Result<C>,
    write: W,
) -> anyhow::Result<()>
where
    C: Send + 'static,
    W: Fn(C, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<C>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let mut conn = connect().await?;
        let write = write.clone();
        tasks.spawn(async move {
            for i in (w..objects).step_by(WRITERS) {
                conn = write(conn, format!("m{i}")).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn per_object(before: u64, after: u64, objects: usize, replicas: usize) -> f64 {
    after.saturating_sub(before) as f64 / replicas as f64 / objects as f64
}

/// The grid: bytes per object per replica.
pub async fn grid(objects: usize, value_bytes: usize) -> anyhow::Result<f64> {
    let nodes = start_cluster(3, &["--partitions".into(), "64".into()]).await?;
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    let before = settled_rss(&pids, SETTLE).await?;
    let cs = format!(
        "{};maxPoolSize=1;clientCacheType=None",
        connection_string(&nodes)
    );
    let value = vec![0x5a_u8; value_bytes];
    load(
        objects,
        async || Ok(GridClient::connect(&cs).await?),
        move |c: GridClient, key| {
            let value = value.clone();
            async move {
                c.put("mem", key, value, Timeout::None).await?;
                Ok(c)
            }
        },
    )
    .await?;
    let after = settled_rss(&pids, SETTLE).await?;
    Ok(per_object(before, after, objects, nodes.len()))
}

/// One Redis server: bytes of `used_memory_rss` per object.
pub async fn redis(objects: usize, value_bytes: usize) -> anyhow::Result<f64> {
    let server = RedisServer::start().await?;
    let addr = server.addr();
    let used = async || -> anyhow::Result<u64> {
        let mut c = RedisClient::connect(&addr).await?;
        c.info_field("memory", "used_memory_rss")
            .await?
            .parse()
            .context("used_memory_rss is not a number")
    };
    let before = used().await?;
    let value = vec![0x5a_u8; value_bytes];
    load(
        objects,
        async || RedisClient::connect(&addr).await,
        move |mut c: RedisClient, key| {
            let value = value.clone();
            async move {
                c.set(&key, &value).await?;
                Ok(c)
            }
        },
    )
    .await?;
    // Redis updates used_memory_rss from /proc about once per 100 ms (its cron).
    settled_rss(&[server.pid()], SETTLE).await?;
    let after = used().await?;
    Ok(per_object(before, after, objects, 1))
}

/// A 3-member etcd cluster: bytes of RSS per object per member.
pub async fn etcd(objects: usize, value_bytes: usize) -> anyhow::Result<f64> {
    let cluster = EtcdCluster::start().await?;
    let pids = cluster.pids();
    let before = settled_rss(&pids, SETTLE).await?;
    let endpoints = cluster.endpoints();
    let value = vec![0x5a_u8; value_bytes];
    let next = std::sync::atomic::AtomicUsize::new(0);
    load(
        objects,
        async || {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            EtcdClient::connect(&endpoints[i % endpoints.len()]).await
        },
        move |mut c: EtcdClient, key| {
            let value = value.clone();
            async move {
                c.put(&key, &value).await?;
                Ok(c)
            }
        },
    )
    .await?;
    let after = settled_rss(&pids, SETTLE).await?;
    Ok(per_object(before, after, objects, pids.len()))
}
