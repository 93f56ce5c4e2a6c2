//! `gridctl backup` of a running cluster under writes and `gridctl restore` into a fresh
//! one (with data directories), compared key by key; a damaged or foreign backup file is
//! refused with a clear error.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use grid_client::{GridClient, Timeout};
use grid_tests::cluster::TestCluster;
use grid_tests::process::run_with_deadline;
use grid_tests::scratch::ScratchDir;
use grid_tests::{wait_until, DEADLINE};

const NODE: &str = env!("CARGO_BIN_EXE_test-node");
const GRIDCTL: &str = env!("CARGO_BIN_EXE_test-gridctl");
const OPTS: &str = ";maxRequestRetries=12;requestTimeout=5s;connectTimeout=1s";

/// Runs gridctl against `cs` off the async threads: exit code, stdout, stderr.
async fn gridctl(cs: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(GRIDCTL);
    cmd.args(args).env("GRID_CONNECTION", cs);
    tokio::task::spawn_blocking(move || {
        let (status, out, err) = run_with_deadline(&mut cmd, None, DEADLINE * 4).unwrap();
        (status.code().unwrap(), String::from_utf8(out).unwrap(), err)
    })
    .await
    .unwrap()
}

/// Every object of the cluster `client` talks to, through the export path.
async fn everything(client: &GridClient) -> BTreeMap<Vec<u8>, Vec<u8>> {
    client.refresh().await.unwrap();
    let partitions = client.partition_map().unwrap().partitions;
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        for o in client.export_partition(p).await.unwrap() {
            assert_eq!(o.obj.namespace, "sessions");
            assert!(
                all.insert(o.obj.key, o.value).is_none(),
                "one partition per key"
            );
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_writes_restores_into_a_fresh_cluster_key_by_key() {
    let source = TestCluster::start(NODE, 3, &["--partitions", "8"])
        .await
        .unwrap();
    let cs = source.connection_string(OPTS);
    let client = GridClient::connect(&cs).await.unwrap();
    let timeouts = [
        Timeout::None,
        Timeout::Sliding { ms: 3_600_000 },
        Timeout::Absolute { ms: 3_600_000 },
    ];
    for i in 0..300usize {
        let value = format!("before {i} {}", "v".repeat(i % 50));
        client
            .put("sessions", format!("k{i}"), value, timeouts[i % 3])
            .await
            .unwrap();
    }
    // Every tenth is tagged: the tags travel in the backup.
    let mut tagged = Vec::new();
    for i in (0..300usize).step_by(10) {
        let options = grid_client::WriteOptions {
            tags: Some(vec!["tenth".into()]),
            ..Default::default()
        };
        let key = format!("k{i}");
        client
            .write("sessions", &key, grid_proto::WriteBody::Keep, options)
            .await
            .unwrap();
        tagged.push(key.into_bytes());
    }
    tagged.sort();

    // Writers run through the whole backup, each key written once.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (client, stop, acked) = (client.clone(), Arc::clone(&stop), Arc::clone(&acked));
            tokio::spawn(async move {
                for i in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (key, value) = (format!("live{t}-{i}"), format!("live value {t} {i}"));
                    let timeout = Timeout::Sliding { ms: 3_600_000 };
                    if client
                        .put("sessions", &key, value.clone(), timeout)
                        .await
                        .is_ok()
                    {
                        acked
                            .lock()
                            .unwrap()
                            .insert(key.into_bytes(), value.into_bytes());
                    }
                }
            })
        })
        .collect();
    let acked_before = wait_until("writes under way", DEADLINE, || async {
        let n = acked.lock().unwrap().clone();
        (n.len() >= 50).then_some(n)
    })
    .await
    .unwrap();
    let dir = ScratchDir::new("backup").unwrap();
    let file = dir.join("grid.backup");
    let (code, out, err) = gridctl(&cs, &["backup", &file]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("backed up "), "{out}");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let source_now = everything(&client).await;

    // A fresh cluster, with data directories this time, and another partition count.
    let per_node = (0..3)
        .map(|i| vec!["--data-dir".to_string(), dir.join(&format!("node{i}"))])
        .collect();
    let target = TestCluster::start_each(NODE, &["--partitions", "5"], per_node)
        .await
        .unwrap();
    let target_cs = target.connection_string(OPTS);
    let (code, out, err) = gridctl(&target_cs, &["restore", &file]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("restored "), "{out}");
    let target_client = GridClient::connect(&target_cs).await.unwrap();
    let restored = everything(&target_client).await;
    assert_eq!(
        target_client
            .find_by_tag("sessions", "tenth")
            .await
            .unwrap(),
        tagged
    );

    // Every object written before the backup is there with its value; every restored
    // object is one the source acknowledged, with that value.
    for i in 0..300usize {
        let key = format!("k{i}").into_bytes();
        assert_eq!(restored.get(&key), source_now.get(&key), "k{i}");
        assert!(restored.contains_key(&key), "k{i}");
    }
    for (key, value) in &acked_before {
        assert_eq!(
            restored.get(key),
            Some(value),
            "acknowledged before the backup"
        );
    }
    for (key, value) in &restored {
        assert_eq!(
            source_now.get(key),
            Some(value),
            "restored only what the source had"
        );
        if key.starts_with(b"live") {
            assert_eq!(acked.get(key), Some(value));
        }
    }
    let target_client = GridClient::connect(&target_cs).await.unwrap();

    // A damaged file and a foreign one restore nothing and say why.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let damaged = dir.join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, _, err) = gridctl(&target_cs, &["restore", &damaged]).await;
    assert_eq!(code, 2);
    assert!(err.contains("is damaged"), "{err}");
    let foreign = dir.join("foreign.backup");
    std::fs::write(&foreign, b"SQLite format 3\0").unwrap();
    let (code, _, err) = gridctl(&target_cs, &["restore", &foreign]).await;
    assert_eq!(code, 2);
    assert!(err.contains("is not a grid backup"), "{err}");
    assert_eq!(
        everything(&target_client).await,
        restored,
        "nothing changed"
    );
}
