//! Trust and bounds across real hosts: three nodes, each in a network namespace of its own
//! on its own address, and clients on a fourth, all joined by a bridge. Faults are links
//! taken down at the network layer, in both directions. Skipped (with a message) where
//! the machine cannot build namespaces, unless CI is set.
//!
//! The tests take turns: three clusters at once would starve a small machine and turn
//! the timing-sensitive parts (failure detection, elections) into noise.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use grid_client::{ClientError, GridClient, Timeout};
use grid_tests::history::{recorded, recorded_by, History, RegisterWorkload, StopOnDrop};
use grid_tests::linearizability::{check_per_key, KeyedCheckResult, VersionedRegister};
use grid_tests::netns::cluster::{HostCluster, DOWN_AFTER};
use grid_tests::netns::Host;
use grid_tests::process::run_with_deadline;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const GRIDCTL: &str = env!("CARGO_BIN_EXE_test-gridctl");
const CLIENT_OPTS: &str = ";maxRequestRetries=8;requestTimeout=2s;connectTimeout=1s";
/// A client next to an isolated node gives up sooner: most of what it tries cannot work.
const MINORITY_OPTS: &str = ";maxRequestRetries=1;requestTimeout=1s;connectTimeout=1s";
const NS: &str = "hosts";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs gridctl on the client host with `cs` from the environment (the token stays out
/// of the process list): (exit code, stdout, stderr).
fn gridctl(cluster: &HostCluster, cs: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = cluster.client_host().command(GRIDCTL);
    cmd.args(args).env("GRID_CONNECTION", cs);
    let (status, out, err) = run_with_deadline(&mut cmd, None, DEADLINE).unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        err,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_cross_hosts_with_the_token_only() {
    let _turn = SERIAL.lock().await;
    let test = "reads_and_writes_cross_hosts_with_the_token_only";
    let Some(cluster) = HostCluster::start(test, BIN, 3, &["--partitions", "8"])
        .await
        .unwrap()
    else {
        return;
    };
    let addrs = cluster.addrs();
    let cs = cluster.connection_string(CLIENT_OPTS);
    let tls = cluster.security().tls_options();
    let without_token = format!("bootstrapGateways={}{tls}{CLIENT_OPTS}", addrs.join(","));

    let (cs_in, addrs_in) = (cs.clone(), addrs.clone());
    cluster
        .client_host()
        .run("reads and writes", move || async move {
            let client = GridClient::connect(&cs_in).await?;
            // The map names every node by its own host's address, as it advertised.
            let map = client.partition_map().context("no partition map")?;
            let active: BTreeSet<&str> = map
                .nodes
                .iter()
                .filter(|n| n.active)
                .map(|n| n.addr.as_str())
                .collect();
            let expected: BTreeSet<&str> = addrs_in.iter().map(String::as_str).collect();
            ensure!(
                active == expected,
                "map nodes {active:?}, hosts {expected:?}"
            );

            for i in 0..100 {
                client
                    .put(NS, format!("key{i}"), format!("value{i}"), Timeout::None)
                    .await?;
            }
            for i in 0..100 {
                let got = client
                    .get(NS, format!("key{i}"))
                    .await?
                    .with_context(|| format!("key{i} missing"))?;
                ensure!(
                    got.value == format!("value{i}").as_bytes(),
                    "key{i}: {got:?}"
                );
            }
            ensure!(client.remove(NS, "key0", None).await?, "key0 not removed");
            ensure!(client.get(NS, "key0").await?.is_none(), "key0 still there");

            // Every node took part: each leads or hosts partitions and answers status
            // over the network.
            for addr in &addrs_in {
                let status = client.node_status(addr).await?;
                ensure!(status.partitions > 0, "{addr} hosts nothing: {status:?}");
            }

            // The token is what admits a client, on every host.
            for addr in &addrs_in {
                let cs = format!("bootstrapGateways={addr}{tls}{CLIENT_OPTS}");
                match GridClient::connect(&cs).await {
                    Err(ClientError::Unauthorized) => {}
                    other => anyhow::bail!("{addr} without a token: {other:?}"),
                }
                let cs = format!("bootstrapGateways={addr};authToken=guess{tls}{CLIENT_OPTS}");
                match GridClient::connect(&cs).await {
                    Err(ClientError::Unauthorized) => {}
                    other => anyhow::bail!("{addr} with a wrong token: {other:?}"),
                }
            }
            Ok(())
        })
        .unwrap()
        .join(DEADLINE * 2)
        .await
        .unwrap();

    // The command-line client, as a process on the client host.
    let (code, out, err) = gridctl(&cluster, &cs, &["put", NS, "cli", "from-gridctl"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = gridctl(&cluster, &cs, &["get", NS, "cli"]);
    assert_eq!((code, out.as_str()), (0, "from-gridctl"), "{err}");
    let (code, out, err) = gridctl(&cluster, &cs, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 nodes (3 active)"), "{out}");
    for addr in &addrs {
        assert!(out.contains(addr.as_str()), "{addr} not in\n{out}");
    }
    assert!(!out.contains("unreachable"), "{out}");
    let (code, _, err) = gridctl(&cluster, &without_token, &["get", NS, "cli"]);
    assert_eq!(code, 2, "{err}");

    // A node refuses to listen on a host address without a token.
    let mut cmd = cluster.node_host(0).command(BIN);
    cmd.env_remove("GRID_AUTH_TOKEN")
        .args(["--listen", &format!("{}:7211", cluster.node_host(0).addr())]);
    let (status, _, err) = run_with_deadline(&mut cmd, None, DEADLINE).unwrap();
    assert!(!status.success(), "started without a token");
    assert!(err.contains("--auth-token"), "{err}");
}

/// Acknowledged writes of the writer, by key, with what each holds.
type Acked = Arc<Mutex<Vec<(String, String, Instant)>>>;

fn acked_since(acked: &Acked, since: Instant) -> usize {
    acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at >= since)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_node_loses_no_acknowledged_write_and_returns_to_full_replication() {
    let _turn = SERIAL.lock().await;
    let test = "a_cut_node_loses_no_acknowledged_write_and_returns_to_full_replication";
    let Some(cluster) = HostCluster::start(test, BIN, 3, &["--partitions", "8"])
        .await
        .unwrap()
    else {
        return;
    };
    let victim = cluster.len() - 1;

    // One writer on the client host: unique keys, each acknowledged one remembered.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = StopOnDrop(stop.clone());
    let writer = {
        let (cs, acked, stop) = (
            cluster.connection_string(CLIENT_OPTS),
            acked.clone(),
            stop.clone(),
        );
        cluster
            .client_host()
            .run("writer", move || async move {
                let client = GridClient::connect(&cs).await?;
                // Unacknowledged writes, counted by error (addresses and all).
                let mut failed = std::collections::BTreeMap::<String, u32>::new();
                for seq in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (key, value) = (format!("w{seq}"), format!("v{seq}"));
                    match client.put(NS, &key, value.clone(), Timeout::None).await {
                        Ok(_) => acked.lock().unwrap().push((key, value, Instant::now())),
                        // Unacknowledged: it may or may not be there; not checked.
                        Err(e) => *failed.entry(e.to_string()).or_default() += 1,
                    }
                }
                Ok(failed)
            })
            .unwrap()
    };

    let start = Instant::now();
    wait_until("writes before the cut", DEADLINE, || async {
        (acked_since(&acked, start) >= 50).then_some(())
    })
    .await
    .unwrap();

    cluster.lab().cut(victim).unwrap();
    let cut_at = Instant::now();
    // Longer than --down-after: the others mark the node down (seen in their map).
    let va = cluster.addr(victim);
    cluster
        .with_client("marked down", DEADLINE * 3, move |client| async move {
            wait_until("the cut node marked down", DEADLINE * 2, || async {
                client.refresh().await.ok()?;
                let map = client.partition_map()?;
                (!map.nodes.iter().any(|n| n.active && n.addr == va)).then_some(())
            })
            .await
        })
        .await
        .unwrap();
    let marked_down = Instant::now();
    // Writes go on while the node is away.
    wait_until("writes during the cut", DEADLINE * 2, || async {
        (acked_since(&acked, marked_down) >= 25).then_some(())
    })
    .await
    .unwrap();
    let during_cut = acked_since(&acked, cut_at);

    cluster.lab().heal(victim).unwrap();
    let healed_at = Instant::now();
    assert!(
        healed_at - cut_at > DOWN_AFTER,
        "the cut must outlast --down-after"
    );
    eprintln!(
        "cut for {:?} (marked down after {:?}); {during_cut} writes acknowledged meanwhile",
        healed_at - cut_at,
        marked_down - cut_at
    );
    wait_until("writes after the heal", DEADLINE * 2, || async {
        (acked_since(&acked, healed_at) >= 50).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let failed = writer.join(DEADLINE * 2).await.unwrap();

    // Every acknowledged write reads back.
    let expected = acked.lock().unwrap().clone();
    let lost = read_back(&cluster, expected.clone()).await;
    eprintln!(
        "{} writes acknowledged, {} lost; not acknowledged: {failed:?}",
        expected.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // Back to full replication on its own: the healed node active again, and every
    // partition on all three nodes.
    cluster
        .wait_settled(3, Some(3), DEADLINE * 2)
        .await
        .context("not back to full replication after the heal")
        .unwrap();
    eprintln!(
        "back to full replication {:?} after the heal",
        healed_at.elapsed()
    );
    // And still all there, the healed node serving its share again.
    let lost = read_back(&cluster, expected).await;
    assert!(lost.is_empty(), "lost after full replication: {lost:?}");
}

/// Reads every `(key, value)` back from the client host; what is missing or different.
async fn read_back(cluster: &HostCluster, expected: Vec<(String, String, Instant)>) -> Vec<String> {
    cluster
        .with_client("read back", DEADLINE * 4, move |client| async move {
            let mut lost = Vec::new();
            for (key, value, _) in &expected {
                match client.get(NS, key).await {
                    Ok(Some(o)) if o.value == value.as_bytes() => {}
                    other => lost.push(format!("{key}: {other:?}")),
                }
            }
            Ok(lost)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_isolated_in_a_minority_keep_the_history_linearizable() {
    let _turn = SERIAL.lock().await;
    let test = "leaders_isolated_in_a_minority_keep_the_history_linearizable";
    const PARTITIONS: u32 = 4;
    let Some(cluster) =
        HostCluster::start(test, BIN, 3, &["--partitions", &PARTITIONS.to_string()])
            .await
            .unwrap()
    else {
        return;
    };
    const MAJORITY_CLIENTS: usize = 4;
    const MINORITY_CLIENTS: usize = 2;
    let workload = RegisterWorkload {
        namespace: "lin",
        keys: 4,
        max_ops: 20_000,
    };
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = StopOnDrop(stop.clone());
    let epoch = Instant::now();
    // The node leading the most partitions (after bootstrap, all of them) is the one cut.
    let victim = cluster.busiest_leader().await.unwrap();
    let others: Vec<usize> = (0..cluster.len()).filter(|i| *i != victim).collect();

    // Clients on the client host, reaching every node; and clients on the victim's own
    // host, reaching only it once cut (it still answers on its own address).
    let spawn_clients = |host: &Host, cs: String, ids: Vec<usize>| {
        let (history, stop) = (history.clone(), stop.clone());
        host.run("clients", move || async move {
            let mut loops = tokio::task::JoinSet::new();
            for id in ids {
                let client = GridClient::connect(&cs).await?;
                loops.spawn(workload.client_loop(client, id, epoch, history.clone(), stop.clone()));
            }
            while let Some(done) = loops.join_next().await {
                done?;
            }
            Ok(())
        })
        .unwrap()
    };
    let majority = spawn_clients(
        cluster.client_host(),
        cluster.connection_string(CLIENT_OPTS),
        (0..MAJORITY_CLIENTS).collect(),
    );
    let minority = spawn_clients(
        cluster.node_host(victim),
        cluster.connection_string_to(&[victim], MINORITY_OPTS),
        (MAJORITY_CLIENTS..MAJORITY_CLIENTS + MINORITY_CLIENTS).collect(),
    );
    let is_minority = |id: usize| id >= MAJORITY_CLIENTS;
    let by_majority = |h: &History| recorded_by(h, |id| !is_minority(id));

    wait_until("ops before the cut", DEADLINE * 2, || async {
        (recorded(&history) >= 300 && recorded_by(&history, is_minority) >= 30).then_some(())
    })
    .await
    .unwrap();

    cluster.lab().cut(victim).unwrap();
    let cut_at = Instant::now();
    let minority_at_cut = recorded_by(&history, is_minority);
    // The majority side elects leaders for every partition the victim led...
    let majority_addrs: Vec<String> = others.iter().map(|i| cluster.addr(*i)).collect();
    cluster
        .with_client("majority leads", DEADLINE * 3, move |client| async move {
            wait_until(
                "the majority leads every partition",
                DEADLINE * 2,
                || async {
                    let mut led = 0;
                    for addr in &majority_addrs {
                        led += client.node_status(addr).await.ok()?.partitions_led;
                    }
                    (led == PARTITIONS).then_some(())
                },
            )
            .await
        })
        .await
        .unwrap();
    let elected = cut_at.elapsed();
    // ...and serves a good number of operations while the old leader is cut off.
    let at_election = by_majority(&history);
    wait_until("majority ops during the cut", DEADLINE * 2, || async {
        (by_majority(&history) >= at_election + 200).then_some(())
    })
    .await
    .unwrap();
    // The old leader's side tried its luck too (unknown outcomes count: each is a write
    // it took and could not commit, or a read it did not answer in time).
    wait_until("minority ops during the cut", DEADLINE * 2, || async {
        (recorded_by(&history, is_minority) >= minority_at_cut + 4).then_some(())
    })
    .await
    .unwrap();
    let minority_during = recorded_by(&history, is_minority) - minority_at_cut;

    cluster.lab().heal(victim).unwrap();
    let healed_at = Instant::now();
    eprintln!(
        "cut for {:?}, majority leading after {elected:?}; the minority clients recorded \
         {minority_during} ops meanwhile",
        healed_at - cut_at
    );
    let at_heal = recorded(&history);
    wait_until("ops after the heal", DEADLINE * 2, || async {
        (recorded(&history) >= at_heal + 300).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    majority.join(DEADLINE * 2).await.unwrap();
    minority.join(DEADLINE * 2).await.unwrap();

    let history = history.lock().unwrap().clone();
    let unknown = history.iter().filter(|o| o.op.is_indeterminate()).count();
    let minority_ops = history.iter().filter(|o| is_minority(o.op.client)).count();
    // Answers the isolated side gave while cut off (reads within its lease, say).
    let (cut_ns, heal_ns) = (
        (cut_at - epoch).as_nanos() as u64,
        (healed_at - epoch).as_nanos() as u64,
    );
    let answered_isolated = history
        .iter()
        .filter(|o| is_minority(o.op.client) && o.op.call >= cut_ns)
        .filter(|o| o.op.ret.is_some_and(|ret| ret <= heal_ns))
        .count();
    let started = Instant::now();
    let verdict = check_per_key(&VersionedRegister, &history, Duration::from_secs(60));
    eprintln!(
        "{} ops ({unknown} with unknown outcome, {minority_ops} from the minority host, \
         {answered_isolated} of them answered while cut off) checked in {:?}: {verdict:?}",
        history.len(),
        started.elapsed()
    );
    assert_eq!(verdict, KeyedCheckResult::Linearizable);
}
