//! The client's near cache against a real cluster: strictly coherent across clients and
//! across a leader failover, and a `NotModified` read of an unchanged object moves a small
//! fraction of the bytes of a full read.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grid_client::{CacheStats, GridClient, Timeout};
use grid_proto::{key_hash, partition_of};
use grid_tests::cluster::TestCluster;

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

fn counter(value: &[u8]) -> u64 {
    std::str::from_utf8(value).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caching_reader_never_sees_a_value_older_than_a_finished_write() {
    let cluster = TestCluster::start(BIN, 3, &["--partitions", "8"])
        .await
        .unwrap();
    let cs = cluster.connection_string(OPTS);
    let writer = GridClient::connect(&cs).await.unwrap();
    let reader = GridClient::connect(&cs).await.unwrap();
    writer.put("nc", "k", "0", Timeout::None).await.unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let writes = tokio::spawn({
        let (writer, acked) = (writer.clone(), acked.clone());
        async move {
            for n in 1..=300u64 {
                writer
                    .put("nc", "k", n.to_string(), Timeout::None)
                    .await
                    .unwrap();
                acked.store(n, Ordering::SeqCst);
            }
        }
    });
    let mut last = 0;
    let mut reads = 0u64;
    while !writes.is_finished() && reads < 100_000 {
        let floor = acked.load(Ordering::SeqCst);
        let got = counter(&reader.get("nc", "k").await.unwrap().unwrap().value);
        assert!(
            got >= floor,
            "read {got} after write {floor} was acknowledged"
        );
        assert!(got >= last, "reads went back from {last} to {got}");
        last = got;
        reads += 1;
    }
    writes.await.unwrap();
    // Unchanged now: the first read refreshes the copy, the second is a hit.
    assert_eq!(
        counter(&reader.get("nc", "k").await.unwrap().unwrap().value),
        300
    );
    let before = reader.cache_stats();
    assert_eq!(
        counter(&reader.get("nc", "k").await.unwrap().unwrap().value),
        300
    );
    let after = reader.cache_stats();
    assert_eq!(after.hits, before.hits + 1, "{after:?}");
    assert!(
        after.refreshed > 0,
        "the writes replaced the cached copy: {after:?}"
    );
    // The writer's own writes refreshed its cache: its first read is a hit.
    assert_eq!(
        counter(&writer.get("nc", "k").await.unwrap().unwrap().value),
        300
    );
    assert_eq!(writer.cache_stats().hits, 1);
    // Another client's remove drops the object for everyone.
    writer.remove("nc", "k", None).await.unwrap();
    assert!(reader.get("nc", "k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_near_cache_stays_coherent_across_a_leader_failover() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "8"])
        .await
        .unwrap();
    let cs = cluster.connection_string(OPTS);
    let (a, b) = (
        GridClient::connect(&cs).await.unwrap(),
        GridClient::connect(&cs).await.unwrap(),
    );
    a.put("nc", "k", "before", Timeout::None).await.unwrap();
    assert_eq!(a.get("nc", "k").await.unwrap().unwrap().value, b"before");
    let hits = a.cache_stats().hits;
    // The leader of k's partition dies.
    let map = a.partition_map().unwrap();
    let p = partition_of(key_hash("nc", b"k"), map.partitions) as usize;
    let leader = map.leaders[p].unwrap();
    let victim = cluster.index_of(map.addr_of(leader).unwrap()).unwrap();
    cluster.kill(victim).unwrap();
    b.put("nc", "k", "after", Timeout::None).await.unwrap();
    // a still caches "before"; the new leader tells it that is not current.
    let got = a.get("nc", "k").await.unwrap().unwrap();
    assert_eq!(got.value, b"after");
    assert_eq!(a.cache_stats().hits, hits, "no stale hit");
    assert_eq!(a.get("nc", "k").await.unwrap().unwrap().value, b"after");
    assert_eq!(a.cache_stats().hits, hits + 1, "and a hit once current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_not_modified_read_of_an_unchanged_4kb_object_moves_a_small_fraction_of_the_bytes() {
    let cluster = TestCluster::start(BIN, 1, &["--partitions", "4"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    let uncached =
        GridClient::connect(&cluster.connection_string(&format!("{OPTS};clientCacheType=None")))
            .await
            .unwrap();
    client
        .put("nc", "big", vec![42u8; 4096], Timeout::None)
        .await
        .unwrap();
    // What the node sends back: the payload the near cache saves.
    let bytes = |c: &GridClient| c.wire_bytes().received;
    let cost = |c: GridClient| async move {
        let start = bytes(&c);
        assert_eq!(c.get("nc", "big").await.unwrap().unwrap().value.len(), 4096);
        bytes(&c) - start
    };
    let full = cost(uncached.clone()).await;
    let cached = cost(client.clone()).await;
    assert!(full > 4096, "a full read carries the value: {full}");
    assert!(
        cached * 10 < full,
        "NotModified read moved {cached} bytes against {full} for a full read"
    );
    let stats = client.cache_stats();
    assert_eq!((stats.hits, stats.not_modified, stats.misses), (1, 1, 0));
    println!("reply bytes per read of a 4 KB object: full {full}, NotModified {cached}");
    assert_eq!(uncached.cache_stats(), CacheStats::default(), "caching off");
}
