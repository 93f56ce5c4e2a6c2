//! The requests this node holds parked in a group's lock queue: their answer channels,
//! the ones whose callers went away (a lock granted to one is released rather than held
//! by nobody), and the waiter numbers a new term's adoption drops.
//!
//! A waiter is numbered here and named in the log as `WaiterId { owner: me, seq }`; its
//! answer comes out of an apply as `(WaiterId, Reply)` and is delivered through
//! [`Parked::deliver`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use grid_proto::sync::lock;
use grid_proto::{ObjKey, Reply};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::raft_types::NodeId;
use crate::partition::WaiterId;

/// The parked requests of one group on this node.
#[derive(Debug)]
pub(super) struct Parked {
    me: NodeId,
    /// Waiter seq -> (object, answer channel).
    waiters: Mutex<HashMap<u64, (ObjKey, oneshot::Sender<Reply>)>>,
    /// Waiter seq -> object, for parked requests whose caller went away.
    cancelled: Mutex<HashMap<u64, ObjKey>>,
    next: AtomicU64,
    cancelled_tx: mpsc::UnboundedSender<WaiterId>,
    cancelled_rx: Mutex<mpsc::UnboundedReceiver<WaiterId>>,
    /// The term in which this node last adopted the group's waiters as leader.
    adopted_term: AtomicU64,
    /// Waiter numbers below this were failed when this node last saw itself not leading;
    /// its next adoption drops them from the queue.
    failed_below: AtomicU64,
}

/// What became of an answer owed to a waiter.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Its caller has it.
    Delivered,
    /// Its caller went away; the object it waited for, if known.
    Gone(Option<ObjKey>),
}

impl Parked {
    /// No parked requests yet, for node `me`.
    pub(super) fn new(me: NodeId) -> Self {
        let (cancelled_tx, cancelled_rx) = mpsc::unbounded_channel();
        Self {
            me,
            waiters: Mutex::default(),
            cancelled: Mutex::default(),
            next: AtomicU64::new(1),
            cancelled_tx,
            cancelled_rx: Mutex::new(cancelled_rx),
            adopted_term: AtomicU64::new(0),
            failed_below: AtomicU64::new(0),
        }
    }

    /// Registers a request about to be parked on `obj`: its name in the log, its guard
    /// and the channel its answer comes on.
    pub(super) fn park(&self, obj: &ObjKey) -> (WaiterId, WaitGuard<'_>, oneshot::Receiver<Reply>) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(seq, (obj.clone(), tx));
        let waiter = WaiterId {
            owner: self.me,
            seq,
        };
        let guard = WaitGuard {
            parked: self,
            seq: Some(seq),
        };
        (waiter, guard, rx)
    }

    /// Hands `reply` to waiter `seq`'s caller.
    pub(super) fn deliver(&self, seq: u64, reply: Reply) -> Delivery {
        let entry = lock(&self.waiters).remove(&seq);
        match entry {
            Some((obj, tx)) => match tx.send(reply) {
                Ok(()) => Delivery::Delivered,
                Err(_) => Delivery::Gone(Some(obj)),
            },
            None => Delivery::Gone(lock(&self.cancelled).remove(&seq)),
        }
    }

    /// Waiters whose callers went away since the last call, to be dropped from the queue.
    pub(super) fn take_cancelled(&self) -> Vec<WaiterId> {
        let mut rx = lock(&self.cancelled_rx);
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Waiter `seq` is out of the queue: no grant can come for it any more.
    pub(super) fn cancel_done(&self, seq: u64) {
        lock(&self.cancelled).remove(&seq);
    }

    /// This node no longer leads: the waits parked here are gone with the leadership
    /// (the next leader drops them), so their requests fail now rather than wait out
    /// their whole wait. Only waiters numbered before now: one registered meanwhile (this
    /// node leads again) is kept, and so is its place in the next adoption.
    pub(super) fn abandon(&self) {
        let cutoff = self.next.load(Ordering::Relaxed);
        self.failed_below.fetch_max(cutoff, Ordering::Relaxed);
        lock(&self.waiters).retain(|seq, _| *seq >= cutoff);
        drop(self.take_cancelled());
        lock(&self.cancelled).clear();
    }

    /// The lowest waiter number to keep, if this node has not adopted the group's
    /// waiters in `term` yet.
    pub(super) fn adoption_due(&self, term: u64) -> Option<u64> {
        (self.adopted_term.load(Ordering::Relaxed) != term)
            .then(|| self.failed_below.load(Ordering::Relaxed))
    }

    /// The waiters were adopted in `term`.
    pub(super) fn adopted(&self, term: u64) {
        self.adopted_term.store(term, Ordering::Relaxed);
    }
}

/// Removes a parked request's registration if its caller goes away, and asks the leader
/// to drop it from the queue.
pub(super) struct WaitGuard<'a> {
    parked: &'a Parked,
    seq: Option<u64>,
}

