//! One partition's replicated state: the [`Store`] plus the FIFO queues of requests waiting
//! for locks. Pure and deterministic: every replica applies the same [`Command`]s with the
//! same `now` (the leader's clock, carried in the log) and reaches the same state, so a
//! lock passes to the next waiter inside the apply that releases it, on every replica
//! alike, with no second round trip and no chance for a newer request to barge in.
//!
//! A waiter is named by a [`WaiterId`]: the node that holds the client's request and a
//! sequence number there. Answers to waiters come out in [`Outcome::answers`]; only the
//! node that owns a waiter acts on them. A new leader drops the waiters of other nodes
//! ([`Command::AdoptWaiters`]): their requests failed with the old leader and are retried.
//!
//! ```text
//! apply(Op, waiter) ─▶ store.apply ─▶ reply ──────────────────────▶ Outcome.reply
//!                           │   └─ Locked + wait ─▶ queue (reply = None, answered later)
//!                           └─ LockFreed ─▶ first waiter's read-and-lock ─▶ Outcome.answers
//! apply(Tick) ─▶ expiry and lease ends; waiters whose wait ended or may take over
//!                  └─ Expired / Evicted ─▶ outbox (until a client acks: AckEvents)
//! ```

use std::collections::VecDeque;

use grid_proto::{EventCause, GeoOp, Millis, ObjKey, Op, Reply};
use serde::{Deserialize, Serialize};

use crate::format::{FormatError, PARTITION_SNAPSHOT, PARTITION_SNAPSHOT_V1};

mod log_format;
use crate::outbox::{Outbox, PendingEvent};
use crate::store::{LockQueue, LockWait, Store, StoreConfig, StoreEvent, StoreStats};

/// A node's identity in the cluster.
pub type NodeId = u64;

/// Names a parked read-and-lock: the node holding the client's request, and a number
/// unique on that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WaiterId {
    /// The node that answers it.
    pub owner: NodeId,
    /// Unique on that node.
    pub seq: u64,
}

/// An input of the partition state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client operation. A read-and-lock that must wait is parked under `waiter`.
    Op {
        /// The operation, in the log's own encoding.
        #[serde(with = "log_format::op")]
        op: Op,
        /// Where a later answer goes, if it waits.
        waiter: Option<WaiterId>,
    },
    /// Expire due objects and leases; answer waiters whose wait ended or who may take over.
    Tick,
    /// Accesses seen by lock-free reads, batched, for sliding expiry.
    Touch {
        /// Objects read, each with the leader's clock at the read.
        accesses: Vec<(ObjKey, Millis)>,
    },
    /// The waiter's request went away (its connection closed).
    CancelWait {
        /// The waiter.
        waiter: WaiterId,
    },
    /// A new leader: forget the waiters of every other node, and its own from before
    /// `min_seq` (whose requests it failed when it last lost the leadership).
    AdoptWaiters {
        /// The new leader.
        owner: NodeId,
        /// Its waiters numbered below this are gone.
        min_seq: u64,
    },
    /// Registered clients acknowledged these events: forget them.
    AckEvents {
        /// Event numbers in this partition.
        seqs: Vec<u64>,
    },
    /// The node is short of memory: evict least recently used objects worth `bytes`.
    Evict {
        /// Value bytes to free.
        bytes: u64,
    },
    /// A step of a migration between sites, in the log's own encoding.
    Geo(#[serde(with = "log_format::geo_op")] GeoOp),
}

impl Command {
    /// The value bytes the command carries (what its log entry holds beyond a few
    /// fixed fields).
    pub fn value_bytes(&self) -> usize {
        match self {
            Command::Op { op, .. } => op.value_len(),
            Command::Geo(grid_proto::GeoOp::Import { value, .. }) => value.len(),
            _ => 0,
        }
    }
}

/// An object that expired, for counters and logs (its bytes go to the outbox, for
/// `Session_End`-style delivery, not here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiration {
    /// The object.
    pub obj: ObjKey,
    /// Its final version.
    pub version: u64,
}

/// What applying one command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The answer to the command's own request; `None` when it was parked to wait.
    pub reply: Option<Reply>,
    /// Answers to requests parked earlier.
    pub answers: Vec<(WaiterId, Reply)>,
    /// Objects that expired.
    pub expired: Vec<Expiration>,
    /// Objects evicted for low memory.
    pub evicted: u64,
}

