//! FIFO queues of requests waiting for an object's lock.
//!
//! A waiter is parked here when its read-and-lock finds the object locked. When the lock
//! frees, the runtime pops the first waiter and applies its read-and-lock on its behalf,
//! in the same step, so the lock passes straight to it: no polling, no barging by a newer
//! request. A waiter also has a wake-up time: the end of its wait, or earlier, the moment
//! the current lock becomes old enough for it to take over. [`LockQueue::pop_due`] hands
//! those back; the runtime retries them and re-parks the ones still waiting
//! ([`LockQueue::requeue`]), in their original place.
//!
//! Generic over the handle `H` that names a waiter (a [`crate::partition::WaiterId`] in the
//! node), so this stays pure and is tested without a runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use grid_proto::{Millis, ObjKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a waiter asked for, kept to replay its read-and-lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWait {
    /// Version the waiter already caches.
    pub cached_version: Option<u64>,
    /// Lease it asked for.
    pub lease_ms: Option<Millis>,
    /// Lock age at which it may take the lock over.
    pub take_over_after_ms: Option<Millis>,
    /// When it stops waiting and is told `Locked`.
    pub wait_until: Millis,
}

/// A parked request.
#[derive(Debug)]
pub struct Waiter<H> {
    /// Arrival order; the queue position.
    pub seq: u64,
    /// The object it waits for.
    pub obj: ObjKey,
    /// Its request.
    pub wait: LockWait,
    /// How to answer it.
    pub handle: H,
}

/// The object already has as many waiters as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{limit} requests already wait for this object's lock")]
pub struct QueueFull {
    /// The per-object limit.
    pub limit: usize,
}

/// Waiters of every object of one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockQueue<H> {
    per_object: HashMap<ObjKey, BTreeMap<u64, (LockWait, H)>>,
    /// `(wake_at, seq)` of every waiter, with its object, for `pop_due`.
    wakeups: BTreeSet<(Millis, u64, ObjKey)>,
    /// Each waiter's current wake-up time, to find it in `wakeups`.
    wake_of: HashMap<u64, Millis>,
    next_seq: u64,
    limit_per_object: usize,
}

impl<H> LockQueue<H> {
    /// A queue that holds at most `limit_per_object` waiters per object.
    pub fn new(limit_per_object: usize) -> Self {
        Self {
            per_object: HashMap::new(),
            wakeups: BTreeSet::new(),
            wake_of: HashMap::new(),
            next_seq: 0,
            limit_per_object,
        }
    }

    /// Parks a waiter at the back of `obj`'s queue; it wakes at `wake_at` (at the latest
    /// its `wait_until`).
    pub fn push(
        &mut self,
        obj: ObjKey,
        wait: LockWait,
        wake_at: Millis,
        handle: H,
    ) -> Result<u64, QueueFull> {
        let queue = self.per_object.entry(obj.clone()).or_default();
        if queue.len() >= self.limit_per_object {
            if queue.is_empty() {
                self.per_object.remove(&obj);
            }
            return Err(QueueFull {
                limit: self.limit_per_object,
            });
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        queue.insert(seq, (wait, handle));
        self.file_wakeup(seq, obj, wake_at.min(wait.wait_until));
        Ok(seq)
    }

    /// Puts a waiter taken out by [`Self::pop_due`] back in its original place.
    pub fn requeue(&mut self, waiter: Waiter<H>, wake_at: Millis) {
        let Waiter {
            seq,
            obj,
            wait,
            handle,
        } = waiter;
        self.per_object
            .entry(obj.clone())
            .or_default()
            .insert(seq, (wait, handle));
        self.file_wakeup(seq, obj, wake_at.min(wait.wait_until));
    }

    /// True if anyone waits for `obj`.
    pub fn has_waiters(&self, obj: &ObjKey) -> bool {
        self.per_object.contains_key(obj)
    }

    /// Number of waiters for `obj`.
    pub fn waiting_for(&self, obj: &ObjKey) -> usize {
        self.per_object.get(obj).map_or(0, BTreeMap::len)
    }

    /// Number of waiters in all.
    pub fn len(&self) -> usize {
        self.wake_of.len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.wake_of.is_empty()
    }

    /// Takes out the first waiter of `obj`, in arrival order.
    pub fn pop_front(&mut self, obj: &ObjKey) -> Option<Waiter<H>> {
        let queue = self.per_object.get_mut(obj)?;
        let (seq, (wait, handle)) = queue.pop_first()?;
        if queue.is_empty() {
            self.per_object.remove(obj);
        }
        self.unfile_wakeup(seq, obj);
        Some(Waiter {
            seq,
            obj: obj.clone(),
            wait,
            handle,
        })
    }

    /// Takes out the earliest waiter whose wake-up time is at or before `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Waiter<H>> {
        let (at, seq, obj) = self.wakeups.first()?.clone();
        if at > now {
            return None;
        }
        self.wakeups.pop_first();
        self.wake_of.remove(&seq);
        let queue = self.per_object.get_mut(&obj)?;
        let (wait, handle) = queue.remove(&seq)?;
        if queue.is_empty() {
            self.per_object.remove(&obj);
        }
        Some(Waiter {
            seq,
            obj,
            wait,
            handle,
        })
    }

