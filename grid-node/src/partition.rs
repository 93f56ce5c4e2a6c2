//! One partition as its leader runs it: the replicated [`Store`] plus the leader-local
//! [`LockQueue`]. Still synchronous and clock-driven; the node wraps it in a mutex and
//! the connection tasks await the channels it hands back.
//!
//! ```text
//! execute(op, now) ─▶ store.apply ─▶ reply ─────────────────────────▶ Ready(reply)
//!                            │  └─ Locked + wait ─▶ queue.push ───────▶ Wait(rx)
//!                            └─ LockFreed ─▶ hand_off: apply the first waiter's
//!                                            read-and-lock, answer it on its channel
//! tick(now) ─▶ store.tick (expiry, lease ends) + due waiters (wait over, or take-over)
//! ```

use std::collections::VecDeque;

use grid_proto::{Millis, ObjKey, Op, Reply};
use tokio::sync::oneshot;

use crate::store::{LockQueue, LockWait, Store, StoreConfig, StoreEvent, StoreStats};

/// An expired object, for `Session_End`-style delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    /// The object.
    pub obj: ObjKey,
    /// Its final bytes.
    pub value: Vec<u8>,
    /// Its final version.
    pub version: u64,
}

/// How an operation's reply arrives.
#[derive(Debug)]
pub enum Execution {
    /// The reply is ready now.
    Ready(Reply),
    /// The request waits in the object's lock queue; the reply comes on this channel.
    Waiting(oneshot::Receiver<Reply>),
}

/// Settings of the partition runtime.
#[derive(Debug, Clone, Copy)]
pub struct PartitionConfig {
    /// State-machine settings.
    pub store: StoreConfig,
    /// Most requests that may wait for one object's lock.
    pub max_waiters_per_object: usize,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            store: StoreConfig::default(),
            max_waiters_per_object: 1024,
        }
    }
}

type Handle = oneshot::Sender<Reply>;

/// A partition's store and lock waiters.
#[derive(Debug)]
pub struct Partition {
    store: Store,
    waiters: LockQueue<Handle>,
}

fn is_lock_grant(reply: &Reply) -> bool {
    matches!(reply, Reply::Retrieved { .. } | Reply::NotModified { .. })
}

fn lock_op(obj: &ObjKey, wait: &LockWait) -> Op {
    Op::ReadAndLock {
        obj: obj.clone(),
        cached_version: wait.cached_version,
        lease_ms: wait.lease_ms,
        wait_ms: 0,
        take_over_after_ms: wait.take_over_after_ms,
    }
}

/// When a waiter should next look: when the current lock becomes old enough to take over,
/// or at the end of its wait.
fn wake_at(wait: &LockWait, lock_age_ms: Millis, now: Millis) -> Millis {
    match wait.take_over_after_ms {
        Some(limit) => now
            .saturating_add(limit.saturating_sub(lock_age_ms))
            .min(wait.wait_until),
        None => wait.wait_until,
    }
}

impl Partition {
    /// An empty partition.
    pub fn new(config: PartitionConfig) -> Self {
        Self {
            store: Store::new(config.store),
            waiters: LockQueue::new(config.max_waiters_per_object),
        }
    }

    /// Store counters.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Requests waiting for locks.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Runs one validated operation at `now`. Expirations it caused are appended to
    /// `expired`.
    pub fn execute(&mut self, op: &Op, now: Millis, expired: &mut Vec<Expiration>) -> Execution {
        if let Op::ReadAndLock { obj, wait_ms, .. } = op {
            if self.waiters.has_waiters(obj) {
                // Earlier waiters go first: settle the object (a lapsed lease hands the
                // lock to them), and join the back of the queue if it is still held. This
                // holds for a request that will not wait too, or it would take a lapsed
                // lock from under the queue.
                let events = self.store.settle_object(obj, now);
                self.process(events, now, expired);
                if *wait_ms > 0 && self.waiters.has_waiters(obj) {
                    if let Some((_, age)) = self.store.lock_of(obj, now) {
                        return self.park(op, age, now);
                    }
                }
            }
        }
        let applied = self.store.apply(op, now);
        self.process(applied.events, now, expired);
        match (&applied.reply, op) {
            (Reply::Locked { lock_age_ms, .. }, Op::ReadAndLock { wait_ms, .. })
                if *wait_ms > 0 =>
            {
                self.park(op, *lock_age_ms, now)
            }
            _ => Execution::Ready(applied.reply),
        }
    }

