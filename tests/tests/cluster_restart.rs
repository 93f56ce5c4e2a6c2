//! Nodes with a data directory: every node killed with kill -9 at the same moment and
//! started again with its directory loses no acknowledged write (`--fsync always`), and
//! locks (with their lock ids), timeouts and pending expiration events carry on. A node
//! whose log or snapshot was damaged while it was down finds it on start, cuts the log
//! back or refuses the snapshot, and (its copy now in doubt) joins again as a new member
//! that copies its partitions from its peers; nothing damaged is served. A disk that
//! fills up refuses writes with a clear error while reads go on, and loses nothing.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_client::{GridClient, LockOptions, LockResult, Timeout, UpdateOptions};
use grid_tests::cluster::TestCluster;
use grid_tests::scratch::{ScratchDir, SmallDisk};
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const OPTS: &str = ";maxRequestRetries=20;requestTimeout=5s;connectTimeout=1s";
const HOUR: Timeout = Timeout::Sliding { ms: 3_600_000 };

/// Three nodes, each with its own data directory under `dirs`.
async fn durable_cluster(dirs: &ScratchDir, fsync: &str) -> TestCluster {
    let per_node = (0..3)
        .map(|i| {
            vec![
                "--data-dir".to_string(),
                dirs.join(&format!("node{i}")),
                "--fsync".to_string(),
                fsync.to_string(),
            ]
        })
        .collect();
    TestCluster::start_each(BIN, &["--partitions", "8"], per_node)
        .await
        .unwrap()
}

/// Kills every node at once and starts each again at its address with its directory.
async fn kill_all_and_restart(cluster: &mut TestCluster) {
    let addrs: Vec<String> = cluster
        .live()
        .map(|n| n.client_addr().to_string())
        .collect();
    cluster.kill_all().unwrap();
    for (i, addr) in addrs.iter().enumerate() {
        cluster.restart(i, addr).unwrap();
    }
    cluster.wait_settled(3).await.unwrap();
}

