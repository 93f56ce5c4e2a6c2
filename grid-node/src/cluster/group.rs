//! A partition group as this node runs it: client operations go through the group's Raft
//! log (writes, locks) or a linearizable read (plain reads); answers to parked lock
//! waiters are delivered to the requests this node holds.
//!
//! ```text
//! execute(op) ─▶ client_write(now, Op) ─▶ every replica applies ─▶ Outcome
//!                                                                   ├─ reply ─▶ caller
//!                                                                   └─ answers ─▶ parked callers here
//! read(op)    ─▶ ensure_linearizable ─▶ peek the local state ─▶ caller (access batched as Touch)
//! maintain()  ─▶ (leader) AdoptWaiters on a new term, CancelWait, Touch, Tick when due,
//!                Evict when short of memory, outbox events to clients, AckEvents
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_proto::sync::lock;
use grid_proto::{GeoOp, Millis, ObjKey, Op, Reply, Unavailability};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use super::raft_types::{GroupCommand, GroupId, GroupRaft, GroupResponse, Member, NodeId};
use super::state_machine::{GroupSm, Machine};
use crate::clock::Clock;
use crate::events::EventHub;
use crate::partition::{Command, Outcome, WaiterId};

/// Longest a write may take to commit before it is reported as of unknown outcome.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// How much longer than its own wait a parked request waits for its answer.
const PARKED_SLACK: Duration = Duration::from_secs(5);
/// Longest a request waits for a leadership hand-over before it proceeds anyway.
const DRAIN_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// A partition group hosted on this node.
pub struct PartitionGroup {
    /// The partition number.
    pub id: GroupId,
    /// The group's Raft.
    pub raft: GroupRaft,
    sm: GroupSm,
    /// Value bytes held in the group's Raft log (until a snapshot lets it be purged).
    log_bytes: Arc<AtomicU64>,
    me: NodeId,
    clock: Arc<dyn Clock>,
    /// Parked requests of this node: waiter seq -> (object, answer channel).
    waiters: Mutex<HashMap<u64, (ObjKey, oneshot::Sender<Reply>)>>,
    /// Parked requests whose caller went away: waiter seq -> object, so a lock granted to
    /// one is released rather than held by nobody.
    cancelled: Mutex<HashMap<u64, ObjKey>>,
    next_waiter: AtomicU64,
    cancelled_tx: mpsc::UnboundedSender<WaiterId>,
    cancelled_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<WaiterId>>,
    touches: Mutex<Vec<(ObjKey, Millis)>>,
    /// Reads that asked for a leadership confirmation, numbered in arrival order.
    reads_arrived: AtomicU64,
    /// Every read numbered up to this is covered by a completed confirmation.
    reads_confirmed: AtomicU64,
    /// One confirmation in flight at a time; reads arriving meanwhile share the next.
    read_barrier: tokio::sync::Mutex<()>,
    /// The term in which this node last adopted the group's waiters as leader.
    adopted_term: AtomicU64,
    /// Waiter numbers below this were failed when this node last saw itself not leading;
    /// its next adoption drops them from the queue.
    failed_below: AtomicU64,
    /// True while the leader hands the group over: new requests wait, then go to the new
    /// leader (or proceed here if the hand-over did not happen).
    draining: watch::Sender<bool>,
    /// Proposals handed to Raft and not yet answered.
    in_flight: AtomicUsize,
    expired_total: AtomicU64,
    evicted_total: AtomicU64,
    /// Value bytes to evict at the next housekeeping, set by the memory check.
    evict_bytes: AtomicU64,
    /// Delivers this group's events while this node leads it.
    events: Arc<EventHub>,
}

impl std::fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("id", &self.id)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Counts a proposal out when it finishes, however it finishes.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a parked request's registration if its caller goes away, and asks the leader
/// to drop it from the queue.
struct WaitGuard<'a> {
    group: &'a PartitionGroup,
    seq: Option<u64>,
}