    /// Expires due objects and leases, and retries waiters whose wait ended or whose
    /// take-over time came. Returns the expirations.
    pub fn tick(&mut self, now: Millis) -> Vec<Expiration> {
        let mut expired = Vec::new();
        let events = self.store.tick(now);
        self.process(events, now, &mut expired);
        while let Some(waiter) = self.waiters.pop_due(now) {
            if waiter.handle.is_closed() {
                continue;
            }
            let applied = self.store.apply(&lock_op(&waiter.obj, &waiter.wait), now);
            self.process(applied.events, now, &mut expired);
            match applied.reply {
                Reply::Locked { lock_age_ms, .. } if now < waiter.wait.wait_until => {
                    let at = wake_at(&waiter.wait, lock_age_ms, now);
                    self.waiters.requeue(waiter, at);
                }
                reply => {
                    let events = self.deliver(&waiter.obj, waiter.handle, reply, now);
                    self.process(events, now, &mut expired);
                }
            }
        }
        expired
    }

    /// The earliest time `tick` has work.
    pub fn next_deadline(&self) -> Option<Millis> {
        match (self.store.next_deadline(), self.waiters.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn park(&mut self, op: &Op, lock_age_ms: Millis, now: Millis) -> Execution {
        let Op::ReadAndLock {
            obj,
            cached_version,
            lease_ms,
            wait_ms,
            take_over_after_ms,
        } = op
        else {
            unreachable!("only read-and-lock waits")
        };
        let wait = LockWait {
            cached_version: *cached_version,
            lease_ms: *lease_ms,
            take_over_after_ms: *take_over_after_ms,
            wait_until: now.saturating_add(*wait_ms),
        };
        let (tx, rx) = oneshot::channel();
        let at = wake_at(&wait, lock_age_ms, now);
        match self.waiters.push(obj.clone(), wait, at, tx) {
            Ok(_) => Execution::Waiting(rx),
            Err(full) => Execution::Ready(Reply::Unavailable {
                reason: full.to_string(),
            }),
        }
    }

    /// Sends a waiter its reply. A lock granted to a waiter that has gone away is released
    /// again; the events of that release are returned so the lock passes on.
    fn deliver(
        &mut self,
        obj: &ObjKey,
        handle: Handle,
        reply: Reply,
        now: Millis,
    ) -> Vec<StoreEvent> {
        let granted = is_lock_grant(&reply);
        if handle.send(reply).is_ok() || !granted {
            return Vec::new();
        }
        match self.store.lock_of(obj, now) {
            Some((lock_id, _)) => {
                let unlock = Op::Unlock {
                    obj: obj.clone(),
                    lock_id,
                };
                self.store.apply(&unlock, now).events
            }
            None => Vec::new(),
        }
    }

    /// Acts on store events: collects expirations and hands freed locks on, until no
    /// more events come.
    fn process(&mut self, events: Vec<StoreEvent>, now: Millis, expired: &mut Vec<Expiration>) {
        let mut pending = VecDeque::from(events);
        while let Some(event) = pending.pop_front() {
            match event {
                StoreEvent::Expired {
                    obj,
                    value,
                    version,
                } => expired.push(Expiration {
                    obj,
                    value,
                    version,
                }),
                StoreEvent::LockFreed { obj } => {
                    while let Some(waiter) = self.waiters.pop_front(&obj) {
                        if waiter.handle.is_closed() {
                            continue;
                        }
                        let applied = self.store.apply(&lock_op(&obj, &waiter.wait), now);
                        pending.extend(applied.events);
                        let granted = is_lock_grant(&applied.reply);
                        if let Reply::Locked { lock_age_ms, .. } = applied.reply {
                            // Someone holds it again; keep the waiter's place.
                            let at = wake_at(&waiter.wait, lock_age_ms, now);
                            self.waiters.requeue(waiter, at);
                            break;
                        }
                        pending.extend(self.deliver(&obj, waiter.handle, applied.reply, now));
                        if granted {
                            // Delivered, or released again for the next waiter.
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