/// Acknowledged writes: key, value.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writes distinct keys from `tasks` clients until stopped; returns each acknowledged
/// key with its value.
fn write_until_stopped(
    client: &GridClient,
    tasks: usize,
    stop: &Arc<AtomicBool>,
) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let handles = (0..tasks)
        .map(|t| {
            let (client, stop, acked) = (client.clone(), Arc::clone(stop), Arc::clone(&acked));
            tokio::spawn(async move {
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (key, value) = (format!("w{t}-{i}"), format!("value {t} {i}"));
                    match client.put("sessions", &key, value.clone(), HOUR).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key, value);
                        }
                        // Its node was killed: whether this write landed is unknown.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    (acked, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cluster_kill_and_restart_keeps_every_acknowledged_write_lock_and_event() {
    let dirs = ScratchDir::new("restart").unwrap();
    let mut cluster = durable_cluster(&dirs, "always").await;
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();

    // A lock held across the restart, and an object that expired before it with no
    // one registered for its event yet.
    client
        .put("sessions", "locked", "held", HOUR)
        .await
        .unwrap();
    let LockResult::Acquired { lock_id, .. } = client
        .lock(
            "sessions",
            "locked",
            LockOptions {
                lease: Some(Duration::from_secs(3_600)),
                ..LockOptions::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("the lock was not granted");
    };
    client
        .put(
            "sessions",
            "expired",
            "gone before",
            Timeout::Absolute { ms: 200 },
        )
        .await
        .unwrap();
    wait_until("the short-lived object expires", DEADLINE, || async {
        client
            .get("sessions", "expired")
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    })
    .await
    .unwrap();
    // One that expires only after the restart.
    client
        .put(
            "sessions",
            "expiring",
            "gone after",
            Timeout::Absolute { ms: 20_000 },
        )
        .await
        .unwrap();

    // A tagged object: its tag is found again after the restart.
    let tagged = grid_client::WriteOptions {
        tags: Some(vec!["user:9".into()]),
        create: true,
        ..Default::default()
    };
    client
        .write(
            "sessions",
            "tagged",
            grid_proto::WriteBody::Whole(b"t".to_vec()),
            tagged,
        )
        .await
        .unwrap();

    // Writes under way when every node dies at once.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writers) = write_until_stopped(&client, 8, &stop);
    wait_until("writes are acknowledged", DEADLINE, || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await
    .unwrap();
    kill_all_and_restart(&mut cluster).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);
    for (key, value) in &acked {
        let got = client.get("sessions", key).await.unwrap();
        assert_eq!(
            got.map(|o| o.value),
            Some(value.clone().into_bytes()),
            "acknowledged write {key} after the restart"
        );
    }

    assert_eq!(
        client.find_by_tag("sessions", "user:9").await.unwrap(),
        vec![b"tagged".to_vec()]
    );

    // The lock is still held under the same id: another lock attempt sees it, a stale
    // id is refused, the holder's id works.
    match client
        .lock("sessions", "locked", LockOptions::default())
        .await
        .unwrap()
    {
        LockResult::Locked { lock_id: held, .. } => assert_eq!(held, lock_id),
        other => panic!("the lock did not survive the restart: {other:?}"),
    }
    let stale = client
        .update(
            "sessions",
            "locked",
            "intruder",
            UpdateOptions {
                lock_id: Some(lock_id + 1),
                ..UpdateOptions::default()
            },
        )
        .await;
    assert!(stale.is_err(), "a wrong lock id is refused: {stale:?}");
    client
        .update(
            "sessions",
            "locked",
            "holder",
            UpdateOptions {
                lock_id: Some(lock_id),
                unlock: true,
                ..UpdateOptions::default()
            },
        )
        .await
        .unwrap();
    let value = client
        .get("sessions", "locked")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(value, b"holder");

    // Both expirations reach the first client to register: the one owed from before the
    // restart, and the one due after it.
    let mut events = client.subscribe("sessions").await.unwrap();
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let delivery = tokio::time::timeout(left, events.next())
            .await
            .expect("expiration events after the restart")
            .expect("the event stream ended");
        let key = String::from_utf8(delivery.event.obj.key.clone()).unwrap();
        seen.insert(key, delivery.event.value.clone());
        let _ = delivery.ack().await;
    }
    assert_eq!(
        seen.get("expired").map(Vec::as_slice),
        Some(&b"gone before"[..])
    );
    assert_eq!(
        seen.get("expiring").map(Vec::as_slice),
        Some(&b"gone after"[..])
    );
    assert!(client.get("sessions", "expiring").await.unwrap().is_none());
}

/// Three nodes with `per_node` arguments and 4 partitions, and a client of them.
async fn four_partitions(per_node: Vec<Vec<String>>) -> (TestCluster, GridClient) {
    let cluster = TestCluster::start_each(BIN, &["--partitions", "4"], per_node)
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    (cluster, client)
}

/// The last log segment of group directory `group`.
fn last_segment(group: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(group.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

fn flip_byte(path: &Path, from_end: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - from_end as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_damaged_files_cuts_or_refuses_them_and_catches_up_from_its_peers() {
    let dirs = ScratchDir::new("damage").unwrap();
    let per_node = (0..3)
        .map(|i| {
            vec![
                "--data-dir".to_string(),
                dirs.join(&format!("node{i}")),
                // Snapshot files written after a few KiB of values.
                "--raft-snapshot-bytes".to_string(),
                "2048".to_string(),
            ]
        })
        .collect();
    let (mut cluster, client) = four_partitions(per_node).await;
    let mut written = BTreeMap::new();
    let value = |i: usize, round: &str| format!("{round} {i} {}", "x".repeat(100));
    // Over 64 entries per partition: a snapshot is due.
    for i in 0..400 {
        let v = value(i, "first");
        client
            .put("sessions", format!("k{i}"), v.clone(), HOUR)
            .await
            .unwrap();
        written.insert(format!("k{i}"), v);
    }
    // Node 2 holds every partition (three nodes, three replicas).
    let groups: Vec<PathBuf> = (0..3)
        .map(|p| dirs.path().join(format!("node2/groups/p{p:05}")))
        .collect();
    wait_until("node 2 has written snapshot files", DEADLINE, || async {
        groups
            .iter()
            .all(|g| g.join("snapshot").exists())
            .then_some(())
    })
    .await
    .unwrap();
    // More entries after the snapshots, so each log has a tail to damage.
    for i in 0..200 {
        let v = value(i, "second");
        client
            .put("sessions", format!("k{i}"), v.clone(), HOUR)
            .await
            .unwrap();
        written.insert(format!("k{i}"), v);
    }
    let addr = cluster.node(2).unwrap().client_addr().to_string();
    let old_id = client.node_status(&addr).await.unwrap().node_id;
    cluster.kill(2).unwrap();
    // Partition 0: a corrupt last record; 1: a torn one; 2: a corrupt snapshot.
    flip_byte(&last_segment(&groups[0]), 20);
    let torn = last_segment(&groups[1]);
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let snapshot = groups[2].join("snapshot");
    let half = std::fs::metadata(&snapshot).unwrap().len() / 2;
    flip_byte(&snapshot, half);
    // Writes it misses while down.
    for i in 0..100 {
        let v = value(i, "third");
        client
            .put("sessions", format!("k{i}"), v.clone(), HOUR)
            .await
            .unwrap();
        written.insert(format!("k{i}"), v);
    }

    cluster.restart(2, &addr).unwrap();
    cluster.wait_settled(3).await.unwrap();
    cluster.wait_leaders_spread().await.unwrap();
    let status = client.node_status(&addr).await.unwrap();
    // Its copy may lack writes it had acknowledged (a record that was synced is
    // corrupt, a snapshot refused): it came back as a new member, copying from its peers.
    assert_ne!(
        status.node_id, old_id,
        "node 2 joined again as a new member"
    );
    assert_eq!(status.partitions, 4, "node 2 hosts every partition again");
    assert!(status.partitions_led > 0, "and leads some: {status:?}");
    // Node 2 answers for the partitions it leads: nothing damaged is served.
    for (key, v) in &written {
        let got = client.get("sessions", key).await.unwrap();
        assert_eq!(got.map(|o| o.value), Some(v.clone().into_bytes()), "{key}");
    }
    // With the other nodes stopped one at a time, node 2 carries the data: after node
    // 0 is gone, node 2 and node 1 form every quorum.
    cluster.kill(0).unwrap();
    for (key, v) in &written {
        let got = client.get("sessions", key).await.unwrap();
        assert_eq!(got.map(|o| o.value), Some(v.clone().into_bytes()), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_clearly_while_reads_go_on_and_loses_nothing() {
    const MIB: u64 = 1024 * 1024;
    let disks: Vec<SmallDisk> = (0..3)
        .map(|i| SmallDisk::mount(&format!("full{i}"), 24 * MIB).unwrap())
        .collect();
    let per_node = disks
        .iter()
        .map(|d| {
            vec![
                "--data-dir".to_string(),
                d.path().join("data").display().to_string(),
                "--disk-reserve".to_string(),
                (8 * MIB).to_string(),
            ]
        })
        .collect();
    let (mut cluster, client) = four_partitions(per_node).await;
    let value = |i: usize| format!("{i:06}").repeat(10_000).into_bytes();
    let mut written = 0usize;
    let refusal = loop {
        assert!(
            written < 400,
            "{written} writes of 60 KB fit on a 24 MiB disk"
        );
        match client
            .put("sessions", format!("k{written}"), value(written), HOUR)
            .await
        {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
    };
    let text = refusal.to_string();
    assert!(
        text.contains("disk-full") && text.contains("--disk-reserve"),
        "{text}"
    );
    assert!(written > 50, "only {written} writes before the refusal");
    // Reads go on, and every acknowledged write is there.
    for i in 0..written {
        let got = client.get("sessions", format!("k{i}")).await.unwrap();
        assert_eq!(got.map(|o| o.value), Some(value(i)), "k{i}");
    }
    // Room again: writes are taken (within the time the node takes to measure).
    for d in &disks {
        d.resize(256 * MIB).unwrap();
    }
    wait_until("writes are taken again", DEADLINE, || async {
        client
            .put("sessions", "after", "room again", HOUR)
            .await
            .ok()
    })
    .await
    .unwrap();
    // What was written before survives a restart of every node, undamaged.
    kill_all_and_restart(&mut cluster).await;
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    for i in 0..written {
        let got = client.get("sessions", format!("k{i}")).await.unwrap();
        assert_eq!(
            got.map(|o| o.value),
            Some(value(i)),
            "k{i} after the restart"
        );
    }
    drop(cluster);
}
