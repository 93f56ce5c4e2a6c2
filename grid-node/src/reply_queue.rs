//! A connection's outgoing replies, bounded in bytes: what the node owes one client
//! before it stops reading that client's requests (or, for pushed events, skips the
//! client this round).
//!
//! Each queued reply holds permits of a byte budget for its weight, released once the
//! writer has written it. A client that stops reading therefore costs at most the
//! budget (plus one reply larger than it), never the sum of everything it asked for.

use std::sync::Arc;

use grid_proto::Reply;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bytes charged for a reply beyond its value bytes: the frame header, the encoding and
/// the object's facts.
const REPLY_OVERHEAD: usize = 256;

/// The writer has stopped (the connection is closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A reply waiting for the writer, with its share of the budget.
#[derive(Debug)]
pub struct Queued {
    /// Request id the reply answers (0: pushed by the node).
    pub id: u64,
    /// The reply.
    pub reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// The sending side; clones share the budget.
#[derive(Debug, Clone)]
pub struct ReplySink {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    cap: usize,
}

/// The writer's side.
#[derive(Debug)]
pub struct ReplyQueue {
    rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Semaphore>,
}

/// A queue that holds at most `cap_bytes` of replies (one larger reply may pass alone).
pub fn channel(cap_bytes: usize) -> (ReplySink, ReplyQueue) {
    let cap = cap_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(cap));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        ReplySink {
            tx,
            budget: Arc::clone(&budget),
            cap,
        },
        ReplyQueue { rx, budget },
    )
}

/// What a reply costs in the budget: its value bytes and a fixed overhead.
pub fn weight(reply: &Reply) -> usize {
    let value = match reply {
        Reply::Retrieved { value, .. } => value.len(),
        Reply::Event(event) => event.value.len(),
        Reply::Peer { payload } => payload.len(),
        Reply::Map(map) => map.replicas.len() * 32 + map.nodes.len() * 64,
        _ => 0,
    };
    value + REPLY_OVERHEAD
}

impl ReplySink {
    fn permits(&self, reply: &Reply) -> u32 {
        weight(reply).min(self.cap) as u32
    }

    /// Queues a reply, waiting while the client has the budget's worth unread.
    pub async fn send(&self, id: u64, reply: Reply) -> Result<(), Closed> {
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(self.permits(&reply))
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued {
                id,
                reply,
                _permit: permit,
            })
            .map_err(|_| Closed)
    }

    /// Queues a reply if the budget has room now; false when full or closed.
    pub fn try_send(&self, id: u64, reply: Reply) -> bool {
        let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(self.permits(&reply))
        else {
            return false;
        };
        self.tx
            .send(Queued {
                id,
                reply,
                _permit: permit,
            })
            .is_ok()
    }

    /// True once the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes when the writer has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl ReplyQueue {
    /// The next reply; `None` when every sink is gone.
    pub async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// The next reply if one is queued now.
    pub fn try_recv(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }
}

impl Drop for ReplyQueue {
    fn drop(&mut self) {
        // Wake senders waiting for room: nothing will be written any more.
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrieved(bytes: usize) -> Reply {
        Reply::Peer {
            payload: vec![0; bytes],
        }
    }

    #[tokio::test]
    async fn the_budget_bounds_unread_replies() {
        let (sink, mut queue) = channel(10_000);
        assert!(sink.try_send(1, retrieved(4_000)));
        assert!(sink.try_send(2, retrieved(4_000)));
        // A third would pass the budget.
        assert!(!sink.try_send(3, retrieved(4_000)));
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move { sink.send(3, retrieved(4_000)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Writing one frees its share.
        let first = queue.recv().await.unwrap();
        assert_eq!(first.id, 1);
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        // One reply larger than the whole budget still passes alone.
        while queue.try_recv().is_some() {}
        assert!(sink.try_send(4, retrieved(50_000)));
        assert!(!sink.try_send(5, retrieved(1)));
    }

    #[tokio::test]
    async fn senders_wake_when_the_writer_stops() {
        let (sink, queue) = channel(1_000);
        assert!(sink.try_send(1, retrieved(900)));
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move { sink.send(2, retrieved(900)).await }
        });
        tokio::task::yield_now().await;
        drop(queue);
        assert_eq!(waiting.await.unwrap(), Err(Closed));
        assert!(sink.is_closed());
    }
}
