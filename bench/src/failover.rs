//! Write unavailability after kill -9: a 3-node grid (R = 3, 64 partitions) with one
//! writer per key (64 keys, 1 KB values, each writer putting its key in a loop). Each
//! round kills a node with SIGKILL and measures, for every key that node led, the gap
//! between the last successful write before the kill and the first after it (or any
//! longer gap until every such key has written again); the round's figure is the
//! longest. A fresh node then joins in its place and the cluster settles before the next
//! round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use grid_client::{GridClient, Timeout};
use grid_proto::hash::{key_hash, partition_of};
use grid_proto::sync::lock;

use crate::nodes::{connection_string, start_cluster, wait_settled, BenchNode};

const KEYS: usize = 64;
const VALUE_BYTES: usize = 1024;
const NS: &str = "failover";
/// How long every key led by the killed node may take to write again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// After the last such key wrote again, how long later gaps still count for the round.
const AFTERMATH: Duration = Duration::from_secs(2);
/// Pause between a writer's failed attempt and its next one.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// One key's writes as seen by its writer.
#[derive(Debug, Clone)]
struct KeyState {
    last_ok: Instant,
    /// Longest gap that ended after the current round's kill.
    gap: Duration,
    /// Whether a write succeeded since the kill.
    ok_since_kill: bool,
    /// The last write's error, if it failed.
    error: Option<String>,
}

type Shared = Arc<Mutex<Vec<KeyState>>>;

fn key(i: usize) -> String {
    format!("f{i}")
}

/// What the kills measured: the longest gap per kill, milliseconds.
pub async fn run(kills: usize) -> anyhow::Result<Vec<f64>> {
    let args = vec!["--partitions".to_string(), "64".to_string()];
    let mut nodes = start_cluster(3, &args).await?;
    let cs = format!(
        "{};maxPoolSize=1;clientCacheType=None",
        connection_string(&nodes)
    );
    let now = Instant::now();
    let state: Shared = Arc::new(Mutex::new(vec![
        KeyState {
            last_ok: now,
            gap: Duration::ZERO,
            ok_since_kill: true,
            error: None,
        };
        KEYS
    ]));
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let client = GridClient::connect(&cs).await?;
        writers.spawn(write_loop(client, i, Arc::clone(&state)));
    }
    let mut gaps = Vec::new();
    let outcome = async {
        for round in 0..kills {
            let victim = round % nodes.len();
            let ms = kill_and_measure(&mut nodes, victim, &state).await?;
            eprintln!("failover kill {}: longest write gap {ms:.0} ms", round + 1);
            gaps.push(ms);
            let survivor = nodes[(victim + 1) % nodes.len()].addr.clone();
            nodes[victim] =
                BenchNode::start(&[args.clone(), vec!["--join".into(), survivor]].concat())?;
            wait_settled(&nodes).await?;
        }
        anyhow::Ok(())
    }
    .await;
    writers.abort_all();
    while writers.join_next().await.is_some() {}
    outcome?;
    Ok(gaps)
}

/// Puts key `i` until aborted, recording each success in `state`.
async fn write_loop(client: GridClient, i: usize, state: Shared) {
    let value = vec![0x5a_u8; VALUE_BYTES];
    loop {
        match client.put(NS, key(i), value.clone(), Timeout::None).await {
            Ok(_) => {
                let now = Instant::now();
                let mut all = lock(&state);
                let k = &mut all[i];
                k.gap = k.gap.max(now - k.last_ok);
                k.last_ok = now;
                k.ok_since_kill = true;
                k.error = None;
            }
            Err(e) => {
                lock(&state)[i].error = Some(e.to_string());
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Kills `nodes[victim]` and returns the longest write gap of the keys it led, in ms.
async fn kill_and_measure(
    nodes: &mut [BenchNode],
    victim: usize,
    state: &Shared,
) -> anyhow::Result<f64> {
    let observer = GridClient::connect(&connection_string(nodes)).await?;
    observer.refresh().await?;
    let map = observer.partition_map().context("no partition map")?;
    let victim_id = map
        .nodes
        .iter()
        .find(|n| n.addr == nodes[victim].addr)
        .map(|n| n.id)
        .context("victim not in the map")?;
    let led: Vec<usize> = (0..KEYS)
        .filter(|i| {
            let p = partition_of(key_hash(NS, key(*i).as_bytes()), map.partitions);
            map.leaders.get(p as usize).copied().flatten() == Some(victim_id)
        })
        .collect();
    drop(observer);
    {
        let mut all = lock(state);
        for k in all.iter_mut() {
            k.gap = Duration::ZERO;
            k.ok_since_kill = false;
        }
    }
    nodes[victim].kill()?;
    let killed = Instant::now();
    loop {
        let recovered = {
            let all = lock(state);
            led.iter().all(|i| all[*i].ok_since_kill)
        };
        if recovered {
            break;
        }
        if killed.elapsed() > RECOVERY_LIMIT {
            bail!(
                "keys of the killed node did not write again within {RECOVERY_LIMIT:?}: {}",
                stuck(state, &led)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(AFTERMATH).await;
    let all = lock(state);
    let longest = led.iter().map(|i| all[*i].gap).max().unwrap_or_default();
    Ok(longest.as_secs_f64() * 1000.0)
}

/// The keys among `led` that have not written since the kill, each with its last error.
fn stuck(state: &Shared, led: &[usize]) -> String {
    let all = lock(state);
    led.iter()
        .filter(|i| !all[**i].ok_since_kill)
        .map(|i| {
            let error = all[*i].error.as_deref().unwrap_or("no answer yet");
            format!("{}: {error}", key(*i))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
