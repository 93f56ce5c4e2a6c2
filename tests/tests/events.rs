//! Expiration and low-memory events from a real cluster to registered clients: each event
//! reaches exactly one client instance, goes to another when its client dies without
//! acknowledging it, and survives a leader's kill -9.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use grid_client::{ClientError, EventCause, EventSubscription, GridClient, GridEvent, Timeout};
use grid_proto::Request;
use grid_tests::cluster::TestCluster;
use grid_tests::raw::{hello, RawConn, Received};
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const OPTS: &str =
    ";eventConnectionCount=1;maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

/// Receives events until `want` distinct keys have come, acknowledging each; returns
/// every event received (duplicates included).
async fn collect(subs: &mut [&mut EventSubscription], want: usize) -> Vec<(usize, GridEvent)> {
    collect_more(subs, &mut BTreeSet::new(), want).await
}

/// [`collect`], counting the keys already in `keys`.
async fn collect_more(
    subs: &mut [&mut EventSubscription],
    keys: &mut BTreeSet<Vec<u8>>,
    want: usize,
) -> Vec<(usize, GridEvent)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    while keys.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {want} keys' events arrived",
            keys.len()
        );
        let mut idle = true;
        for (i, sub) in subs.iter_mut().enumerate() {
            if let Some(d) = sub.try_next() {
                idle = false;
                keys.insert(d.event.obj.key.clone());
                got.push((i, d.event.clone()));
                // A failed ack (its node died) means a redelivery, not a test failure.
                let _ = d.ack().await;
            }
        }
        if idle {
            // Nothing queued: wait for the first subscription's next event, briefly.
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(50), subs[0].next()).await
            {
                keys.insert(d.event.obj.key.clone());
                got.push((0, d.event.clone()));
                let _ = d.ack().await;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_expiry_reaches_exactly_one_of_two_registered_clients_with_its_final_bytes() {
    let cluster = TestCluster::start(BIN, 3, &["--partitions", "8"])
        .await
        .unwrap();
    // A leadership change may deliver an event again (at least once); count exactly
    // in a steady cluster.
    cluster.wait_leaders_spread().await.unwrap();
    let cs = cluster.connection_string(OPTS);
    let (a, b) = (
        GridClient::connect(&cs).await.unwrap(),
        GridClient::connect(&cs).await.unwrap(),
    );
    let mut sub_a = a.subscribe("sessions").await.unwrap();
    let mut sub_b = b.subscribe("sessions").await.unwrap();
    let mut other = a.subscribe("other-app").await.unwrap();
    const N: usize = 40;
    for i in 0..N {
        let timeout = Timeout::Absolute { ms: 500 };
        a.put("sessions", format!("s{i}"), format!("final {i}"), timeout)
            .await
            .unwrap();
    }
    let got = collect(&mut [&mut sub_a, &mut sub_b], N).await;
    cluster.wait_events_acknowledged(&a).await.unwrap();
    // Anything still queued after every acknowledgement would be a duplicate.
    let mut all = got;
    all.extend(sub_a.try_next().map(|d| (0, d.event)));
    all.extend(sub_b.try_next().map(|d| (1, d.event)));
    assert_eq!(all.len(), N, "each event exactly once: {all:?}");
    let per_client = [0, 1].map(|c| all.iter().filter(|(i, _)| *i == c).count());
    assert!(
        per_client.iter().all(|n| *n >= N / 4),
        "balanced across the two instances: {per_client:?}"
    );
    for (_, e) in &all {
        let key = String::from_utf8(e.obj.key.clone()).unwrap();
        assert_eq!(e.cause, EventCause::Expired);
        assert_eq!(e.obj.namespace, "sessions");
        assert_eq!(e.value, format!("final {}", &key[1..]).into_bytes());
    }
    assert!(other.try_next().is_none(), "other namespaces hear nothing");
}

/// A hand-driven subscriber on every node: registers and never acknowledges.
async fn silent_subscribers(cluster: &TestCluster, ns: &str) -> Vec<RawConn> {
    let mut conns = Vec::new();
    for node in cluster.live() {
        let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
        conn.call(1, &hello()).await.unwrap();
        let reply = conn
            .call(
                2,
                &Request::Subscribe {
                    namespace: ns.into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(reply, grid_proto::Reply::Subscribed);
        conns.push(conn);
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_whose_client_dies_unacknowledged_goes_to_another_client() {
    // A long ack timeout: the redelivery below comes from the closed connection, not it.
    let cluster = TestCluster::start(BIN, 3, &["--partitions", "8", "--event-ack-timeout", "10m"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    let mut silent = silent_subscribers(&cluster, "carts").await;
    client
        .put("carts", "c1", "last items", Timeout::Sliding { ms: 300 })
        .await
        .unwrap();
    // The only registered client gets it, on the connection to the partition's leader.
    let first = wait_for_raw_event(&mut silent).await;
    let mut sub = client.subscribe("carts").await.unwrap();
    drop(silent);
    let again = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("redelivered well before the ack timeout")
        .unwrap();
    assert_eq!(again.event, first, "the same event, id included");
    again.ack().await.unwrap();
    cluster.wait_events_acknowledged(&client).await.unwrap();
}

/// The first event pushed to any of these connections.
async fn wait_for_raw_event(conns: &mut [RawConn]) -> GridEvent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no event arrived");
        for conn in conns.iter_mut() {
            if let Ok(received) =
                tokio::time::timeout(Duration::from_millis(100), conn.recv()).await
            {
                match received.unwrap() {
                    Received::Reply(0, grid_proto::Reply::Event(e)) => return *e,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_not_lost_when_a_leader_is_killed() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "8"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(OPTS))
        .await
        .unwrap();
    let mut sub = client.subscribe("failover").await.unwrap();
    const N: usize = 60;
    for i in 0..N {
        // Spread over two seconds of expiry, so some expire before the kill and some
        // after, under new leaders.
        let ms = 1_000 + (i as u64 % 10) * 200;
        client
            .put(
                "failover",
                format!("k{i}"),
                vec![i as u8; 64],
                Timeout::Absolute { ms },
            )
            .await
            .unwrap();
    }
    let mut keys = BTreeSet::new();
    let mut events = collect_more(&mut [&mut sub], &mut keys, 1).await;
    let victim = cluster.busiest_leader().await.unwrap();
    cluster.kill(victim).unwrap();
    events.extend(collect_more(&mut [&mut sub], &mut keys, N).await);
    for (_, e) in &events {
        let i: u8 = String::from_utf8_lossy(&e.obj.key[1..]).parse().unwrap();
        assert_eq!(e.value, vec![i; 64], "final bytes");
    }
    assert_eq!(keys.len(), N, "every object's expiry was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_max_memory_old_objects_are_evicted_with_events_or_writes_refused() {
    const LIMIT: u64 = 100_000;
    let limit = LIMIT.to_string();
    let evicting = TestCluster::start(BIN, 1, &["--partitions", "4", "--max-memory", &limit])
        .await
        .unwrap();
    let client = GridClient::connect(&evicting.connection_string(OPTS))
        .await
        .unwrap();
    let mut sub = client.subscribe("cache").await.unwrap();
    for i in 0..30 {
        client
            .put(
                "cache",
                format!("k{i:02}"),
                vec![0u8; 10_000],
                Timeout::None,
            )
            .await
            .unwrap();
    }
    let addr = evicting.node(0).unwrap().client_addr().to_string();
    wait_until("memory back under the limit", DEADLINE, || async {
        let s = client.node_status(&addr).await.ok()?;
        (s.memory_used <= LIMIT && s.evicted > 0).then_some(())
    })
    .await
    .unwrap();
    let evicted = collect(&mut [&mut sub], 1).await;
    assert!(evicted
        .iter()
        .all(|(_, e)| e.cause == EventCause::LowMemory && e.value.is_empty()));
    assert!(
        client.get("cache", "k29").await.unwrap().is_some(),
        "the newest object stays"
    );
    assert!(
        client.get("cache", "k00").await.unwrap().is_none(),
        "the least recently used went first"
    );

    let refusing = TestCluster::start(
        BIN,
        1,
        &[
            "--partitions",
            "4",
            "--max-memory",
            &limit,
            "--evict-on-low-memory",
            "false",
        ],
    )
    .await
    .unwrap();
    let client = GridClient::connect(&refusing.connection_string(OPTS))
        .await
        .unwrap();
    let mut refused = None;
    for i in 0..1_000 {
        // Bounded: 10 MB at most, far past the limit, which the node measures every
        // reconcile round.
        if let Err(e) = client
            .put("cache", format!("k{i}"), vec![0u8; 10_000], Timeout::None)
            .await
        {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("writes past the limit are refused");
    assert!(
        matches!(refused, ClientError::LowMemory { limit: LIMIT, .. }),
        "{refused}"
    );
    // So are item writes (a session's write-back) and tagged writes.
    let item = grid_proto::WriteBody::Items(grid_proto::items::ItemChanges {
        set: vec![grid_proto::items::Item {
            name: "cart".into(),
            value: vec![0u8; 10_000],
        }],
        ..Default::default()
    });
    let options = grid_client::WriteOptions {
        tags: Some(vec!["user:1".into()]),
        create: true,
        ..Default::default()
    };
    let refused = client.write("cache", "s", item, options).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::LowMemory { limit: LIMIT, .. }),
        "{refused}"
    );
    assert!(
        client.get("cache", "k0").await.unwrap().is_some(),
        "reads go on"
    );
    assert!(
        client.remove("cache", "k0", None).await.unwrap(),
        "removes go on"
    );
}
