//! Lock safety under faults: while a partition leader is killed and a node is cut off,
//! two clients never both hold a lock, and lock ids handed out for an object strictly
//! increase.
//!
//! Each holder reads a counter under the lock and writes counter + 1 with a fenced
//! set-and-release (the write carries its lock id). If two clients ever held the lock at
//! once, both could read the same value and both writes would succeed with the same new
//! value; so every successful increment must produce a distinct value.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_client::{ClientError, GridClient, LockOptions, LockResult, Timeout, UpdateOptions};
use grid_tests::cluster::TestCluster;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const CLIENT_OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

#[derive(Debug, Clone)]
struct Grant {
    lock_id: u64,
    called: Instant,
    returned: Instant,
}

#[derive(Debug, Default)]
struct Record {
    grants: Vec<Grant>,
    /// Counter values written by successful fenced increments.
    written: Vec<u64>,
    fenced_off: usize,
    unknown: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_holders_never_overlap_under_faults() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "4"])
        .await
        .unwrap();
    let setup = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    setup
        .put("locks", "counter", b"0".to_vec(), Timeout::None)
        .await
        .unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
            .await
            .unwrap();
        let (record, stop) = (record.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let options = LockOptions {
                    wait: Duration::from_secs(5),
                    lease: Some(Duration::from_secs(3)),
                    ..LockOptions::default()
                };
                let called = Instant::now();
                let (lock_id, value) = match client.lock("locks", "counter", options).await {
                    Ok(LockResult::Acquired { lock_id, value, .. }) => (lock_id, value.unwrap()),
                    Ok(_) => continue,
                    Err(_) => {
                        record.lock().unwrap().unknown += 1;
                        continue;
                    }
                };
                record.lock().unwrap().grants.push(Grant {
                    lock_id,
                    called,
                    returned: Instant::now(),
                });
                let next = std::str::from_utf8(&value).unwrap().parse::<u64>().unwrap() + 1;
                let fenced = UpdateOptions {
                    lock_id: Some(lock_id),
                    unlock: true,
                    ..UpdateOptions::default()
                };
                match client
                    .update("locks", "counter", next.to_string(), fenced)
                    .await
                {
                    Ok(_) => record.lock().unwrap().written.push(next),
                    Err(ClientError::LockLost) => record.lock().unwrap().fenced_off += 1,
                    Err(_) => record.lock().unwrap().unknown += 1,
                }
            }
        }));
    }
    let written = |r: &Arc<Mutex<Record>>| r.lock().unwrap().written.len();
    wait_until("increments before the faults", DEADLINE, || async {
        (written(&record) >= 30).then_some(())
    })
    .await
    .unwrap();
    // Kill the node leading the most partitions, the counter's among them.
    let victim = cluster.busiest_leader().await.unwrap();
    cluster.kill(victim).unwrap();
    let at_kill = written(&record);
    wait_until("increments after the kill", DEADLINE * 2, || async {
        (written(&record) >= at_kill + 30).then_some(())
    })
    .await
    .unwrap();
    // Cut one survivor off from the other for a while, then heal.
    cluster.split_for(Duration::from_secs(2)).await.unwrap();
    let at_heal = written(&record);
    wait_until("increments after healing", DEADLINE * 2, || async {
        (written(&record) >= at_heal + 30).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }

    let record = std::mem::take(&mut *record.lock().unwrap());
    // Mutual exclusion: every successful increment wrote a distinct value.
    let mut values = record.written.clone();
    values.sort_unstable();
    let before = values.len();
    values.dedup();
    assert_eq!(
        values.len(),
        before,
        "two holders wrote the same counter value: overlap"
    );
    // Lock ids are unique and increase in real-time order.
    let mut ids: Vec<u64> = record.grants.iter().map(|g| g.lock_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        record.grants.len(),
        "a lock id was handed out twice"
    );
    for a in &record.grants {
        for b in &record.grants {
            if b.called > a.returned {
                assert!(
                    b.lock_id > a.lock_id,
                    "grant {b:?} after {a:?} has a smaller lock id"
                );
            }
        }
    }
    // The counter counts the increments (plus any whose outcome was unknown).
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let counter: u64 =
        String::from_utf8(reader.get("locks", "counter").await.unwrap().unwrap().value)
            .unwrap()
            .parse()
            .unwrap();
    let ok = record.written.len() as u64;
    assert!(
        counter >= ok && counter <= ok + record.unknown as u64,
        "counter {counter}, {ok} increments, {} unknown",
        record.unknown
    );
    eprintln!(
        "{} grants, {ok} fenced increments, {} fenced off, {} unknown outcomes; counter {counter}",
        record.grants.len(),
        record.fenced_off,
        record.unknown
    );
}
