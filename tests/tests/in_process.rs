//! The cluster runtime with every node in this process, links filtered by peer and by
//! message kind: joins, moves and hand-overs, a stopped node replaced, healing after a
//! cut, a leader that cannot ask a joining node whether it hosts a group, a slow link.
//! Each asserts what the runtime did and that acknowledged writes read back.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::time::{Duration, Instant};

use grid_client::{GridClient, Timeout};
use grid_node::cluster::filter::{Filters, MessageKind, Rule};
use grid_tests::in_process::InProcessCluster;
use grid_tests::{wait_until, DEADLINE};

const CLIENT_OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";

/// Puts `count` keys `{prefix}{i}`, retried until acknowledged; returns them with values.
async fn write(client: &GridClient, prefix: &str, count: usize) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for i in 0..count {
        let (key, value) = (format!("{prefix}{i}"), format!("value of {prefix}{i}"));
        wait_until(&format!("put {key}"), DEADLINE, || async {
            client
                .put("ip", &key, value.clone(), Timeout::None)
                .await
                .ok()
        })
        .await
        .unwrap();
        acked.push((key, value));
    }
    acked
}

/// Every pair reads back with its value.
async fn assert_readable(client: &GridClient, acked: &[(String, String)]) {
    for (key, value) in acked {
        let got = wait_until(&format!("get {key}"), DEADLINE, || async {
            client.get("ip", key).await.ok()
        })
        .await
        .unwrap();
        assert_eq!(
            got.map(|r| r.value),
            Some(value.clone().into_bytes()),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_replicas_and_leadership_and_a_stopped_one_is_replaced() {
    let mut cluster = InProcessCluster::start(3, |_| {}).await.unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let before = write(&client, "a", 40).await;

    // A fourth node gets its share of replicas, then leaders hand some groups over to it.
    let fourth = cluster.add_node().await.unwrap();
    cluster.wait_settled(4, 3).await.unwrap();
    assert!(cluster.status(fourth).partitions > 0, "no replica moved");
    wait_until("leadership handed to the new node", DEADLINE, || async {
        (cluster.status(fourth).partitions_led > 0).then_some(())
    })
    .await
    .unwrap();
    let after = write(&client, "b", 40).await;

    // One node stops: it is marked down and its replicas are made again on the rest.
    cluster.stop(1).await;
    cluster.wait_settled(3, 3).await.unwrap();
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    assert_readable(&reader, &before).await;
    assert_readable(&reader, &after).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_past_down_after_is_marked_down_and_comes_back_by_itself() {
    let cluster = InProcessCluster::start(3, |_| {}).await.unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let before = write(&client, "a", 30).await;
    let victim = 2;
    let victim_id = cluster.status(victim).node_id;

    cluster.partition(&[victim]);
    let cut_at = Instant::now();
    wait_until("the cut node marked down", DEADLINE, || async {
        let map = cluster.node(0).node().map();
        let down = map.nodes.iter().any(|n| n.id == victim_id && !n.active);
        down.then_some(())
    })
    .await
    .unwrap();
    // Down counts from when it was last heard, a ping round (250 ms) or so before the
    // cut at most: never long before --down-after (2 s) has passed since the cut.
    assert!(
        cut_at.elapsed() >= Duration::from_secs(1),
        "marked down {:?} after the cut, long before --down-after",
        cut_at.elapsed()
    );
    let majority = GridClient::connect(&format!(
        "bootstrapGateways={},{}{CLIENT_OPTS}",
        cluster.addr(0),
        cluster.addr(1)
    ))
    .await
    .unwrap();
    let during = write(&majority, "b", 30).await;

    cluster.heal();
    cluster.wait_settled(3, 3).await.unwrap();
    let back = cluster.node(0).node().map();
    assert!(
        back.nodes.iter().any(|n| n.id == victim_id && n.active),
        "node {victim_id} came back under another id: {back:?}"
    );
    assert!(cluster.status(victim).partitions > 0);
    assert_readable(&client, &before).await;
    assert_readable(&client, &during).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_gets_no_replica_until_leaders_can_ask_whether_it_hosts_the_group() {
    let mut cluster = InProcessCluster::start(3, |_| {}).await.unwrap();
    // No leader hears a node's answer about hosting a group; everything else passes.
    let no_hosts = || {
        Filters::new(vec![Rule {
            to: None,
            kinds: [MessageKind::Hosts].into(),
            action: grid_node::cluster::filter::Action::Drop,
        }])
    };
    for i in 0..3 {
        cluster.filter(i, no_hosts());
    }
    let fourth = cluster.add_node().await.unwrap();
    cluster.filter(fourth, no_hosts());
    let id = cluster.status(fourth).node_id;
    wait_until("the map gives the new node replicas", DEADLINE, || async {
        let map = cluster.node(0).node().map();
        map.replicas
            .iter()
            .any(|set| set.contains(&id))
            .then_some(())
    })
    .await
    .unwrap();
    // Many reconcile rounds later, the leaders still have not added it to any group.
    cluster.wait_rounds("reconcile", 10).await.unwrap();
    let s = cluster.status(fourth);
    assert_eq!(s.partitions_led, 0, "{s:?}");
    assert_eq!(
        s.unsettled, s.partitions,
        "it is a member of some group: {s:?}"
    );

    cluster.heal();
    cluster.wait_settled(4, 3).await.unwrap();
    assert!(cluster.status(fourth).partitions > 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_a_delayed_follower_when_the_quorum_needs_it() {
    // Two nodes: every write needs both, so each one waits out the delay on the link.
    let cluster = InProcessCluster::start(2, |_| {}).await.unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    write(&client, "warm", 5).await;
    let delay = Duration::from_millis(30);
    for i in 0..2 {
        let other = cluster.addr(1 - i);
        cluster.filter(
            i,
            Filters::new(vec![Rule::cut(other)
                .only([MessageKind::Append])
                .delay(delay)]),
        );
    }
    let started = Instant::now();
    let acked = write(&client, "slow", 5).await;
    let took = started.elapsed();
    assert!(
        took >= delay * 5,
        "5 writes through a {delay:?} link took {took:?}"
    );
    cluster.heal();
    assert_readable(&client, &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_messages_of_every_group_to_one_peer_share_peer_messages() {
    use std::sync::atomic::Ordering;
    let cluster = InProcessCluster::start(3, |_| {}).await.unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let metrics = &cluster.node(0).node().metrics;
    let received = || {
        (
            metrics.peer_messages_total.load(Ordering::Relaxed),
            metrics.peer_requests_total.load(Ordering::Relaxed),
        )
    };
    let (messages_before, requests_before) = received();
    // Heartbeats of every group leave in one round, and writes to several groups at once
    // send their appends together: the peers' outboxes coalesce them.
    let writes = (0..32).map(|i| client.put("ip", format!("k{i}"), "v", Timeout::None));
    for written in futures_util::future::join_all(writes).await {
        written.unwrap();
    }
    // Without coalescing every request would be a message of its own (a ratio of 1).
    wait_until(
        "two requests or more per peer message",
        DEADLINE,
        || async {
            let (messages, requests) = received();
            let (messages, requests) = (messages - messages_before, requests - requests_before);
            (messages >= 20 && requests >= 2 * messages).then_some(())
        },
    )
    .await
    .unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_by_snapshot_while_its_partition_takes_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // One partition, so every write goes to the group the learner joins; a snapshot every
    // 32 entries (64 kept after it, and held back for a lagging member up to 32 x 32).
    let mut cluster = InProcessCluster::start(2, |c| {
        c.partitions = 1;
        c.raft_snapshot_logs = 32;
    })
    .await
    .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    write(&client, "warm", 20).await;

    // Writers, bounded in time, keep the group busy throughout.
    let writing = Duration::from_secs(40);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut acked = 0u64;
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > writing {
                        break;
                    }
                    let key = format!("w{w}-{}", i % 50);
                    if client
                        .put("ip", &key, "x".repeat(256), Timeout::None)
                        .await
                        .is_ok()
                    {
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect();

    // A third node joins; its snapshot takes 200 ms to arrive, time for hundreds of entries
    // (about 3,000 writes a second here), more than the 64 kept: the leader must keep the
    // entries after the snapshot it sent instead of purging past them and sending another
    // (without that hold, no catching up in 40 s of writes).
    let third = cluster.add_node().await.unwrap();
    let slow = Duration::from_millis(200);
    for i in 0..2 {
        cluster.filter(
            i,
            Filters::new(vec![Rule::cut(cluster.addr(third))
                .only([MessageKind::Snapshot])
                .delay(slow)]),
        );
    }
    let settled = tokio::time::timeout(writing, cluster.wait_settled(3, 3)).await;
    let settled_after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for writer in writers {
        acked += writer.await.unwrap();
    }
    assert!(
        matches!(settled, Ok(Ok(()))) && settled_after < writing,
        "the learner did not catch up while the partition took writes \
         ({acked} writes in {settled_after:?}): {settled:?}"
    );
    assert!(acked > 0);
    cluster.heal();
    cluster.shutdown().await;
}
