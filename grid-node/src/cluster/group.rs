//! A partition group as this node runs it: client operations go through the group's Raft
//! log (writes, locks) or a linearizable read (plain reads); answers to parked lock
//! waiters are delivered to the requests this node holds.
//!
//! ```text
//! execute(op) ─▶ client_write(now, Op) ─▶ every replica applies ─▶ Outcome
//!                                                                   ├─ reply ─▶ caller
//!                                                                   └─ answers ─▶ parked callers here
//! read(op)    ─▶ ensure_linearizable (shared by concurrent reads) ─▶ peek the local state
//!                ─▶ caller (the access recorded later, batched as Touch)
//! housekeeping_due() ─▶ housekeeping::chores(what is waiting); a follower abandons the
//!                requests parked here; nothing to do ⇒ no task
//!   └─ run_housekeeping(due) ─▶ AdoptWaiters on a new term, Touch, Tick when due,
//!                CancelWait, Evict when short of memory, events to clients and AckEvents
//! ```
//!
//! Parts: `parked` (requests parked here), `reads` (shared read confirmations), `drain`
//! (the hand-over gate), `housekeeping` (the leader's chores, planned).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::sync::lock;
use grid_proto::{GeoOp, Millis, ObjKey, Op, Reply, Unavailability};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;

use super::raft_types::{GroupCommand, GroupId, GroupRaft, GroupResponse, Member, NodeId};
use super::state_machine::{GroupSm, Machine};
use crate::clock::Clock;
use crate::events::EventHub;
use crate::partition::{Command, Outcome};

mod drain;
mod housekeeping;
mod parked;
mod reads;

use drain::DrainGate;
use housekeeping::{chores, Chore, Waiting, TOUCH_EVERY_MS};

/// What one round of a group's housekeeping has to propose, and what it took from the
/// group to do so (from [`PartitionGroup::housekeeping_due`]).
#[derive(Debug)]
pub struct Due {
    term: u64,
    chores: Vec<Chore>,
    cancelled: Vec<crate::partition::WaiterId>,
    accesses: Vec<(ObjKey, Millis)>,
}
use parked::{Delivery, Parked, WaitGuard};
pub(crate) use reads::lease_for;
use reads::ReadConfirmations;

/// Longest a write may take to commit before it is reported as of unknown outcome.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// How much longer than its own wait a parked request waits for its answer.
const PARKED_SLACK: Duration = Duration::from_secs(5);

/// A partition group hosted on this node. Its parts, one concern each: the requests
/// parked here ([`Parked`]), shared read confirmations ([`ReadConfirmations`]), the
/// hand-over gate ([`DrainGate`]), and the leader's housekeeping (`housekeeping`).
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
    parked: Parked,
    reads: ReadConfirmations,
    gate: DrainGate,
    /// Reads served since accesses were last recorded: the latest per object.
    touches: Mutex<HashMap<ObjKey, Millis>>,
    /// When accesses were last proposed (by the node's clock).
    touched_at: AtomicU64,
    expired_total: AtomicU64,
    evicted_total: AtomicU64,
    /// Value bytes to evict at the next housekeeping, set by the memory check.
    evict_bytes: AtomicU64,
    /// Delivers this group's events while this node leads it.
    events: Arc<EventHub>,
    /// When this replica last received an append or heartbeat (from any leader).
    last_append: Mutex<Option<tokio::time::Instant>>,
    /// The highest term a candidate asked this replica's vote in.
    vote_term_seen: AtomicU64,
}