impl WaitGuard<'_> {
    /// The request was never parked: drop its registration, nothing to cancel.
    fn forget(&mut self) {
        if let Some(seq) = self.seq.take() {
            lock(&self.group.waiters).remove(&seq);
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            let removed = lock(&self.group.waiters).remove(&seq);
            if let Some((obj, _)) = removed {
                // A grant may still come for it; it is then released (see `settle`).
                lock(&self.group.cancelled).insert(seq, obj);
                let _ = self.group.cancelled_tx.send(WaiterId {
                    owner: self.group.me,
                    seq,
                });
            }
        }
    }
}

fn not_leader(leader: Option<&Member>) -> Reply {
    Reply::NotLeader {
        leader_hint: leader.map(|m| m.addr.clone()),
    }
}

/// A proposal that fails after it was handed to the log may still commit (a new leader
/// can finish it), so it is reported as of unknown outcome, never as "not run".
fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Reply {
    Reply::OutcomeUnknown {
        reason: match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                "leadership changed while the write was in flight".to_string()
            }
            other => other.to_string(),
        },
    }
}

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>) -> Reply {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            not_leader(f.leader_node.as_ref())
        }
        RaftError::Fatal(e) => Reply::Unavailable {
            code: Unavailability::ShuttingDown,
            reason: e.to_string(),
        },
        other => Reply::Unavailable {
            code: Unavailability::NoQuorum,
            reason: other.to_string(),
        },
    }
}

impl PartitionGroup {
    /// Wraps a started Raft group.
    pub fn new(
        id: GroupId,
        (raft, sm, log_bytes): (GroupRaft, GroupSm, Arc<AtomicU64>),
        me: NodeId,
        clock: Arc<dyn Clock>,
        events: Arc<EventHub>,
    ) -> Self {
        let (cancelled_tx, cancelled_rx) = mpsc::unbounded_channel();
        Self {
            id,
            raft,
            sm,
            log_bytes,
            me,
            clock,
            waiters: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            cancelled_tx,
            cancelled_rx: tokio::sync::Mutex::new(cancelled_rx),
            touches: Mutex::new(Vec::new()),
            reads_arrived: AtomicU64::new(0),
            reads_confirmed: AtomicU64::new(0),
            read_barrier: tokio::sync::Mutex::new(()),
            adopted_term: AtomicU64::new(0),
            failed_below: AtomicU64::new(0),
            draining: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            expired_total: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
            evict_bytes: AtomicU64::new(0),
            events,
        }
    }

