//! Register workloads against a live cluster, recorded as histories for the
//! [`crate::linearizability`] checker.
//!
//! Each client loop runs reads, writes, removes and compare-and-sets (by version) on a few
//! keys of one namespace and records every operation with its call and return times.
//! Operations that surely did not run are left out; those whose outcome is unknown
//! (timeouts, broken connections, leadership lost mid-write) are recorded as such, never
//! as failures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_proto::sync::lock;

use grid_client::{ClientError, GridClient, Timeout};
use grid_proto::{ObjKey, Op, Reply};

use crate::linearizability::{
    check_per_key, KeyedCheckResult, KeyedOperation, Operation, RegisterInput, RegisterOutput,
    VersionedRegister,
};

/// One recorded operation on a named key.
pub type RegisterOp = KeyedOperation<RegisterInput, RegisterOutput>;

/// The shared record of every client's operations.
pub type History = Arc<Mutex<Vec<RegisterOp>>>;

/// Operations recorded so far.
pub fn recorded(history: &History) -> usize {
    lock(history).len()
}

/// Operations recorded so far by the clients whose id `pick` selects.
pub fn recorded_by(history: &History, pick: impl Fn(usize) -> bool) -> usize {
    lock(history).iter().filter(|o| pick(o.op.client)).count()
}

/// Sets a stop flag when dropped, so client loops also end when a test fails half-way.
#[derive(Debug)]
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A small deterministic generator, so a failing run can be told apart by its seed.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What the client loops work on.
#[derive(Debug, Clone, Copy)]
pub struct RegisterWorkload {
    /// The namespace of the keys.
    pub namespace: &'static str,
    /// Keys `k0` up to `k{keys - 1}`.
    pub keys: usize,
    /// Most operations one client runs, whatever the stop flag says.
    pub max_ops: u64,
}

impl RegisterWorkload {
    /// Starts `clients` client loops, client `id` connecting with `connection(id)`, all
    /// recording into `history` timed from `epoch` until `stop` is set.
    pub async fn start_clients(
        self,
        clients: usize,
        connection: impl Fn(usize) -> String,
        epoch: Instant,
        history: &History,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut loops = Vec::new();
        for id in 0..clients {
            let client = GridClient::connect(&connection(id)).await?;
            loops.push(tokio::spawn(self.client_loop(
                client,
                id,
                epoch,
                history.clone(),
                stop.clone(),
            )));
        }
        Ok(loops)
    }

    /// Runs operations through `client` until `stop` is set or `max_ops` ran, recording
    /// them in `history` as client `id`, timed from `epoch`.
    pub async fn client_loop(
        self,
        client: GridClient,
        id: usize,
        epoch: Instant,
        history: History,
        stop: Arc<AtomicBool>,
    ) {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
        let mut seen_version = vec![0u64; self.keys];
        for seq in 0..self.max_ops {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let k = (rng.next() % self.keys as u64) as usize;
            let key = format!("k{k}");
            let obj = ObjKey::new(self.namespace, key.as_bytes().to_vec());
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
            let result = run_op(&client, &input, raw).await;
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
                Err(NoOutput::DidNotRun) => continue,
                Err(NoOutput::Unknown) => Operation::indeterminate(id, call, input),
            };
            lock(&history).push(KeyedOperation { key, op });
        }
    }
}

/// Why an operation has no output.
enum NoOutput {
    /// It surely did not run: left out of the history.
    DidNotRun,
    /// It may or may not have taken effect.
    Unknown,
}

/// Runs one operation and turns the reply into the model's output.
async fn run_op(
    client: &GridClient,
    input: &RegisterInput,
    raw: Op,
) -> Result<RegisterOutput, NoOutput> {
    let reply = match client.execute(raw).await {
        Ok(reply) => reply,
        Err(e) if e.did_not_run() => return Err(NoOutput::DidNotRun),
        Err(ClientError::Invalid(_)) => return Err(NoOutput::DidNotRun),
        Err(_) => return Err(NoOutput::Unknown),
    };
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
        (_, Reply::NotLeader { .. } | Reply::Unavailable { .. }) => {
            return Err(NoOutput::DidNotRun)
        }
        (_, Reply::OutcomeUnknown { .. }) => return Err(NoOutput::Unknown),
        (input, other) => panic!("unexpected reply {other:?} to {input:?}"),
    })
}

/// Checks `history` and returns the verdict, after showing that the check can fail: the
/// same history with its last successful read changed to a value nobody wrote must be
/// rejected (panics otherwise, or if no read succeeded).
pub fn check_with_teeth(history: &[RegisterOp], budget: Duration) -> KeyedCheckResult {
    let mut corrupted = history.to_vec();
    let read = corrupted
        .iter_mut()
        .rev()
        .find(|o| matches!(o.op.output, Some(RegisterOutput::ReadOk(Some(_)))))
        .expect("the run recorded a successful read");
    if let Some(RegisterOutput::ReadOk(Some((value, _)))) = &mut read.op.output {
        *value = "never written".into();
    }
    let rejected = check_per_key(&VersionedRegister, &corrupted, budget);
    assert!(
        matches!(rejected, KeyedCheckResult::NotLinearizable { .. }),
        "a corrupted history was not rejected: {rejected:?}"
    );
    check_per_key(&VersionedRegister, history, budget)
}
