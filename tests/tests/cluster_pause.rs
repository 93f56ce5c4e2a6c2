//! Lease reads under pauses: a node leading partitions is stopped (SIGSTOP), twice, for
//! far longer than its read lease and the followers' vote lease, the others elect new
//! leaders and accept writes, then it resumes with reads of its clients still queued.
//! The history checker must accept every read: a resumed leader answers nothing from its
//! old lease (its monotonic clock ran on while it was stopped) and fails its read
//! confirmation once it hears of the new term.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grid_tests::cluster::TestCluster;
use grid_tests::history::{check_with_teeth, recorded, History, RegisterWorkload, StopOnDrop};
use grid_tests::linearizability::{KeyedCheckResult, RegisterInput, RegisterOutput};
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
/// Clients that give up on a stopped node and move to the new leaders, writing there.
const MOVING: &str = ";maxRequestRetries=8;requestTimeout=2s;connectTimeout=1s";
/// Clients that wait out the pause: their requests sit at the stopped leader, and once it
/// resumes they go on asking it, as their map still says it leads. Reads they send then
/// come after the writes the others made meanwhile; answered from an old lease, they
/// would be stale.
const WAITING: &str = ";maxRequestRetries=8;requestTimeout=20s;connectTimeout=1s";
const KEYS: usize = 4;
const WORKLOAD: RegisterWorkload = RegisterWorkload {
    namespace: "pause",
    keys: KEYS,
    max_ops: 20_000,
};

/// Successful writes recorded that were called after `after` (ns since the epoch).
fn writes_after(history: &History, after: u64) -> usize {
    history
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.op.call > after)
        .filter(|o| {
            matches!(
                o.op.input,
                RegisterInput::Write(_) | RegisterInput::Cas { .. }
            )
        })
        .filter(|o| matches!(o.op.output, Some(RegisterOutput::Written(_))))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_stay_linearizable_when_a_leader_is_paused_past_its_lease() {
    // Bootstrapped by one node, the first leads every partition at first: wait until
    // leadership has spread, then pause the busiest.
    let cluster = TestCluster::start(BIN, 3, &["--partitions", "4"])
        .await
        .unwrap();
    cluster.wait_leaders_spread().await.unwrap();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let epoch = Instant::now();
    let connection =
        |id: usize| cluster.connection_string(if id % 2 == 0 { MOVING } else { WAITING });
    let clients = WORKLOAD
        .start_clients(8, connection, epoch, &history, &stop)
        .await
        .unwrap();
    wait_until("ops before the pause", DEADLINE, || async {
        (recorded(&history) >= 300).then_some(())
    })
    .await
    .unwrap();

    // Two pauses, each of the node leading most partitions then: each resume is a chance
    // for a stale read, should a lease outlive a pause.
    let mut stopped_for = Vec::new();
    for _ in 0..2 {
        let victim = cluster.busiest_leader().await.unwrap();
        let paused_at = epoch.elapsed().as_nanos() as u64;
        cluster.node(victim).unwrap().signal("STOP").unwrap();
        // The others take over and accept writes: past the read lease (0.8 s) and the
        // followers' vote lease (2 s) by the time 50 writes have succeeded without it;
        // and at least 5 s in all.
        let waited = wait_until(
            "writes while the leader is stopped",
            DEADLINE * 2,
            || async {
                let stopped = epoch.elapsed().as_nanos() as u64 - paused_at;
                (writes_after(&history, paused_at) >= 50 && stopped > 5_000_000_000).then_some(())
            },
        )
        .await;
        cluster.node(victim).unwrap().signal("CONT").unwrap();
        waited.unwrap();
        stopped_for.push(Duration::from_nanos(
            epoch.elapsed().as_nanos() as u64 - paused_at,
        ));
        let at_resume = recorded(&history);
        wait_until("ops after the resume", DEADLINE * 2, || async {
            (recorded(&history) >= at_resume + 300).then_some(())
        })
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
    }

    let history = history.lock().unwrap().clone();
    let reads = history
        .iter()
        .filter(|o| matches!(o.op.output, Some(RegisterOutput::ReadOk(_))))
        .count();
    let verdict = check_with_teeth(&history, Duration::from_secs(120));
    eprintln!(
        "leaders stopped for {stopped_for:?}; {} ops ({reads} reads answered) checked: {verdict:?}",
        history.len()
    );
    assert!(
        stopped_for.iter().all(|d| *d > Duration::from_secs(5)),
        "{stopped_for:?}"
    );
    assert_eq!(verdict, KeyedCheckResult::Linearizable);
}