    /// Value bytes held in the group's Raft log.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Compacts the log: a snapshot of the state machine (waited for, up to `limit`),
    /// then a purge of the entries it covers. Called when the log holds more value bytes
    /// than the node can spare; the entries a lagging follower still needs are replaced
    /// by that snapshot.
    pub async fn compact_log(&self, limit: Duration) {
        let applied = self.raft.metrics().borrow().last_applied;
        let _ = self.raft.trigger().snapshot().await;
        let mut metrics = self.raft.metrics();
        let built = tokio::time::timeout(limit, async {
            loop {
                let snapshot = metrics.borrow_and_update().snapshot;
                if snapshot.is_some() && snapshot >= applied {
                    return snapshot;
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        });
        if let Ok(Some(at)) = built.await {
            let _ = self.raft.trigger().purge_log(at.index).await;
        }
    }

    /// Asks the next housekeeping (as leader) to evict `bytes` of least recently used
    /// objects; replaces an earlier request not yet acted on.
    pub fn request_eviction(&self, bytes: u64) {
        self.evict_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Objects evicted for low memory while this node led the group.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total.load(Ordering::Relaxed)
    }

    /// Before this leader votes itself out of the group: refuse new proposals (as not
    /// run, so clients retry them at the next leader) and wait up to `limit` for those in
    /// flight, so none ends with an unknown outcome. Returns false if some are still out.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.draining.send_replace(true);
        let started = Instant::now();
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Holds a request while a hand-over is under way (bounded): afterwards it either runs
    /// here or is redirected, as not run, to the new leader.
    async fn wait_while_draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = tokio::time::timeout(DRAIN_WAIT_LIMIT, rx.wait_for(|draining| !*draining)).await;
    }

    /// Accepts proposals again (the hand-over is over, done or not).
    pub fn undrain(&self) {
        self.draining.send_replace(false);
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// True while this node leads the group.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Objects that expired while this node led the group.
    pub fn expired_total(&self) -> u64 {
        self.expired_total.load(Ordering::Relaxed)
    }

    /// Reads the partition state.
    pub fn with_partition<T>(
        &self,
        f: impl FnOnce(&crate::partition::Partition) -> T,
    ) -> Option<T> {
        match &self.sm.read().machine {
            Machine::Partition(p) => Some(f(p)),
            Machine::Control(_) => None,
        }
    }

    /// `NotLeader`, with the leader's address when known, unless this node leads.
    fn check_leader(&self) -> Result<(), Reply> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state == ServerState::Leader {
            return Ok(());
        }
        let leader = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).cloned());
        Err(not_leader(leader.as_ref()))
    }

    /// Proposes one command stamped with this node's clock and waits for its outcome.
    /// `NotLeader` means it did not run; `OutcomeUnknown` that it may have.
    async fn propose(&self, cmd: Command) -> Result<Outcome, Reply> {
        // Counted in flight before the drain flag is looked at, so a hand-over that starts
        // meanwhile either waits for this proposal or is seen by it.
        let _done = loop {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            let counted = InFlight(&self.in_flight);
            if !*self.draining.borrow() {
                break counted;
            }
            drop(counted);
            self.wait_while_draining().await;
        };
        self.check_leader()?;
        let entry = GroupCommand::Partition {
            now: self.clock.now(),
            cmd,
        };
        // A leader cut off from its followers does not step down by itself in openraft
        // 0.9; a write it cannot commit ends after a bound, its outcome unknown.
        match tokio::time::timeout(WRITE_LIMIT, self.raft.client_write(entry)).await {
            Ok(Ok(resp)) => match resp.data {
                GroupResponse::Partition(outcome) => Ok(outcome),
                other => Err(Reply::OutcomeUnknown {
                    reason: format!("unexpected group response {other:?}"),
                }),
            },
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(Reply::OutcomeUnknown {
                reason: format!("not committed within {WRITE_LIMIT:?} (no quorum?)"),
            }),
        }
    }

    /// Runs one validated operation on the partition.
    pub async fn execute(&self, op: Op) -> Reply {
        if let Op::Read {
            obj,
            cached_version,
        } = &op
        {
            return self.read(obj, *cached_version).await;
        }
        // A new leader first drops the old leaders' waiters, so no lock freed by this
        // operation goes to a waiter nobody answers.
        let term = self.raft.metrics().borrow().current_term;
        if let Err(reply) = self.adopt_waiters(term).await {
            // The operation itself did not run.
            return match reply {
                reply @ Reply::NotLeader { .. } => reply,
                other => Reply::Unavailable {
                    code: Unavailability::NoQuorum,
                    reason: format!("the new leader is still taking over: {other:?}"),
                },
            };
        }
        let mut guard = WaitGuard {
            group: self,
            seq: None,
        };
        let mut parked = None;
        let mut waiter = None;
        if let Op::ReadAndLock { obj, wait_ms, .. } = &op {
            if *wait_ms > 0 {
                let seq = self.next_waiter.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                lock(&self.waiters).insert(seq, (obj.clone(), tx));
                guard.seq = Some(seq);
                parked = Some(rx);
                waiter = Some(WaiterId {
                    owner: self.me,
                    seq,
                });
            }
        }
        let wait_limit = match &op {
            Op::ReadAndLock { wait_ms, .. } => Duration::from_millis(*wait_ms) + PARKED_SLACK,
            _ => PARKED_SLACK,
        };
        let outcome = match self.propose(Command::Op { op, waiter }).await {
            Ok(outcome) => outcome,
            Err(reply) => {
                if matches!(reply, Reply::NotLeader { .. }) {
                    // It did not run, so it was not parked: nothing to cancel.
                    guard.forget();
                }
                return reply;
            }
        };
        let reply = outcome.reply.clone();
        if reply.is_some() {
            // Answered at once, never parked.
            guard.forget();
        }
        self.settle(outcome).await;
        match (reply, parked) {
            (Some(reply), _) => reply,
            (None, Some(rx)) => {
                // Bounded: an answer owed by a leader that changed meanwhile never comes.
                let reply = match tokio::time::timeout(wait_limit, rx).await {
                    Ok(Ok(reply)) => {
                        guard.seq = None;
                        reply
                    }
                    _ => Reply::Unavailable {
                        code: Unavailability::LeaderChanged,
                        reason: "the lock wait was interrupted (leadership changed); retry".into(),
                    },
                };
                reply
            }
            (None, None) => Reply::Unavailable {
                code: Unavailability::Internal,
                reason: "parked without a waiter".into(),
            },
        }
    }

    /// Runs one migration step through the group's log.
    pub async fn execute_geo(&self, op: GeoOp) -> Reply {
        match self.propose(Command::Geo(op)).await {
            Ok(outcome) => {
                let reply = outcome.reply.clone();
                self.settle(outcome).await;
                reply.unwrap_or(Reply::Unavailable {
                    code: Unavailability::Internal,
                    reason: "migration step without an answer".into(),
                })
            }
            Err(reply) => reply,
        }
    }

    async fn read(&self, obj: &ObjKey, cached_version: Option<u64>) -> Reply {
        // A read confirms leadership with a heartbeat round, which would hold the
        // followers to this leader during a hand-over: wait for it to finish.
        self.wait_while_draining().await;
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        let now = self.clock.now();
        let reply = self
            .with_partition(|p| p.store().peek(obj, cached_version, now))
            .unwrap_or(Reply::NotFound);
        if !matches!(reply, Reply::NotFound) {
            lock(&self.touches).push((obj.clone(), now));
        }
        reply
    }

    /// Makes a read linearizable: confirms with a quorum that this node still leads and
    /// waits until the state machine has applied everything committed before. Concurrent
    /// reads share one confirmation, which serves every read that arrived before it
    /// started (a later confirmation is as good as one of its own).
    async fn confirm_leadership(&self) -> Result<(), Reply> {
        let ticket = self.reads_arrived.fetch_add(1, Ordering::AcqRel) + 1;
        let _one_at_a_time = self.read_barrier.lock().await;
        if self.reads_confirmed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let covers = self.reads_arrived.load(Ordering::Acquire);
        self.raft.ensure_linearizable().await.map_err(read_error)?;
        self.reads_confirmed.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    /// Delivers answers to this node's parked requests and counts expirations. A lock
    /// granted to a request that is gone is released again, so it passes on.
    async fn settle(&self, outcome: Outcome) {
        self.count_expired(&outcome);
        let mut answers = outcome.answers;
        while let Some((waiter, reply)) = answers.pop() {
            if waiter.owner != self.me {
                continue;
            }
            let grant = match &reply {
                Reply::Retrieved { info, .. } | Reply::NotModified { info } => Some(info.lock_id),
                _ => None,
            };
            let entry = lock(&self.waiters).remove(&waiter.seq);
            let (obj, delivered) = match entry {
                Some((obj, tx)) => {
                    let ok = tx.send(reply).is_ok();
                    (Some(obj), ok)
                }
                // Its caller went away after it was parked: release what it was given.
                None => (lock(&self.cancelled).remove(&waiter.seq), false),
            };
            if let (false, Some(Some(lock_id)), Some(obj)) = (delivered, grant, obj) {
                let unlock = Op::Unlock { obj, lock_id };
                if let Ok(outcome) = self
                    .propose(Command::Op {
                        op: unlock,
                        waiter: None,
                    })
                    .await
                {
                    self.count_expired(&outcome);
                    answers.extend(outcome.answers);
                }
            }
        }
    }

    fn count_expired(&self, outcome: &Outcome) {
        self.evicted_total
            .fetch_add(outcome.evicted, Ordering::Relaxed);
        for e in &outcome.expired {
            self.expired_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(partition = self.id, namespace = %e.obj.namespace, version = e.version, "object expired");
        }
    }

    /// Once per term as leader: forget the waiters of other nodes and this node's own
    /// from before it last lost the leadership. Idempotent, so racing callers are fine.
    async fn adopt_waiters(&self, term: u64) -> Result<(), Reply> {
        if self.adopted_term.load(Ordering::Relaxed) == term {
            return Ok(());
        }
        self.propose(Command::AdoptWaiters {
            owner: self.me,
            min_seq: self.failed_below.load(Ordering::Relaxed),
        })
        .await?;
        self.adopted_term.store(term, Ordering::Relaxed);
        Ok(())
    }

    /// Leader housekeeping, called often: adopt waiters in a new term, drop cancelled
    /// waits, record batched read accesses, and tick when something is due.
    pub async fn maintain(&self) {
        let (state, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term)
        };
        if state != ServerState::Leader {
            // Waits parked here are gone with the leadership (the next leader drops
            // them): their requests fail now, to be retried at the new leader, rather
            // than wait out their whole wait for an answer that cannot come. Their
            // cancellations have nothing left to do.
            // Only waiters numbered before the cut-off: one registered meanwhile (this
            // node leads again) is kept, and so is its place in the next adoption.
            let cutoff = self.next_waiter.load(Ordering::Relaxed);
            self.failed_below.fetch_max(cutoff, Ordering::Relaxed);
            lock(&self.waiters).retain(|seq, _| *seq >= cutoff);
            let mut rx = self.cancelled_rx.lock().await;
            while rx.try_recv().is_ok() {}
            lock(&self.cancelled).clear();
            self.events.forget_partition(self.id);
            self.evict_bytes.store(0, Ordering::Relaxed);
            return;
        }
        if self.adopt_waiters(term).await.is_err() {
            return;
        }
        // Reads' accesses first: a Tick must not expire an object read before it.
        let accesses = std::mem::take(&mut *lock(&self.touches));
        if !accesses.is_empty() {
            let _ = self.propose(Command::Touch { accesses }).await;
        }
        let now = self.clock.now();
        let due = self
            .with_partition(|p| p.next_deadline().is_some_and(|at| at <= now))
            .unwrap_or(false);
        if due {
            if let Ok(outcome) = self.propose(Command::Tick).await {
                self.settle(outcome).await;
            }
        }
        let cancelled: Vec<WaiterId> = {
            let mut rx = self.cancelled_rx.lock().await;
            std::iter::from_fn(|| rx.try_recv().ok()).collect()
        };
        for waiter in cancelled {
            if self.propose(Command::CancelWait { waiter }).await.is_ok() {
                // Out of the queue now: no grant can come for it any more.
                lock(&self.cancelled).remove(&waiter.seq);
            }
        }
        let bytes = self.evict_bytes.swap(0, Ordering::Relaxed);
        if bytes > 0 {
            if let Ok(outcome) = self.propose(Command::Evict { bytes }).await {
                self.settle(outcome).await;
            }
        }
        // Most rounds have no events: nothing to look at then.
        let pending = self
            .with_partition(|p| {
                let pending = !p.outbox().is_empty();
                if pending {
                    self.events.deliver(self.id, p.outbox());
                }
                pending
            })
            .unwrap_or(false);
        let seqs = if pending {
            self.events.acked(self.id)
        } else {
            Vec::new()
        };
        if !seqs.is_empty() {
            // On failure they stay acknowledged here and go again next round.
            let _ = self.propose(Command::AckEvents { seqs }).await;
        }
    }
}
