//! End to end through real sockets: the typed client, pipelining, lock hand-off between
//! clients, expiry with an injected clock, graceful shutdown.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use grid_client::{
    ClientError, GridClient, LockOptions, LockResult, ReadResult, Timeout, UpdateOptions,
};
use grid_node::{ManualClock, NodeConfig};
use grid_tests::process::NodeProcess;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");

async fn in_process(clock: Arc<ManualClock>) -> (grid_node::RunningNode, GridClient) {
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tick_interval: Duration::from_millis(5),
        ..NodeConfig::default()
    };
    let node = grid_node::start(config, clock).await.unwrap();
    let client = GridClient::connect(&format!("bootstrapGateways={}", node.client_addr()))
        .await
        .unwrap();
    (node, client)
}

#[tokio::test]
async fn typed_operations_round_trip() {
    let node = NodeProcess::start(BIN, &[]).unwrap();
    let c = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    let created = c.create("app", "a", "one", Timeout::None, false).await;
    assert!(created.unwrap().is_some());
    assert_eq!(
        c.create("app", "a", "two", Timeout::None, false)
            .await
            .unwrap(),
        None
    );
    let v1 = c.get("app", "a").await.unwrap().unwrap().info.version;
    let v2 = c
        .update(
            "app",
            "a",
            "two",
            UpdateOptions {
                expected_version: Some(v1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(v2 > v1);
    let stale = c
        .update(
            "app",
            "a",
            "three",
            UpdateOptions {
                expected_version: Some(v1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, ClientError::VersionMismatch { current } if current == v2));
    assert_eq!(
        c.get_if_modified("app", "a", Some(v2)).await.unwrap(),
        ReadResult::NotModified(c.get("app", "a").await.unwrap().unwrap().info)
    );
    assert!(
        matches!(c.get_if_modified("app", "a", Some(v1)).await.unwrap(), ReadResult::Modified(o) if o.value == b"two")
    );
    // Namespaces isolate keys.
    assert!(c.get("other", "a").await.unwrap().is_none());
    assert!(c
        .reset_timeout("app", "a", Some(Timeout::Sliding { ms: 60_000 }))
        .await
        .unwrap());
    assert!(c.remove("app", "a", None).await.unwrap());
    assert!(!c.remove("app", "a", None).await.unwrap());
    assert!(!c.reset_timeout("app", "a", None).await.unwrap());
}

#[tokio::test]
async fn one_connection_carries_many_requests_in_flight() {
    let node = NodeProcess::start(BIN, &[]).unwrap();
    let c = GridClient::connect(&node.connection_string(";maxPoolSize=1"))
        .await
        .unwrap();
    let writes = (0..500).map(|i| {
        let c = c.clone();
        async move {
            c.put("pipe", format!("k{i}"), format!("v{i}"), Timeout::None)
                .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    let reads = (0..500).map(|i| {
        let c = c.clone();
        async move { (i, c.get("pipe", format!("k{i}")).await) }
    });
    for (i, r) in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap().unwrap().value, format!("v{i}").into_bytes());
    }
    assert_eq!(
        c.status().await.unwrap().connections,
        1,
        "all of it over one connection"
    );
}

#[tokio::test]
async fn lock_passes_to_waiters_in_arrival_order() {
    let node = NodeProcess::start(BIN, &[]).unwrap();
    let cs = node.connection_string("");
    let holder = GridClient::connect(&cs).await.unwrap();
    holder.put("s", "sess", "0", Timeout::None).await.unwrap();
    let LockResult::Acquired { lock_id: first, .. } = holder
        .lock("s", "sess", LockOptions::default())
        .await
        .unwrap()
    else {
        panic!("first lock");
    };
    // Three clients queue, one after another (each is parked before the next starts).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..3u32 {
        let client = GridClient::connect(&cs).await.unwrap();
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let opts = LockOptions {
                wait: DEADLINE,
                ..Default::default()
            };
            let LockResult::Acquired { lock_id, value, .. } =
                client.lock("s", "sess", opts).await.unwrap()
            else {
                panic!("waiter {n} did not get the lock");
            };
            let seen: u32 = String::from_utf8(value.unwrap()).unwrap().parse().unwrap();
            let next = UpdateOptions {
                lock_id: Some(lock_id),
                unlock: true,
                ..Default::default()
            };
            done.send((n, seen, lock_id)).unwrap();
            client
                .update("s", "sess", (seen + 1).to_string(), next)
                .await
                .unwrap();
        }));
        let expected = n as u64 + 1;
        wait_until("waiter parked", DEADLINE, || {
            let holder = holder.clone();
            async move { (holder.status().await.ok()?.lock_waiters >= expected).then_some(()) }
        })
        .await
        .unwrap();
    }
    holder
        .update(
            "s",
            "sess",
            "1",
            UpdateOptions {
                lock_id: Some(first),
                unlock: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(
            tokio::time::timeout(DEADLINE, done_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    let arrivals: Vec<u32> = order.iter().map(|(n, _, _)| *n).collect();
    let counters: Vec<u32> = order.iter().map(|(_, seen, _)| *seen).collect();
    let ids: Vec<u64> = order.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(arrivals, vec![0, 1, 2], "FIFO hand-off");
    assert_eq!(
        counters,
        vec![1, 2, 3],
        "each holder saw the previous holder's write"
    );
    assert!(
        first < ids[0] && ids[0] < ids[1] && ids[1] < ids[2],
        "fencing tokens increase: {first} {ids:?}"
    );
    assert_eq!(holder.get("s", "sess").await.unwrap().unwrap().value, b"4");
}

#[tokio::test]
async fn timeouts_expire_by_the_injected_clock() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (node, c) = in_process(Arc::clone(&clock)).await;
    c.put("t", "abs", "a", Timeout::Absolute { ms: 10_000 })
        .await
        .unwrap();
    c.put("t", "slide", "s", Timeout::Sliding { ms: 10_000 })
        .await
        .unwrap();
    c.put("t", "forever", "f", Timeout::None).await.unwrap();
    clock.advance(6_000);
    // Reads keep the sliding object alive, not the absolute one.
    assert!(c.get("t", "slide").await.unwrap().is_some());
    assert!(c.get("t", "abs").await.unwrap().is_some());
    clock.advance(6_000);
    wait_until("absolute object expired by the ticker", DEADLINE, || {
        let node = &node;
        async move { (node.node().status(String::new()).expired >= 1).then_some(()) }
    })
    .await
    .unwrap();
    assert!(c.get("t", "abs").await.unwrap().is_none());
    assert!(c.get("t", "slide").await.unwrap().is_some());
    clock.advance(10_001);
    assert!(c.get("t", "slide").await.unwrap().is_none());
    assert!(c.get("t", "forever").await.unwrap().is_some());
    node.shutdown().await;
}

#[tokio::test]
async fn lock_lease_and_take_over_follow_the_injected_clock() {
    let clock = Arc::new(ManualClock::new(0));
    let (node, c) = in_process(Arc::clone(&clock)).await;
    c.put("l", "k", "v", Timeout::None).await.unwrap();
    let lease = LockOptions {
        lease: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let LockResult::Acquired { lock_id: a, .. } = c.lock("l", "k", lease).await.unwrap() else {
        panic!()
    };
    clock.advance(5_000);
    assert_eq!(
        c.lock("l", "k", LockOptions::default()).await.unwrap(),
        LockResult::Locked {
            lock_id: a,
            lock_age_ms: 5_000
        }
    );
    // A waiter allowed to take over after 20 s gets the lock when the clock says so.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let opts = LockOptions {
                wait: Duration::from_secs(3600),
                take_over_after: Some(Duration::from_secs(20)),
                ..Default::default()
            };
            c.lock("l", "k", opts).await.unwrap()
        })
    };
    wait_until("waiter parked", DEADLINE, || {
        let node = &node;
        async move { (node.node().lock_waiters() == 1).then_some(()) }
    })
    .await
    .unwrap();
    clock.advance(15_000);
    let LockResult::Acquired { lock_id: b, .. } = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("take-over")
    };
    assert!(b > a);
    assert!(matches!(
        c.unlock("l", "k", a).await.unwrap_err(),
        ClientError::LockLost
    ));
    // Its lease is the node default (90 s): after that the lock frees itself.
    clock.advance(90_000);
    let after = c.lock("l", "k", LockOptions::default()).await.unwrap();
    assert!(matches!(after, LockResult::Acquired { .. }), "{after:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn sigterm_stops_the_node_gracefully() {
    let mut node = NodeProcess::start(BIN, &[]).unwrap();
    let c = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    c.put("x", "k", "v", Timeout::None).await.unwrap();
    node.signal("TERM").unwrap();
    let status = node.wait_exit(DEADLINE).unwrap();
    assert!(status.success(), "{status:?}");
}
