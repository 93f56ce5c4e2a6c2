//! Growing a loaded cluster: partitions move to new nodes while clients keep reading and
//! writing, with no errors beyond retried ones and no lost data.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use grid_client::{GridClient, Timeout};
use grid_tests::cluster::TestCluster;
use grid_tests::DEADLINE;

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const CLIENT_OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_two_nodes_moves_partitions_without_errors_or_loss() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "16"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    // Preload, so the moves carry data (snapshots and logs).
    for i in 0..300 {
        client
            .put(
                "load",
                format!("pre-{i}"),
                vec![i as u8; 512],
                Timeout::None,
            )
            .await
            .unwrap();
    }
    let latest: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, latest, errors, ops, stop) = (
            client.clone(),
            latest.clone(),
            errors.clone(),
            ops.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            for i in 0..20_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Each worker owns its keys, so the last acknowledged value is known.
                let key = format!("w{w}-{}", i % 50);
                let value = format!("{w}:{i}").into_bytes();
                match client.put("load", &key, value.clone(), Timeout::None).await {
                    Ok(_) => {
                        latest.lock().unwrap().insert(key.clone(), value.clone());
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(format!("put {key}: {e}"));
                        continue;
                    }
                }
                match client.get("load", &key).await {
                    Ok(Some(o)) if o.value == value => {}
                    Ok(other) => errors
                        .lock()
                        .unwrap()
                        .push(format!("get {key}: read {other:?} after writing {value:?}")),
                    Err(e) => errors.lock().unwrap().push(format!("get {key}: {e}")),
                }
                ops.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    cluster.add_node_process().unwrap();
    cluster.wait_settled(4).await.unwrap();
    let after_fourth = ops.load(Ordering::Relaxed);
    cluster.add_node_process().unwrap();
    cluster.wait_settled(5).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Every node holds a share, and no data was lost.
    let map = client.partition_map().unwrap();
    for node in map.nodes.iter().filter(|n| n.active) {
        let held = map.replicas.iter().filter(|r| r.contains(&node.id)).count();
        assert!(held > 0, "node {} holds no partition", node.id);
    }
    for i in 0..300 {
        let o = client
            .get("load", format!("pre-{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.value, vec![i as u8; 512]);
    }
    let latest = latest.lock().unwrap().clone();
    for (key, value) in &latest {
        assert_eq!(
            &client.get("load", key).await.unwrap().unwrap().value,
            value,
            "{key}"
        );
    }
    eprintln!(
        "{} operations during the moves ({} by the 4th node's settling), no errors",
        ops.load(Ordering::Relaxed),
        after_fourth
    );
}