    /// Removes every waiter whose handle fails `keep`; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&H) -> bool) -> usize {
        let mut gone = Vec::new();
        for (obj, queue) in &self.per_object {
            for (seq, (_, handle)) in queue {
                if !keep(handle) {
                    gone.push((obj.clone(), *seq));
                }
            }
        }
        for (obj, seq) in &gone {
            if let Some(queue) = self.per_object.get_mut(obj) {
                queue.remove(seq);
                if queue.is_empty() {
                    self.per_object.remove(obj);
                }
            }
            self.unfile_wakeup(*seq, obj);
        }
        gone.len()
    }

    /// The earliest wake-up time, if anyone waits.
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.wakeups.first().map(|(at, _, _)| *at)
    }

    fn file_wakeup(&mut self, seq: u64, obj: ObjKey, at: Millis) {
        self.wake_of.insert(seq, at);
        self.wakeups.insert((at, seq, obj));
    }

    fn unfile_wakeup(&mut self, seq: u64, obj: &ObjKey) {
        if let Some(at) = self.wake_of.remove(&seq) {
            self.wakeups.remove(&(at, seq, obj.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(until: Millis) -> LockWait {
        LockWait {
            cached_version: None,
            lease_ms: None,
            take_over_after_ms: None,
            wait_until: until,
        }
    }

    #[test]
    fn waiters_leave_in_arrival_order() {
        let obj = ObjKey::new("ns", "k");
        let mut q = LockQueue::new(10);
        for name in ["a", "b", "c"] {
            q.push(obj.clone(), wait(1000), 1000, name).unwrap();
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front(&obj).map(|w| w.handle)).collect();
        assert_eq!(order, vec!["a", "b", "c"]);
        assert!(q.is_empty());
        assert!(!q.has_waiters(&obj));
        assert_eq!(q.pop_due(u64::MAX).map(|w| w.handle), None);
    }

    #[test]
    fn due_waiters_come_out_by_wakeup_and_requeue_keeps_their_place() {
        let obj = ObjKey::new("ns", "k");
        let mut q = LockQueue::new(10);
        q.push(obj.clone(), wait(500), 500, "first").unwrap();
        // Wakes early to try a take-over at 200.
        q.push(obj.clone(), wait(900), 200, "second").unwrap();
        assert_eq!(q.next_wakeup(), Some(200));
        assert!(q.pop_due(199).is_none());
        let w = q.pop_due(200).unwrap();
        assert_eq!(w.handle, "second");
        q.requeue(w, 400);
        // Still behind "first".
        assert_eq!(q.pop_front(&obj).unwrap().handle, "first");
        assert_eq!(q.next_wakeup(), Some(400));
        assert_eq!(q.pop_due(1000).unwrap().handle, "second");
        assert!(q.is_empty());
    }

    #[test]
    fn wakeup_never_passes_the_end_of_the_wait() {
        let obj = ObjKey::new("ns", "k");
        let mut q = LockQueue::new(10);
        q.push(obj, wait(300), 10_000, ()).unwrap();
        assert_eq!(q.next_wakeup(), Some(300));
    }

    #[test]
    fn per_object_limit_is_enforced() {
        let obj = ObjKey::new("ns", "k");
        let mut q = LockQueue::new(2);
        q.push(obj.clone(), wait(1), 1, ()).unwrap();
        q.push(obj.clone(), wait(1), 1, ()).unwrap();
        assert_eq!(
            q.push(obj.clone(), wait(1), 1, ()),
            Err(QueueFull { limit: 2 })
        );
        // Other objects are unaffected.
        assert!(q.push(ObjKey::new("ns", "other"), wait(1), 1, ()).is_ok());
        assert_eq!(q.waiting_for(&obj), 2);
        assert_eq!(q.len(), 3);
    }
}
