//! Linearizability under faults: concurrent reads, writes and compare-and-set (by
//! version) on a few keys, while the partition leader is killed and later a node is cut
//! off from the others. The recorded history is checked with the Wing-Gong checker;
//! operations whose outcome is unknown (timeouts, broken connections, leadership lost
//! mid-write) are recorded as such, not as failures.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grid_tests::cluster::TestCluster;
use grid_tests::history::{check_with_teeth, recorded, History, RegisterWorkload};
use grid_tests::linearizability::KeyedCheckResult;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const CLIENT_OPTS: &str = ";maxRequestRetries=8;requestTimeout=2s;connectTimeout=1s";
const KEYS: usize = 4;
const WORKLOAD: RegisterWorkload = RegisterWorkload {
    namespace: "lin",
    keys: KEYS,
    max_ops: 20_000,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_under_leader_kill_and_partition_is_linearizable() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "4"])
        .await
        .unwrap();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let connection = |_| cluster.connection_string(CLIENT_OPTS);
    let clients = WORKLOAD
        .start_clients(6, connection, epoch, &history, &stop)
        .await
        .unwrap();
    wait_until("ops before the kill", DEADLINE, || async {
        (recorded(&history) >= 300).then_some(())
    })
    .await
    .unwrap();
    // Kill the node that leads the most partitions (all of them, after bootstrap).
    let victim = cluster.busiest_leader().await.unwrap();
    cluster.kill(victim).unwrap();
    let at_kill = recorded(&history);
    wait_until("ops after the kill", DEADLINE * 2, || async {
        (recorded(&history) >= at_kill + 300).then_some(())
    })
    .await
    .unwrap();
    // Cut the survivors apart for a while (neither side has a quorum of three), then heal.
    cluster.split_for(Duration::from_secs(2)).await.unwrap();
    let at_heal = recorded(&history);
    wait_until("ops after healing", DEADLINE * 2, || async {
        (recorded(&history) >= at_heal + 300).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let unknown = history.iter().filter(|o| o.op.is_indeterminate()).count();
    let started = Instant::now();
    // Also shows that the check has teeth: the same history with a read changed to a
    // value nobody wrote is rejected.
    let verdict = check_with_teeth(&history, Duration::from_secs(120));
    eprintln!(
        "{} ops ({unknown} with unknown outcome) on {KEYS} keys checked in {:?}: {verdict:?}",
        history.len(),
        started.elapsed()
    );
    assert_eq!(verdict, KeyedCheckResult::Linearizable);
}