impl std::fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("id", &self.id)
            .field("me", &self.me)
            .finish_non_exhaustive()
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
        read_lease: Duration,
    ) -> Self {
        Self {
            id,
            raft,
            sm,
            log_bytes,
            me,
            clock,
            parked: Parked::new(me),
            reads: ReadConfirmations::new(read_lease),
            gate: DrainGate::default(),
            touches: Mutex::new(HashMap::new()),
            touched_at: AtomicU64::new(0),
            expired_total: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
            evict_bytes: AtomicU64::new(0),
            events,
            last_append: Mutex::new(None),
            vote_term_seen: AtomicU64::new(0),
        }
    }

    /// Records that an append or heartbeat for this replica arrived now.
    pub fn append_heard(&self) {
        *lock(&self.last_append) = Some(tokio::time::Instant::now());
    }

    /// True if an append or heartbeat arrived within `period`: a leader that reached
    /// this replica then may still count on its acknowledgement for its lease.
    pub fn heard_within(&self, period: Duration) -> bool {
        lock(&self.last_append).is_some_and(|at| at.elapsed() < period)
    }

    /// Records that a candidate asked this replica's vote in `term`.
    pub fn vote_asked(&self, term: u64) {
        self.vote_term_seen.fetch_max(term, Ordering::Relaxed);
    }

    /// The highest term a candidate asked this replica's vote in (0: none).
    pub fn vote_term_seen(&self) -> u64 {
        self.vote_term_seen.load(Ordering::Relaxed)
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

    /// Before this leader votes itself out of the group or hands it over: refuse new
    /// proposals (as not run, so clients retry them at the next leader) and wait up to
    /// `limit` for those in flight, so none ends with an unknown outcome. Returns false if
    /// some are still out.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.gate.drain(limit).await
    }

    /// Accepts proposals again (the hand-over is over, done or not).
    pub fn undrain(&self) {
        self.gate.undrain();
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
        let _pass = self.gate.enter().await;
        self.check_leader()?;
        let entry = GroupCommand::Partition {
            now: self.clock.now(),
            cmd: Arc::new(cmd),
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
        // A read-and-lock that may wait is registered before it is proposed: the apply
        // may park it and a later one answer it.
        let mut parked = None;
        let mut waiter = None;
        if let Op::ReadAndLock { obj, wait_ms, .. } = &op {
            if *wait_ms > 0 {
                let (id, guard, rx) = self.parked.park(obj);
                waiter = Some(id);
                parked = Some((guard, rx));
            }
        }
        let forget = |parked: &mut Option<(WaitGuard<'_>, _)>| {
            if let Some((guard, _)) = parked {
                guard.forget();
            }
        };
        let wait_limit = match &op {
            Op::ReadAndLock { wait_ms, .. } => Duration::from_millis(*wait_ms) + PARKED_SLACK,
            _ => PARKED_SLACK,
        };
        let outcome = match self.propose(Command::Op { op, waiter }).await {
            Ok(outcome) => outcome,
            Err(reply) => {
                if matches!(reply, Reply::NotLeader { .. }) {
                    // It did not run, so it was not parked: nothing to cancel.
                    forget(&mut parked);
                }
                return reply;
            }
        };
        let reply = outcome.reply.clone();
        if reply.is_some() {
            // Answered at once, never parked.
            forget(&mut parked);
        }
        self.settle(outcome).await;
        match (reply, parked) {
            (Some(reply), _) => reply,
            (None, Some((mut guard, rx))) => {
                // Bounded: an answer owed by a leader that changed meanwhile never comes.
                match tokio::time::timeout(wait_limit, rx).await {
                    Ok(Ok(reply)) => {
                        guard.answered();
                        reply
                    }
                    _ => Reply::Unavailable {
                        code: Unavailability::LeaderChanged,
                        reason: "the lock wait was interrupted (leadership changed); retry".into(),
                    },
                }
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
        self.gate.wait_while_draining().await;
        let (leading, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader, m.current_term)
        };
        if !(leading && self.reads.leased(term)) {
            let confirm = || async { self.raft.ensure_linearizable().await.map(drop) };
            if let Err(e) = self.reads.confirm(term, confirm).await {
                return read_error(e);
            }
        }
        let now = self.clock.now();
        let reply = self
            .with_partition(|p| p.store().peek(obj, cached_version, now))
            .unwrap_or(Reply::NotFound);
        if !matches!(reply, Reply::NotFound) {
            let mut touches = lock(&self.touches);
            match touches.get_mut(obj) {
                Some(at) => *at = (*at).max(now),
                None => {
                    touches.insert(obj.clone(), now);
                }
            }
        }
        reply
    }

    /// A copy of the partition's objects for a backup, as of a linearizable point: the
    /// leader confirms it still leads (a heartbeat round, never the lease) after the
    /// entries it has applied, then copies under the state's read lock (writes to this
    /// partition wait for the copy, the others do not).
    pub async fn export(&self) -> Result<Vec<grid_proto::backup::BackupObject>, Reply> {
        self.read_linearizable(|store, now| store.backup(now)).await
    }

    /// A page of the keys in `namespace` carrying `tag`, as of a linearizable point (as
    /// [`PartitionGroup::export`]); see [`crate::store::Store::tagged`].
    pub async fn find_tag(
        &self,
        namespace: &str,
        tag: &str,
        after: Option<&[u8]>,
        budget: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), Reply> {
        self.read_linearizable(|store, now| store.tagged(namespace, tag, now, after, budget))
            .await
    }

    /// `read` of the partition's store once the leader has confirmed it still leads
    /// after the entries it applied.
    async fn read_linearizable<T>(
        &self,
        read: impl FnOnce(&crate::store::Store, Millis) -> T,
    ) -> Result<T, Reply> {
        self.gate.wait_while_draining().await;
        self.raft.ensure_linearizable().await.map_err(read_error)?;
        let now = self.clock.now();
        self.with_partition(|p| read(p.store(), now))
            .ok_or_else(|| Reply::Unavailable {
                code: Unavailability::Internal,
                reason: "not a partition group".into(),
            })
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
            // Its caller went away after it was parked: release what it was given.
            let gone = match self.parked.deliver(waiter.seq, reply) {
                Delivery::Delivered => None,
                Delivery::Gone(obj) => obj,
            };
            if let (Some(Some(lock_id)), Some(obj)) = (grant, gone) {
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
        let Some(min_seq) = self.parked.adoption_due(term) else {
            return Ok(());
        };
        self.adopt(term, min_seq).await
    }

    async fn adopt(&self, term: u64, min_seq: u64) -> Result<(), Reply> {
        self.propose(Command::AdoptWaiters {
            owner: self.me,
            min_seq,
        })
        .await?;
        self.parked.adopted(term);
        Ok(())
    }

    /// Leader housekeeping, called often, first half: what [`housekeeping::chores`] plans
    /// from what is waiting, with what it needs taken from the group; `None` when there
    /// is nothing to propose, so an idle group costs a look and no task. A group this
    /// node does not lead abandons its parked requests here and now.
    pub fn housekeeping_due(&self) -> Option<Due> {
        let (state, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term)
        };
        let leading = state == ServerState::Leader;
        let now = leading.then(|| self.clock.now());
        let cancelled = self.parked.take_cancelled();
        // One look at the state for both, and only by the leader (the only one to act on
        // them): this runs every tick for every group.
        let (deadline_due, events) = now
            .and_then(|now| {
                self.with_partition(|p| {
                    let due = p.next_deadline().is_some_and(|at| at <= now);
                    (due, !p.outbox().is_empty())
                })
            })
            .unwrap_or((false, false));
        let touch_period_over = now.is_some_and(|now| {
            now.saturating_sub(self.touched_at.load(Ordering::Relaxed)) >= TOUCH_EVERY_MS
        });
        let waiting = Waiting {
            leading,
            adoption_due: self.parked.adoption_due(term),
            accesses: lock(&self.touches).len(),
            touch_period_over,
            deadline_due,
            cancelled: cancelled.len(),
            evict_bytes: self.evict_bytes.swap(0, Ordering::Relaxed),
            events,
        };
        let chores = chores(waiting);
        // Taken only to be proposed now (or dropped by a follower: the leader records
        // its own reads).
        let accesses = match now {
            Some(now) if chores.contains(&Chore::Touch) => {
                self.touched_at.store(now, Ordering::Relaxed);
                std::mem::take(&mut *lock(&self.touches))
                    .into_iter()
                    .collect()
            }
            Some(_) => Vec::new(),
            None => {
                lock(&self.touches).clear();
                Vec::new()
            }
        };
        if chores == [Chore::Abandon] {
            // Their requests fail now, to be retried at the new leader; their
            // cancellations have nothing left to do.
            self.parked.abandon();
            self.events.forget_partition(self.id);
            return None;
        }
        (!chores.is_empty()).then_some(Due {
            term,
            chores,
            cancelled,
            accesses,
        })
    }

    /// Leader housekeeping, second half: proposes what [`Self::housekeeping_due`] found,
    /// in order. A round whose adoption fails ends there.
    pub async fn run_housekeeping(&self, due: Due) {
        let Due {
            term,
            chores,
            mut cancelled,
            mut accesses,
        } = due;
        for chore in chores {
            match chore {
                // Planned only alone, and done in `housekeeping_due`.
                Chore::Abandon => {}
                Chore::Adopt { min_seq } => {
                    if self.adopt(term, min_seq).await.is_err() {
                        return;
                    }
                }
                Chore::Touch => {
                    let accesses = std::mem::take(&mut accesses);
                    let _ = self.propose(Command::Touch { accesses }).await;
                }
                Chore::Tick => {
                    if let Ok(outcome) = self.propose(Command::Tick).await {
                        self.settle(outcome).await;
                    }
                }
                Chore::Cancel => {
                    for waiter in std::mem::take(&mut cancelled) {
                        if self.propose(Command::CancelWait { waiter }).await.is_ok() {
                            // Out of the queue now: no grant can come for it any more.
                            self.parked.cancel_done(waiter.seq);
                        }
                    }
                }
                Chore::Evict { bytes } => {
                    if let Ok(outcome) = self.propose(Command::Evict { bytes }).await {
                        self.settle(outcome).await;
                    }
                }
                Chore::Events => self.deliver_events().await,
            }
        }
    }

    /// Hands the outbox's events to clients and proposes those they acknowledged. On
    /// failure they stay acknowledged here and go again next round.
    async fn deliver_events(&self) {
        self.with_partition(|p| self.events.deliver(self.id, p.outbox()));
        let seqs = self.events.acked(self.id);
        if !seqs.is_empty() {
            let _ = self.propose(Command::AckEvents { seqs }).await;
        }
    }
}
