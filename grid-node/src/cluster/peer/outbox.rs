//! Coalescing of the Raft messages bound for one peer: the appends (and heartbeats) of
//! every group queue in the peer's outbox, and what is queued when the outbox's task gets
//! to it leaves as one peer message (one frame, one answer) instead of a frame each.
//! Messages are never held back to wait for company: a lone message leaves at once, and
//! batches are pipelined (the next leaves while the previous is still out, up to a
//! bound). A message whose caller gave up is not sent, and a batch is given up with its
//! last caller.
//!
//! ```text
//! group 1 append ─┐                     ┌─▶ frame [append 1, append 7, append 9] ─▶ peer
//! group 7 append ─┼─▶ outbox ─▶ batch ──┤
//! group 9 append ─┘   (bounded)         └─▶ answers, in order, back to each caller
//! ```

use std::sync::Arc;
use std::time::Duration;

use openraft::EntryPayload;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{Link, PeerError, PeerRequest, PeerResponse, RaftRpc, MAX_BATCH_ITEMS};
use crate::cluster::raft_types::GroupCommand;

/// Messages a peer's outbox holds before callers wait to queue.
const OUTBOX_CAPACITY: usize = 1024;
/// Batches to one peer out at once, awaiting their answers.
const MAX_FLIGHTS: usize = 32;
/// A batch grows no further once its values reach this many bytes (a larger message
/// still leaves, alone).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Bytes a message is counted for beside the values it carries.
const MESSAGE_OVERHEAD: usize = 64;

/// Whether `request` goes through the outbox: the appends (heartbeats included) every
/// group sends all the time. Votes go on their own (they are rare, and an election must
/// not wait behind another group's append), as do snapshots (large and slow to answer)
/// and cluster requests.
pub(super) fn coalesces(request: &PeerRequest) -> bool {
    matches!(
        request,
        PeerRequest::Raft {
            rpc: RaftRpc::Append(_),
            ..
        }
    )
}

/// About how many bytes `request` adds to a batch.
fn weight(request: &PeerRequest) -> usize {
    let values = match request {
        PeerRequest::Raft {
            rpc: RaftRpc::Append(append),
            ..
        } => append
            .entries
            .iter()
            .map(|entry| match &entry.payload {
                EntryPayload::Normal(GroupCommand::Partition { cmd, .. }) => {
                    cmd.value_bytes() + MESSAGE_OVERHEAD
                }
                _ => MESSAGE_OVERHEAD,
            })
            .sum(),
        _ => 0,
    };
    values + MESSAGE_OVERHEAD
}

/// Whether a message of `next` bytes joins a batch of `items` messages and `bytes` bytes.
/// The first always does: a batch is never empty.
fn joins(items: usize, bytes: usize, next: usize) -> bool {
    items == 0 || (items < MAX_BATCH_ITEMS && bytes + next <= MAX_BATCH_BYTES)
}

/// A message waiting in an outbox, and where its answer goes.
struct Queued {
    request: PeerRequest,
    /// When its caller stops waiting: after that it is not sent, or no longer waited for.
    deadline: Instant,
    answer: oneshot::Sender<Result<PeerResponse, PeerError>>,
}

impl Queued {
    /// Its caller has given up (timed out, or its future was dropped).
    fn abandoned(&self, now: Instant) -> bool {
        self.answer.is_closed() || self.deadline <= now
    }
}

/// One peer's outbox and the task that empties it. Dropping it stops the task and the
/// batches in flight.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: mpsc::Sender<Queued>,
    task: JoinHandle<()>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Outbox {
    /// Starts the outbox of the peer at `addr`, sending over `link`.
    pub(super) fn start(link: Arc<Link>, addr: String) -> Self {
        let (queue, rx) = mpsc::channel(OUTBOX_CAPACITY);
        Self {
            queue,
            task: tokio::spawn(run(link, addr, rx)),
        }
    }

    /// Queues `request` and waits up to `timeout` (queueing included) for its answer.
    pub(super) async fn call(
        &self,
        addr: &str,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            request,
            deadline: Instant::now() + timeout,
            answer,
        };
        let failed = |reason: &str| PeerError::Failed {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let exchange = async {
            self.queue
                .send(queued)
                .await
                .map_err(|_| failed("the peer's outbox is closed"))?;
            answered
                .await
                .map_err(|_| failed("the peer's outbox dropped the message"))?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(failed(&format!("no answer within {timeout:?}"))))
    }
}

