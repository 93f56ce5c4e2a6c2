//! Healing, with real node processes: a node cut off (or frozen) past `--down-after` is
//! marked down and its partitions re-replicated on the others; once it can reach the
//! cluster again it comes back by itself under its old id, every partition returns to
//! three replicas including it, and no acknowledged write is lost on the way.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_client::{GridClient, Timeout};
use grid_proto::PartitionMap;
use grid_tests::cluster::TestCluster;
use grid_tests::process::run_with_deadline;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const GRIDCTL: &str = env!("CARGO_BIN_EXE_test-gridctl");
const CLIENT_OPTS: &str = ";maxRequestRetries=12;requestTimeout=10s;connectTimeout=1s";
const PARTITIONS: u32 = 8;
/// The harness's `--down-after`.
const DOWN_AFTER: Duration = Duration::from_secs(3);

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Writers putting distinct keys (values of about `size` bytes) until stopped; only
/// acknowledged writes are recorded.
struct Writers {
    acked: Acked,
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: &GridClient, ns: &'static str, count: usize, size: usize) -> Self {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..count)
            .map(|w| {
                let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
                tokio::spawn(async move {
                    for i in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("w{w}-{i}");
                        let value = format!("value {w} {i} {}", "x".repeat(size));
                        let put = client.put(ns, &key, value.clone(), Timeout::None);
                        // Not acknowledged (refused, unknown outcome, timed out): not checked.
                        if let Ok(Ok(_)) = tokio::time::timeout(DEADLINE, put).await {
                            acked.lock().unwrap().push((key, value));
                        }
                    }
                })
            })
            .collect();
        Self {
            acked,
            stop,
            handles,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_for(&self, what: &str, at_least: usize) {
        wait_until(what, DEADLINE * 2, || async {
            (self.count() >= at_least).then_some(())
        })
        .await
        .unwrap();
    }

    async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            tokio::time::timeout(DEADLINE * 2, h)
                .await
                .unwrap()
                .unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Every acknowledged write reads back with its value (a read that fails for a moment is
/// tried again, a few times).
async fn assert_all_readable(client: &GridClient, ns: &str, acked: &[(String, String)]) {
    let mut lost = Vec::new();
    for (key, value) in acked {
        let mut got = None;
        for _ in 0..10 {
            match client.get(ns, key).await {
                Ok(o) => {
                    got = Some(o.map(|o| o.value));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        if got.as_ref().and_then(|o| o.as_deref()) != Some(value.as_bytes()) {
            lost.push((key.clone(), got));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or unreadable: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// The map as the nodes at `gateways` have it (the newest they answer with).
async fn map_of(client: &GridClient) -> Option<PartitionMap> {
    client.refresh().await.ok()?;
    client.partition_map()
}

/// Waits until the map (from `client`) shows node `victim` not active, every partition on
/// the other two nodes only, and those nodes settled on that map: nothing moving, every
/// partition led by one of them.
async fn wait_marked_down_and_re_replicated(
    client: &GridClient,
    survivors: &[String],
    victim: u64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let last = Mutex::new(String::new());
    let done = wait_until("marked down and re-replicated", deadline, || async {
        let map = map_of(client).await?;
        let down = map.nodes.iter().any(|n| n.id == victim && !n.active);
        let placed = map
            .replicas
            .iter()
            .all(|r| r.len() == 2 && !r.contains(&victim));
        let mut seen = format!("epoch {}, victim down {down}, placed {placed}; ", map.epoch);
        let mut settled = true;
        let mut led = 0;
        for addr in survivors {
            let s = client.node_status(addr).await.ok()?;
            seen += &format!(
                "[node {}: epoch {}, leads {}, unsettled {}] ",
                s.node_id, s.map_epoch, s.partitions_led, s.unsettled
            );
            settled &= s.unsettled == 0 && s.map_epoch == map.epoch;
            led += s.partitions_led;
        }
        *last.lock().unwrap() = seen;
        (down && placed && settled && led == map.partitions).then_some(())
    })
    .await;
    done.map_err(|e| anyhow::anyhow!("{e}; last seen: {}", last.lock().unwrap()))
}

/// Waits until node `victim` is active again at `addr` under its old id, votes in the
/// control group, every partition has three replicas including it, and the whole
/// cluster has settled.
async fn wait_back(cluster: &TestCluster, victim: u64, addr: &str, deadline: Duration) {
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let last = Mutex::new(None);
    let back = wait_until(
        "the node back with every partition at 3",
        deadline,
        || async {
            let map = map_of(&client).await?;
            *last.lock().unwrap() = Some(map.clone());
            let node_back = map
                .nodes
                .iter()
                .any(|n| n.id == victim && n.addr == addr && n.active);
            let full = map
                .replicas
                .iter()
                .all(|r| r.len() == 3 && r.contains(&victim));
            let hosts = client.node_status(addr).await.ok()?;
            // Voting in the control group again too: the test kills another node next,
            // and the control group needs it for a quorum then.
            let back = node_back && full && hosts.node_id == victim && hosts.control_voter;
            (back && hosts.partitions == map.partitions).then_some(())
        },
    )
    .await;
    if let Err(e) = back {
        panic!("{e}; last map: {:?}", last.lock().unwrap());
    }
    cluster.wait_settled(3).await.unwrap();
}

/// Runs `gridctl status` against `cs`, returning its exit code, stdout, stderr and how long
/// it took.
fn gridctl_status(cs: &str) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(GRIDCTL);
    cmd.arg("status").env("GRID_CONNECTION", cs);
    let (status, out, err) = run_with_deadline(&mut cmd, None, DEADLINE * 2).unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        err,
        started.elapsed(),
    )
}

/// The row of node `addr` in `gridctl status` output.
fn row<'a>(out: &'a str, addr: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(addr))
        .unwrap_or_else(|| panic!("no row for {addr} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_past_down_after_comes_back_by_itself_and_nothing_is_lost() {
    let partitions = PARTITIONS.to_string();
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", &partitions])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    let writers = Writers::start(&client, "heal", 6, 0);
    writers.wait_for("writes before the cut", 150).await;

    // Cut the busiest leader off from both others, both ways, for well past down-after.
    let victim = cluster.busiest_leader().await.unwrap();
    let victim_addr = cluster.node(victim).unwrap().client_addr().to_string();
    let victim_id = client.node_status(&victim_addr).await.unwrap().node_id;
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let survivors: Vec<String> = others
        .iter()
        .map(|i| cluster.node(*i).unwrap().client_addr().to_string())
        .collect();
    cluster.partition(&[victim], &others).await.unwrap();
    let cut_at = Instant::now();
    let at_cut = writers.count();

    let watcher = GridClient::connect(&format!(
        "bootstrapGateways={}{CLIENT_OPTS}",
        survivors.join(",")
    ))
    .await
    .unwrap();
    wait_marked_down_and_re_replicated(&watcher, &survivors, victim_id, DEADLINE * 2)
        .await
        .unwrap();
    eprintln!(
        "marked down and re-replicated {:?} after the cut",
        cut_at.elapsed()
    );
    writers
        .wait_for("writes during the cut", at_cut + 150)
        .await;

    // Status shows the node down (it answers clients, but is out of the cluster) and the
    // partitions at two replicas, whichever node gridctl asks first.
    let cs = format!("bootstrapGateways={},{}", victim_addr, survivors.join(","));
    let (code, out, err, took) = gridctl_status(&cs);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(took < DEADLINE, "gridctl status took {took:?}");
    let victim_row = row(&out, &victim_addr);
    assert!(victim_row.contains("down"), "{out}");
    assert!(
        out.contains(&format!("{PARTITIONS} with 2")) && out.contains("not active"),
        "{out}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Heal: the node comes back by itself, under its old id, and every partition gets
    // back to three replicas including it.
    cluster.heal().await.unwrap();
    let healed_at = Instant::now();
    let at_heal = writers.count();
    wait_back(&cluster, victim_id, &victim_addr, DEADLINE * 4).await;
    eprintln!(
        "back with every partition at 3 replicas {:?} after the heal",
        healed_at.elapsed()
    );
    writers
        .wait_for("writes after the heal", at_heal + 150)
        .await;
    let (code, out, err, _) = gridctl_status(&cs);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(row(&out, &victim_addr).contains("active"), "{out}");
    assert!(out.contains(&format!("{PARTITIONS} with 3")), "{out}");

    let acked = writers.stop().await;
    // Leadership spreads back onto the returned node, so its replicas serve reads too.
    cluster.wait_leaders_spread().await.unwrap();
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    assert_all_readable(&reader, "heal", &acked).await;
    eprintln!(
        "acknowledged {} writes ({} before the cut, {} before the heal), none lost",
        acked.len(),
        at_cut,
        at_heal
    );

    // The returned node votes in the control group again: with it, the control group
    // keeps a quorum when another node dies, so that one is marked down in turn.
    let (dead, alive) = (others[0], others[1]);
    let dead_addr = cluster.node(dead).unwrap().client_addr().to_string();
    let dead_id = reader.node_status(&dead_addr).await.unwrap().node_id;
    cluster.kill(dead).unwrap();
    let remaining = vec![
        victim_addr.clone(),
        cluster.node(alive).unwrap().client_addr().to_string(),
    ];
    let watcher = GridClient::connect(&format!(
        "bootstrapGateways={}{CLIENT_OPTS}",
        remaining.join(",")
    ))
    .await
    .unwrap();
    wait_marked_down_and_re_replicated(&watcher, &remaining, dead_id, DEADLINE * 2)
        .await
        .unwrap();
    assert_all_readable(&watcher, "heal", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_while_leadership_spreads_is_marked_down_and_comes_back() {
    let partitions = PARTITIONS.to_string();
    let cluster = TestCluster::start(BIN, 3, &["--partitions", &partitions])
        .await
        .unwrap();
    // Right after the cluster forms, leadership is still moving to the planned leaders:
    // the last node to join is about to receive hand-overs. Freeze it now. A frozen
    // process keeps its connections open and answers nothing, so calls to it hang rather
    // than fail fast.
    let victim = 2;
    let victim_addr = cluster.node(victim).unwrap().client_addr().to_string();
    let survivors: Vec<String> = [0, 1]
        .iter()
        .map(|i| cluster.node(*i).unwrap().client_addr().to_string())
        .collect();
    let watcher = GridClient::connect(&format!(
        "bootstrapGateways={}{CLIENT_OPTS}",
        survivors.join(",")
    ))
    .await
    .unwrap();
    let victim_id = watcher.node_status(&victim_addr).await.unwrap().node_id;
    let writers = Writers::start(&watcher, "frozen", 4, 1024);
    cluster.node(victim).unwrap().signal("STOP").unwrap();
    let frozen_at = Instant::now();

    wait_marked_down_and_re_replicated(&watcher, &survivors, victim_id, DOWN_AFTER + DEADLINE)
        .await
        .unwrap();
    eprintln!("marked down {:?} after the freeze", frozen_at.elapsed());

    // Status answers within its timeouts although one node answers nothing at all, even
    // when that node is the first gateway.
    let cs = format!(
        "bootstrapGateways={},{};connectTimeout=1s;requestTimeout=2s",
        victim_addr,
        survivors.join(",")
    );
    let (code, out, err, took) = gridctl_status(&cs);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(
        took < Duration::from_secs(15),
        "gridctl status took {took:?}"
    );
    assert!(row(&out, &victim_addr).contains("gone"), "{out}");

    let at_freeze = writers.count();
    writers
        .wait_for("writes while the node is frozen", at_freeze + 100)
        .await;
    cluster.node(victim).unwrap().signal("CONT").unwrap();
    let thawed_at = Instant::now();
    wait_back(&cluster, victim_id, &victim_addr, DEADLINE * 4).await;
    eprintln!(
        "back with every partition at 3 replicas {:?} after the thaw",
        thawed_at.elapsed()
    );
    let acked = writers.stop().await;
    let reader = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
        .await
        .unwrap();
    assert_all_readable(&reader, "frozen", &acked).await;
}
