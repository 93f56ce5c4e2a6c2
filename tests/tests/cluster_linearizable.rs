//! Linearizability under faults: concurrent reads, writes and compare-and-set (by
//! version) on a few keys, while the partition leader is killed and later a node is cut
//! off from the others. The recorded history is checked with the Wing-Gong checker;
//! operations whose outcome is unknown (timeouts, broken connections, leadership lost
//! mid-write) are recorded as such, not as failures.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grid_client::GridClient;
use grid_tests::cluster::TestCluster;
use grid_tests::history::{recorded, History, RegisterWorkload};
use grid_tests::linearizability::{
    check_per_key, KeyedCheckResult, RegisterOutput, VersionedRegister,
};
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
    let mut clients = Vec::new();
    for id in 0..6 {
        let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
            .await
            .unwrap();
        clients.push(tokio::spawn(WORKLOAD.client_loop(
            client,
            id,
            epoch,
            history.clone(),
            stop.clone(),
        )));
    }
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
    let verdict = check_per_key(&VersionedRegister, &history, Duration::from_secs(120));
    eprintln!(
        "{} ops ({unknown} with unknown outcome) on {KEYS} keys checked in {:?}: {verdict:?}",
        history.len(),
        started.elapsed()
    );
    assert_eq!(verdict, KeyedCheckResult::Linearizable);

    // The check has teeth: the same history with one read changed to a value nobody
    // wrote is rejected.
    let mut corrupted = history.clone();
    let read = corrupted
        .iter_mut()
        .find(|o| matches!(o.op.output, Some(RegisterOutput::ReadOk(Some(_)))))
        .expect("the run recorded a successful read");
    if let Some(RegisterOutput::ReadOk(Some((value, _)))) = &mut read.op.output {
        *value = "never written".into();
    }
    let verdict = check_per_key(&VersionedRegister, &corrupted, Duration::from_secs(120));
    assert!(
        matches!(verdict, KeyedCheckResult::NotLinearizable { .. }),
        "{verdict:?}"
    );
}
