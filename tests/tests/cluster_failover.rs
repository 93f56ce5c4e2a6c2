//! Failover of real node processes: acknowledged writes survive a leader's kill -9, and
//! the cluster keeps serving.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use grid_client::{GridClient, Timeout};
use grid_tests::cluster::TestCluster;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const CLIENT_OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_when_the_leader_is_killed() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "8"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, acked, failed, stop) =
            (client.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (key, value) = (format!("w{w}-{i}"), format!("value {w} {i}"));
                match client
                    .put("failover", &key, value.clone(), Timeout::None)
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push((key, value)),
                    // Indeterminate or refused: not acknowledged, so not checked.
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let count = |acked: &Arc<Mutex<Vec<(String, String)>>>| acked.lock().unwrap().len();
    wait_until("writes before the kill", DEADLINE, || async {
        (count(&acked) >= 100).then_some(())
    })
    .await
    .unwrap();
    let victim = cluster.busiest_leader().await.unwrap();
    cluster.kill(victim).unwrap();
    let at_kill = count(&acked);
    wait_until("writes after the kill", DEADLINE * 2, || async {
        (count(&acked) >= at_kill + 200).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let mut lost = Vec::new();
    for (key, value) in &acked {
        match reader.get("failover", key).await.unwrap() {
            Some(o) if o.value == value.as_bytes() => {}
            other => lost.push((key.clone(), other.map(|o| o.value))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "acknowledged {} writes ({} after the kill), {} not acknowledged, none lost",
        acked.len(),
        acked.len() - at_kill,
        failed.load(Ordering::Relaxed)
    );
    // The survivors re-replicate the dead node's share and settle with two nodes.
    cluster.wait_settled(2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_leaves_gracefully_and_loses_nothing() {
    let mut cluster = TestCluster::start(BIN, 4, &["--partitions", "8"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    for i in 0..200 {
        client
            .put("leave", format!("k{i}"), format!("v{i}"), Timeout::None)
            .await
            .unwrap();
    }
    let victim = cluster.busiest_leader().await.unwrap();
    let victim_addr = cluster.node(victim).unwrap().client_addr().to_string();
    cluster.node(victim).unwrap().signal("TERM").unwrap();
    let status = cluster.wait_exit(victim, DEADLINE * 3).unwrap();
    assert!(status.success(), "{status:?}");
    cluster.wait_settled(3).await.unwrap();
    client.refresh().await.unwrap();
    let map = client.partition_map().unwrap();
    let gone = map.nodes.iter().find(|n| n.addr == victim_addr).unwrap();
    assert!(!gone.active);
    assert!(map
        .replicas
        .iter()
        .all(|r| r.len() == 3 && !r.contains(&gone.id)));
    for i in 0..200 {
        let o = client.get("leave", format!("k{i}")).await.unwrap().unwrap();
        assert_eq!(o.value, format!("v{i}").into_bytes());
    }
}

/// Writing the same value again is harmless, so a write whose outcome was unknown (its
/// connection died with the killed node) is simply repeated.
async fn put_until_acknowledged(client: &GridClient, key: &str) {
    for _ in 0..20 {
        if client
            .put("restart", key, key.as_bytes().to_vec(), Timeout::None)
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("{key} was never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_nodes_rejoin_and_catch_up_until_no_original_is_left() {
    // Small snapshot interval, so catching up uses snapshots as well as the log.
    let mut cluster =
        TestCluster::start(BIN, 3, &["--partitions", "4", "--raft-snapshot-logs", "50"])
            .await
            .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    for i in 0..400 {
        client
            .put("restart", format!("k{i}"), format!("v{i}"), Timeout::None)
            .await
            .unwrap();
    }
    for i in 0..3 {
        let addr = cluster.node(i).unwrap().client_addr().to_string();
        cluster.kill(i).unwrap();
        // Writes go on while the node is down; the replacement must catch up on them too.
        for j in 0..50 {
            let key = format!("during-{i}-{j}");
            put_until_acknowledged(&client, &key).await;
        }
        cluster.restart(i, &addr).unwrap();
        cluster.wait_settled(3).await.unwrap();
    }
    // Every process now is a replacement that started empty.
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    for i in 0..400 {
        let o = reader
            .get("restart", format!("k{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.value, format!("v{i}").into_bytes());
    }
    for i in 0..3 {
        for j in 0..50 {
            let key = format!("during-{i}-{j}");
            assert_eq!(
                reader.get("restart", &key).await.unwrap().unwrap().value,
                key.into_bytes()
            );
        }
    }
}