/// Settings of a partition; identical on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A partition's objects and lock waiters.
#[derive(Debug, Clone)]
pub struct Partition {
    store: Store,
    waiters: LockQueue<WaiterId>,
    outbox: Outbox,
}

/// True for the replies that grant a lock.
pub fn is_lock_grant(reply: &Reply) -> bool {
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
            outbox: Outbox::default(),
        }
    }

    /// Events waiting for a registered client's acknowledgement.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Value bytes held beyond the store: the final bytes of events owed to clients.
    pub fn outbox_bytes(&self) -> u64 {
        self.outbox.value_bytes()
    }

    /// Store counters.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Requests waiting for locks.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The store, for lock-free reads on the leader.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The earliest time a [`Command::Tick`] has work.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.store.next_deadline(),
            self.waiters.next_wakeup(),
            self.outbox.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Applies one command at `now`.
    pub fn apply(&mut self, command: &Command, now: Millis) -> Outcome {
        let mut out = Outcome::default();
        match command {
            Command::Op { op, waiter } => {
                out.reply = self.execute(op, *waiter, now, &mut out);
            }
            Command::Tick => self.tick(now, &mut out),
            Command::Touch { accesses } => {
                for (obj, at) in accesses {
                    self.store.touch_existing(obj, (*at).min(now));
                }
            }
            Command::CancelWait { waiter } => {
                self.waiters.retain(|w| w != waiter);
            }
            Command::AdoptWaiters { owner, min_seq } => {
                self.waiters
                    .retain(|w| w.owner == *owner && w.seq >= *min_seq);
            }
            Command::AckEvents { seqs } => self.outbox.ack(seqs),
            Command::Evict { bytes } => {
                let events = self.store.evict(*bytes);
                self.process(events, now, &mut out);
            }
            Command::Geo(op) => {
                let (reply, events) = self.store.apply_geo(op, now);
                self.process(events, now, &mut out);
                out.reply = Some(reply);
            }
        }
        out
    }

    fn execute(
        &mut self,
        op: &Op,
        waiter: Option<WaiterId>,
        now: Millis,
        out: &mut Outcome,
    ) -> Option<Reply> {
        if let Op::ReadAndLock { obj, .. } = op {
            if self.waiters.has_waiters(obj) {
                // Earlier waiters go first: settle the object (a lapsed lease hands the lock
                // to them), and if it is still held, wait behind them or answer Locked.
                let events = self.store.settle_object(obj, now);
                self.process(events, now, out);
                if self.waiters.has_waiters(obj) {
                    if let Some((lock_id, lock_age_ms)) = self.store.lock_of(obj, now) {
                        // It found the object: an access, as `store.apply` would count it.
                        self.store.touch_existing(obj, now);
                        return self.park_or_locked(op, waiter, lock_id, lock_age_ms, now);
                    }
                }
            }
        }
        let applied = self.store.apply(op, now);
        self.process(applied.events, now, out);
        match applied.reply {
            Reply::Locked {
                lock_id,
                lock_age_ms,
            } if matches!(op, Op::ReadAndLock { .. }) => {
                self.park_or_locked(op, waiter, lock_id, lock_age_ms, now)
            }
            reply => Some(reply),
        }
    }

    /// Parks a read-and-lock that may wait; answers `Locked` to one that may not.
    fn park_or_locked(
        &mut self,
        op: &Op,
        waiter: Option<WaiterId>,
        lock_id: u64,
        lock_age_ms: Millis,
        now: Millis,
    ) -> Option<Reply> {
        let locked = Reply::Locked {
            lock_id,
            lock_age_ms,
        };
        let (
            Op::ReadAndLock {
                obj,
                cached_version,
                lease_ms,
                wait_ms,
                take_over_after_ms,
            },
            Some(waiter),
        ) = (op, waiter)
        else {
            return Some(locked);
        };
        if *wait_ms == 0 {
            return Some(locked);
        }
        let wait = LockWait {
            cached_version: *cached_version,
            lease_ms: *lease_ms,
            take_over_after_ms: *take_over_after_ms,
            wait_until: now.saturating_add(*wait_ms),
        };
        match self
            .waiters
            .push(obj.clone(), wait, wake_at(&wait, lock_age_ms, now), waiter)
        {
            Ok(_) => None,
            Err(full) => Some(Reply::Unavailable {
                code: grid_proto::Unavailability::Busy,
                reason: full.to_string(),
            }),
        }
    }

    fn tick(&mut self, now: Millis, out: &mut Outcome) {
        self.outbox.expire(now);
        let events = self.store.tick(now);
        self.process(events, now, out);
        while let Some(waiter) = self.waiters.pop_due(now) {
            let applied = self.store.apply(&lock_op(&waiter.obj, &waiter.wait), now);
            self.process(applied.events, now, out);
            match applied.reply {
                Reply::Locked { lock_age_ms, .. } if now < waiter.wait.wait_until => {
                    let at = wake_at(&waiter.wait, lock_age_ms, now);
                    self.waiters.requeue(waiter, at);
                }
                reply => out.answers.push((waiter.handle, reply)),
            }
        }
    }

    /// Acts on store events: collects expirations and hands freed locks to the first
    /// waiter, until no more events come.
    fn process(&mut self, events: Vec<StoreEvent>, now: Millis, out: &mut Outcome) {
        let mut pending = VecDeque::from(events);
        while let Some(event) = pending.pop_front() {
            match event {
                StoreEvent::Expired {
                    obj,
                    value,
                    version,
                } => {
                    out.expired.push(Expiration {
                        obj: obj.clone(),
                        version,
                    });
                    self.outbox.push(PendingEvent {
                        cause: EventCause::Expired,
                        obj,
                        value,
                        version,
                        at: now,
                    });
                }
                StoreEvent::Revoked {
                    obj,
                    value,
                    version,
                } => {
                    self.outbox.push(PendingEvent {
                        cause: EventCause::Revoked,
                        obj,
                        value,
                        version,
                        at: now,
                    });
                }
                StoreEvent::Evicted {
                    obj,
                    value,
                    version,
                } => {
                    // The event names the object and its version but not its bytes: they
                    // are what had to go, and an outbox holding them would keep the node
                    // past its memory limit.
                    drop(value);
                    self.outbox.push(PendingEvent {
                        cause: EventCause::LowMemory,
                        obj,
                        value: Vec::new(),
                        version,
                        at: now,
                    });
                    out.evicted += 1;
                }
                StoreEvent::LockFreed { obj } => {
                    while let Some(waiter) = self.waiters.pop_front(&obj) {
                        let applied = self.store.apply(&lock_op(&obj, &waiter.wait), now);
                        pending.extend(applied.events);
                        if let Reply::Locked { lock_age_ms, .. } = applied.reply {
                            // Held again already; keep the waiter's place.
                            let at = wake_at(&waiter.wait, lock_age_ms, now);
                            self.waiters.requeue(waiter, at);
                            break;
                        }
                        let granted = is_lock_grant(&applied.reply);
                        out.answers.push((waiter.handle, applied.reply));
                        if granted {
                            break;
                        }
                        // NotFound and the like: the next waiter is told too.
                    }
                }
            }
        }
    }

    /// Serializes the partition (objects, locks, waiters, pending events).
    pub fn snapshot(&self) -> Vec<u8> {
        PARTITION_SNAPSHOT.encode(&(self.store.snapshot(), &self.waiters, &self.outbox))
    }

    /// Rebuilds a partition from [`Partition::snapshot`] bytes.
    pub fn restore(config: PartitionConfig, bytes: &[u8]) -> Result<Self, FormatError> {
        // Version 1 is the same encoding without revocation events.
        let format = match PARTITION_SNAPSHOT.version_of(bytes)? {
            1 => PARTITION_SNAPSHOT_V1,
            _ => PARTITION_SNAPSHOT,
        };
        let (store, waiters, outbox): (Vec<u8>, LockQueue<WaiterId>, Outbox) =
            format.decode(bytes)?;
        Ok(Self {
            store: Store::restore(config.store, &store)?,
            waiters,
            outbox,
        })
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "partition_events_tests.rs"]
mod events_tests;