/// Empties the outbox: takes what is queued (up to a batch's bounds) and sends it, with
/// up to [`MAX_FLIGHTS`] earlier batches still out. At that bound it takes nothing more,
/// so callers wait in the queue under their own timeouts.
async fn run(link: Arc<Link>, addr: String, mut rx: mpsc::Receiver<Queued>) {
    let mut flights = JoinSet::new();
    let mut held: Option<Queued> = None;
    loop {
        while flights.len() >= MAX_FLIGHTS {
            flights.join_next().await;
        }
        let first = match held.take() {
            Some(queued) => queued,
            None => tokio::select! {
                Some(_) = flights.join_next(), if !flights.is_empty() => continue,
                queued = rx.recv() => match queued {
                    Some(queued) => queued,
                    None => break,
                },
            },
        };
        // Let the tasks woken with this one (the other groups' replication in the same
        // heartbeat round, appends of one client batch) queue theirs first.
        tokio::task::yield_now().await;
        let mut bytes = weight(&first.request);
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            let more = weight(&next.request);
            if !joins(batch.len(), bytes, more) {
                held = Some(next);
                break;
            }
            bytes += more;
            batch.push(next);
        }
        flights.spawn(fly(Arc::clone(&link), addr.clone(), batch));
    }
    while flights.join_next().await.is_some() {}
}

/// Sends one batch, without the messages whose callers gave up, and hands each caller
/// its answer. The whole exchange (connecting included) ends when the last caller stops
/// waiting.
async fn fly(link: Arc<Link>, addr: String, mut batch: Vec<Queued>) {
    let now = Instant::now();
    batch.retain(|q| !q.abandoned(now));
    let Some(deadline) = batch.iter().map(|q| q.deadline).max() else {
        return;
    };
    let (requests, answers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|q| (q.request, q.answer)).unzip();
    let timeout = deadline.saturating_duration_since(now);
    let sent = tokio::time::timeout_at(deadline, link.call(&addr, &requests, timeout));
    let error = match sent.await {
        Ok(Ok(responses)) if responses.len() == answers.len() => {
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(Ok(response));
            }
            return;
        }
        Ok(Ok(responses)) => PeerError::Failed {
            addr: addr.clone(),
            reason: format!(
                "{} answers to a batch of {}: {:?}",
                responses.len(),
                answers.len(),
                responses.first()
            ),
        },
        Ok(Err(error)) => error,
        Err(_) => PeerError::Failed {
            addr: addr.clone(),
            reason: format!("no answer within {timeout:?}"),
        },
    };
    for answer in answers {
        let _ = answer.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_messages_until_a_bound_and_never_starts_empty() {
        assert!(
            joins(0, 0, MAX_BATCH_BYTES * 2),
            "a large message leaves alone"
        );
        assert!(joins(1, 100, 100));
        assert!(!joins(1, MAX_BATCH_BYTES - 10, 100), "over the byte bound");
        assert!(joins(1, MAX_BATCH_BYTES - 100, 100), "exactly at the bound");
        assert!(!joins(MAX_BATCH_ITEMS, 0, 0), "over the count bound");
        assert!(joins(MAX_BATCH_ITEMS - 1, 0, 0));
    }

    #[test]
    fn appends_coalesce_and_votes_and_cluster_requests_do_not() {
        let vote = PeerRequest::Raft {
            group: 3,
            to: 2,
            rpc: RaftRpc::Vote(openraft::raft::VoteRequest::new(
                openraft::Vote::new(1, 1),
                None,
            )),
        };
        assert!(!coalesces(&vote));
        assert_eq!(weight(&vote), MESSAGE_OVERHEAD);
        let heartbeat = PeerRequest::Raft {
            group: 3,
            to: 2,
            rpc: RaftRpc::Append(openraft::raft::AppendEntriesRequest {
                vote: openraft::Vote::new_committed(1, 1),
                prev_log_id: None,
                leader_commit: None,
                entries: Vec::new(),
            }),
        };
        assert!(coalesces(&heartbeat));
        assert!(!coalesces(&PeerRequest::Ping));
        assert!(!coalesces(&PeerRequest::Join {
            addr: "127.0.0.1:1".into()
        }));
    }
}