impl WaitGuard<'_> {
    /// The request was never parked: drop its registration, nothing to cancel.
    pub(super) fn forget(&mut self) {
        if let Some(seq) = self.seq.take() {
            lock(&self.parked.waiters).remove(&seq);
        }
    }

    /// The request has its answer: nothing to cancel.
    pub(super) fn answered(&mut self) {
        self.seq = None;
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(seq) = self.seq else { return };
        let removed = lock(&self.parked.waiters).remove(&seq);
        if let Some((obj, _)) = removed {
            // A grant may still come for it; it is then released (see `settle`).
            lock(&self.parked.cancelled).insert(seq, obj);
            let _ = self.parked.cancelled_tx.send(WaiterId {
                owner: self.parked.me,
                seq,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> ObjKey {
        ObjKey::new("ns", b"k")
    }

    #[test]
    fn an_answer_reaches_its_caller() {
        let parked = Parked::new(3);
        let (waiter, mut guard, mut rx) = parked.park(&obj());
        assert_eq!(waiter.owner, 3);
        assert_eq!(
            parked.deliver(waiter.seq, Reply::Removed),
            Delivery::Delivered
        );
        guard.answered();
        drop(guard);
        assert_eq!(rx.try_recv().ok(), Some(Reply::Removed));
        assert!(parked.take_cancelled().is_empty());
    }

    #[test]
    fn a_caller_gone_is_cancelled_and_its_late_grant_names_the_object() {
        let parked = Parked::new(3);
        let (waiter, guard, _rx) = parked.park(&obj());
        drop(guard);
        assert_eq!(parked.take_cancelled(), vec![waiter]);
        assert_eq!(
            parked.deliver(waiter.seq, Reply::Removed),
            Delivery::Gone(Some(obj()))
        );
        assert_eq!(
            parked.deliver(waiter.seq, Reply::Removed),
            Delivery::Gone(None)
        );
    }

    #[test]
    fn a_request_never_parked_leaves_nothing_behind() {
        let parked = Parked::new(3);
        let (waiter, mut guard, _rx) = parked.park(&obj());
        guard.forget();
        drop(guard);
        assert!(parked.take_cancelled().is_empty());
        assert_eq!(
            parked.deliver(waiter.seq, Reply::Removed),
            Delivery::Gone(None)
        );
    }

    #[test]
    fn losing_the_lead_fails_earlier_waiters_and_the_next_adoption_drops_them() {
        let parked = Parked::new(3);
        assert_eq!(parked.adoption_due(1), Some(0));
        parked.adopted(1);
        assert_eq!(parked.adoption_due(1), None);
        let (early, _g1, mut early_rx) = parked.park(&obj());
        parked.abandon();
        // Its answer channel is closed: its caller fails now and retries elsewhere.
        assert!(early_rx.try_recv().is_err());
        assert_eq!(
            parked.deliver(early.seq, Reply::Removed),
            Delivery::Gone(None)
        );
        let (late, _g2, _late_rx) = parked.park(&obj());
        assert_eq!(parked.adoption_due(2), Some(late.seq));
        assert_eq!(
            parked.deliver(late.seq, Reply::Removed),
            Delivery::Delivered
        );
    }
}
