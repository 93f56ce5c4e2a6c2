//! Linearizability under faults: concurrent reads, writes and compare-and-set (by
//! version) on a few keys, while the partition leader is killed and later a node is cut
//! off from the others. The recorded history is checked with the Wing-Gong checker;
//! operations whose outcome is unknown (timeouts, broken connections, leadership lost
//! mid-write) are recorded as such, not as failures.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_client::{ClientError, GridClient, Timeout};
use grid_proto::{ObjKey, Op, Reply};
use grid_tests::cluster::TestCluster;
use grid_tests::linearizability::{
    check_per_key, KeyedCheckResult, KeyedOperation, Operation, RegisterInput, RegisterOutput,
    VersionedRegister,
};
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const CLIENT_OPTS: &str = ";maxRequestRetries=8;requestTimeout=2s;connectTimeout=1s";
const KEYS: usize = 4;
const NS: &str = "lin";

type History = Arc<Mutex<Vec<KeyedOperation<RegisterInput, RegisterOutput>>>>;

/// A small deterministic generator, so a failing run can be told apart by its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one operation and turns the reply into the model's output; `Err(true)` when the
/// operation surely did not run (left out of the history), `Err(false)` when its outcome
/// is unknown.
async fn run(
    client: &GridClient,
    key: &str,
    input: &RegisterInput,
    raw: &Op,
) -> Result<RegisterOutput, bool> {
    let reply = match client.execute(raw.clone()).await {
        Ok(reply) => reply,
        Err(e) if e.did_not_run() => return Err(true),
        Err(ClientError::Invalid(_)) => return Err(true),
        Err(_) => return Err(false),
    };
    let _ = key;
    Ok(match (input, reply) {
        (RegisterInput::Read, Reply::Retrieved { value, info }) => {
            RegisterOutput::ReadOk(Some((value.into(), info.version)))
        }
        (RegisterInput::Read, Reply::NotFound) => RegisterOutput::ReadOk(None),
        (RegisterInput::Write(_), Reply::Added { version } | Reply::Updated { version }) => {
            RegisterOutput::Written(version)
        }
        (RegisterInput::Cas { .. }, Reply::Updated { version }) => RegisterOutput::Written(version),
        (RegisterInput::Cas { .. }, Reply::VersionMismatch { current }) => {
            RegisterOutput::Mismatch(Some(current))
        }
        (RegisterInput::Cas { .. }, Reply::NotFound) => RegisterOutput::Mismatch(None),
        (RegisterInput::Remove, Reply::Removed) => RegisterOutput::Removed(true),
        (RegisterInput::Remove, Reply::NotFound) => RegisterOutput::Removed(false),
        (_, Reply::NotLeader { .. } | Reply::Unavailable { .. }) => return Err(true),
        (_, Reply::OutcomeUnknown { .. }) => return Err(false),
        (input, other) => panic!("unexpected reply {other:?} to {input:?}"),
    })
}

async fn client_loop(
    client: GridClient,
    id: usize,
    epoch: Instant,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut seen_version = [0u64; KEYS];
    for seq in 0..20_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = (rng.next() % KEYS as u64) as usize;
        let key = format!("k{k}");
        let obj = ObjKey::new(NS, key.as_bytes().to_vec());
        let value = format!("c{id}-{seq}").into_bytes();
        let (input, raw) = match rng.next() % 10 {
            0..=3 => (
                RegisterInput::Read,
                Op::Read {
                    obj,
                    cached_version: None,
                },
            ),
            4..=7 => (
                RegisterInput::Write(value.clone().into()),
                Op::Put {
                    obj,
                    value,
                    timeout: Timeout::None,
                    lock_id: None,
                },
            ),
            8 => (RegisterInput::Remove, Op::Remove { obj, lock_id: None }),
            _ => (
                RegisterInput::Cas {
                    expected_version: seen_version[k],
                    value: value.clone().into(),
                },
                Op::Update {
                    obj,
                    value,
                    timeout: None,
                    expected_version: Some(seen_version[k]),
                    lock_id: None,
                    unlock: false,
                },
            ),
        };
        let call = epoch.elapsed().as_nanos() as u64;
        let result = run(&client, &key, &input, &raw).await;
        let ret = epoch.elapsed().as_nanos() as u64;
        let op = match result {
            Ok(output) => {
                match &output {
                    RegisterOutput::ReadOk(Some((_, v)))
                    | RegisterOutput::Written(v)
                    | RegisterOutput::Mismatch(Some(v)) => seen_version[k] = *v,
                    _ => {}
                }
                Operation::completed(id, call, ret, input, output)
            }
            Err(true) => continue,
            Err(false) => Operation::indeterminate(id, call, input),
        };
        history.lock().unwrap().push(KeyedOperation { key, op });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_under_leader_kill_and_partition_is_linearizable() {
    let mut cluster = TestCluster::start(BIN, 3, &["--partitions", "4"])
        .await
        .unwrap();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut clients = Vec::new();
    for id in 0..6 {
        let client = GridClient::connect(&cluster.connection_string(CLIENT_OPTS))
            .await
            .unwrap();
        clients.push(tokio::spawn(client_loop(
            client,
            id,
            epoch,
            history.clone(),
            stop.clone(),
        )));
    }
    let recorded = |h: &History| h.lock().unwrap().len();
    wait_until("ops before the kill", DEADLINE, || async {
        (recorded(&history) >= 300).then_some(())
    })
    .await
    .unwrap();
    // Kill the node that leads the most partitions (all of them, after bootstrap).
    let victim = cluster.busiest_leader().await.unwrap();
    cluster.kill(victim).unwrap();
    let at_kill = recorded(&history);
    wait_until("ops after the kill", DEADLINE * 2, || async {
        (recorded(&history) >= at_kill + 300).then_some(())
    })
    .await
    .unwrap();
    // Cut the survivors apart for a while (neither side has a quorum of three), then heal.
    cluster.split_for(Duration::from_secs(2)).await.unwrap();
    let at_heal = recorded(&history);
    wait_until("ops after healing", DEADLINE * 2, || async {
        (recorded(&history) >= at_heal + 300).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let unknown = history.iter().filter(|o| o.op.is_indeterminate()).count();
    let started = Instant::now();
    let verdict = check_per_key(&VersionedRegister, &history, Duration::from_secs(120));
    eprintln!(
        "{} ops ({unknown} with unknown outcome) on {KEYS} keys checked in {:?}: {verdict:?}",
        history.len(),
        started.elapsed()
    );
    assert_eq!(verdict, KeyedCheckResult::Linearizable);

    // The check has teeth: the same history with one read changed to a value nobody
    // wrote is rejected.
    let mut corrupted = history.clone();
    let read = corrupted
        .iter_mut()
        .find(|o| matches!(o.op.output, Some(RegisterOutput::ReadOk(Some(_)))))
        .expect("the run recorded a successful read");
    if let Some(RegisterOutput::ReadOk(Some((value, _)))) = &mut read.op.output {
        *value = "never written".into();
    }
    let verdict = check_per_key(&VersionedRegister, &corrupted, Duration::from_secs(120));
    assert!(
        matches!(verdict, KeyedCheckResult::NotLinearizable { .. }),
        "{verdict:?}"
    );
}
