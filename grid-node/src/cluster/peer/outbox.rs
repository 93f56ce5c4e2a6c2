//! Coalescing of the Raft messages bound for one peer: appends and votes of every group
//! queue in the peer's outbox, and what is queued when the outbox's task gets to it leaves
//! as one peer message (one frame, one answer) instead of a frame each. Messages are never
//! held back to wait for company: a lone message leaves at once, and batches are
//! pipelined (the next leaves while the previous is still out).
//!
//! ```text
//! group 1 append ─┐                      ┌─▶ frame [append 1, append 7, vote 9] ─▶ peer
//! group 7 append ─┼─▶ outbox ─▶ batch ───┤
//! group 9 vote ───┘   (bounded)          └─▶ answers, in order, back to each caller
//! ```

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use openraft::EntryPayload;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Link, PeerError, PeerRequest, PeerResponse, RaftRpc, MAX_BATCH_ITEMS};
use crate::cluster::raft_types::GroupCommand;

/// Messages a peer's outbox holds before callers wait to queue.
const OUTBOX_CAPACITY: usize = 1024;
/// A batch grows no further once its values reach this many bytes (a larger message
/// still leaves, alone).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Bytes a message is counted for beside the values it carries.
const MESSAGE_OVERHEAD: usize = 64;

/// Whether `request` goes through the outbox: the Raft messages every group sends all the
/// time. Snapshots (large and slow to answer) and cluster requests go on their own.
pub(super) fn coalesces(request: &PeerRequest) -> bool {
    matches!(
        request,
        PeerRequest::Raft {
            rpc: RaftRpc::Append(_) | RaftRpc::Vote(_),
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
    timeout: Duration,
    answer: oneshot::Sender<Result<PeerResponse, PeerError>>,
}

/// One peer's outbox and the task that empties it. Dropping it stops the task.
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
    pub(super) fn start(link: std::sync::Arc<Link>, addr: String) -> Self {
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
            timeout,
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
/// earlier batches still in flight.
async fn run(link: std::sync::Arc<Link>, addr: String, mut rx: mpsc::Receiver<Queued>) {
    let mut flights = FuturesUnordered::new();
    let mut held: Option<Queued> = None;
    loop {
        let first = match held.take() {
            Some(queued) => queued,
            None => tokio::select! {
                queued = rx.recv() => match queued {
                    Some(queued) => queued,
                    None => break,
                },
                Some(()) = flights.next(), if !flights.is_empty() => continue,
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
        flights.push(fly(std::sync::Arc::clone(&link), addr.clone(), batch));
    }
    while flights.next().await.is_some() {}
}

/// Sends one batch and hands each caller its answer.
async fn fly(link: std::sync::Arc<Link>, addr: String, batch: Vec<Queued>) {
    // Waiting longer than any of its callers would help none of them.
    let timeout = batch.iter().map(|q| q.timeout).max().unwrap_or_default();
    let (requests, answers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|q| (q.request, q.answer)).unzip();
    match link.call(&addr, &requests, timeout).await {
        Ok(responses) if responses.len() == answers.len() => {
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(Ok(response));
            }
        }
        Ok(responses) => {
            let error = PeerError::Failed {
                addr: addr.clone(),
                reason: format!(
                    "{} answers to a batch of {}: {:?}",
                    responses.len(),
                    answers.len(),
                    responses.first()
                ),
            };
            for answer in answers {
                let _ = answer.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for answer in answers {
                let _ = answer.send(Err(error.clone()));
            }
        }
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
    fn appends_and_votes_coalesce_and_cluster_requests_do_not() {
        let vote = PeerRequest::Raft {
            group: 3,
            to: 2,
            rpc: RaftRpc::Vote(openraft::raft::VoteRequest::new(
                openraft::Vote::new(1, 1),
                None,
            )),
        };
        assert!(coalesces(&vote));
        assert_eq!(weight(&vote), MESSAGE_OVERHEAD);
        assert!(!coalesces(&PeerRequest::Ping));
        assert!(!coalesces(&PeerRequest::Join {
            addr: "127.0.0.1:1".into()
        }));
    }
}
