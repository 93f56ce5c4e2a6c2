//! A cluster node: bootstraps the cluster or joins it, hosts the Raft groups the map gives
//! it, moves each group it leads toward the map, and (on the control leader) admits
//! nodes, watches them, and re-places the partitions of nodes that stay unreachable. A
//! node that was marked down but is alive asks to be back once it can reach the cluster.
//!
//! ```text
//! start ─▶ bootstrap (id 1: control + all partitions on itself) | join (ask any member)
//! watch, every 250 ms, on its own (never waits for moves):
//!   control leader: ping active nodes (bounded); MarkDown after --down-after
//!   other nodes:    not pinged for --down-after, or Down in the map ⇒ Rejoin (same id)
//! reconcile, every 200 ms:
//!   control leader: control membership ⇐ active nodes
//!   every node:     host groups the map assigns; as a group's leader, add learners then
//!                   swap voters to the map's replica set; drop groups it no longer holds
//! maintain, every tick: each led group adopts waiters, records touches, ticks when due
//! ```
//!
//! Split by concern: `membership` (bootstrap, join, leave, peer messages, control
//! voters), `liveness` (pings, marking down, rejoining), `moves` (learners, voter swaps,
//! leadership hand-over, releasing groups), `memory` (the node's memory limit).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use grid_proto::sync::{lock, read, write};
use grid_proto::{
    key_hash, partition_of, GeoOp, MapNode, Millis, ObjKey, Op, PartitionMap, Reply, Unavailability,
};
use openraft::BasicNode;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::{ClusterState, NodeState};
use super::durable::{DataDir, DurableError};
use super::filter::{Filters, Rule};
use super::group::PartitionGroup;
use super::log_store::GroupLog;
use super::peer::{NetworkFactory, Peers, PEER_CLIENT_NAME};
use super::raft_types::{GroupId, GroupRaft, NodeId};
use super::state_machine::{GroupSm, Machine};
use crate::clock::Clock;
use crate::events::EventHub;
use crate::log_limit::RateLimit;
use crate::partition::{Partition, PartitionConfig};
use crate::store::StoreStats;
use crate::workers::Workers;
use grid_client::conn::Dial;

mod liveness;
mod membership;
mod memory;
mod moves;
mod plan;
mod restart;
mod snapshots;
mod successor;
mod support;
pub use membership::PeerAnswer;
pub use memory::MemoryLimit;
use support::{ask, bounded, members_of, voters_of, MEMBERSHIP_CHANGE_LIMIT, PEER_CALL_LIMIT};

/// Most voters of the control group.
const CONTROL_VOTERS: usize = 5;
/// How often the map is reconciled.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);
/// How often liveness is checked (pings on the control leader, standing elsewhere).
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long an operator-facing line that repeats (a change deferred, a peer refusing)
/// stays quiet after it was written.
const LOG_REPEAT: Duration = Duration::from_secs(30);
/// How long a replica the map no longer lists may stay when its leader never said so.
const UNLISTED_GRACE: Duration = Duration::from_secs(30);
/// Leadership hand-overs a node runs at once.
const MAX_HAND_OVERS: usize = 8;
/// Wait after a failed hand-over before the group tries again.
const HAND_OVER_COOLDOWN: Duration = Duration::from_secs(10);
/// How long a leader handing its group over waits for in-flight writes.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How far behind the leader's log a learner may be when it is made a voter.
const CAUGHT_UP_ENTRIES: u64 = 64;
/// How often the data directory's free space is measured.
const DISK_SPACE_EVERY: Duration = Duration::from_millis(250);
/// How long a node may take to join or bootstrap.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// Cluster settings of a node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Address peers and clients reach this node at.
    pub advertise: String,
    /// Members to join through; empty bootstraps a new cluster.
    pub join: Vec<String>,
    /// Partitions of a new cluster.
    pub partitions: u32,
    /// Replicas per partition of a new cluster.
    pub replicas: u32,
    /// How long a node may be unreachable before its partitions are re-placed.
    pub down_after: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout (the lower bound; the upper is twice this).
    pub election_timeout: Duration,
    /// Leaders answer reads under a lease (see `group/reads.rs`).
    pub lease_reads: bool,
    /// The cluster secret this node proves to its peers.
    pub peer_key: grid_proto::peer_auth::PeerKey,
    /// TLS to the peers' ports, when the client port is TLS.
    pub peer_tls: Option<grid_client::tls::ClientTls>,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
    /// With a data directory, the least log value bytes worth writing a snapshot for.
    pub snapshot_bytes: u64,
    /// Settings of every partition.
    pub partition: PartitionConfig,
    /// How long a client has to acknowledge an event before another gets it.
    pub event_ack_timeout: Duration,
    /// The node's memory limit.
    pub memory: MemoryLimit,
    /// Where Raft's state is kept (`--data-dir`); in memory only without one.
    pub data: Option<Arc<DataDir>>,
}

/// A node could not start its cluster role.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The Raft settings are inconsistent.
    #[error("raft settings: {0}")]
    RaftConfig(String),
    /// A Raft group failed to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
    /// A graceful leave did not complete.
    #[error("{reason}")]
    Leave {
        /// Why.
        reason: String,
    },
    /// The data directory cannot be used.
    #[error("data directory: {0}")]
    Disk(#[from] DurableError),
    /// No member admitted this node.
    #[error("could not join through {seeds:?}: {reason}")]
    Join {
        /// Members tried.
        seeds: Vec<String>,
        /// The last failure.
        reason: String,
    },
}

/// What a node holds, for status and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeReport {
    /// The node's id.
    pub node_id: NodeId,
    /// Map epoch known here.
    pub map_epoch: u64,
    /// Groups hosted.
    pub hosted: u32,
    /// Groups led.
    pub led: u32,
    /// Hosted groups whose voters differ from the map.
    pub unsettled: u32,
    /// Store counters summed over the groups led.
    pub led_stats: StoreStats,
    /// Lock waiters in the groups led.
    pub lock_waiters: u64,
    /// Expirations seen while leading.
    pub expired: u64,
    /// Low-memory evictions made while leading.
    pub evicted: u64,
    /// Events not yet acknowledged in the groups led.
    pub pending_events: u64,
    /// This node votes in the control group (it keeps the control group's quorum).
    pub control_voter: bool,
}

/// One node's part in the cluster.
pub struct ClusterNode {
    me: AtomicU64,
    config: ClusterConfig,
    clock: Arc<dyn Clock>,
    peers: Arc<Peers>,
    raft_config: Arc<openraft::Config>,
    control: OnceLock<(GroupRaft, GroupSm)>,
    groups: RwLock<BTreeMap<GroupId, Arc<PartitionGroup>>>,
    changing: Arc<Mutex<BTreeSet<GroupId>>>,
    /// Groups whose log is being compacted for memory.
    compacting: Mutex<BTreeSet<GroupId>>,
    /// Leadership hand-overs under way.
    hand_overs: AtomicUsize,
    /// Notified whenever this node stops hosting a group (a leave waits on it).
    released: tokio::sync::Notify,
    /// Hosted groups the map no longer lists here, since when.
    unlisted_since: Mutex<HashMap<GroupId, Instant>>,
    /// Groups whose hand-over failed, and when to try again.
    hand_over_after: Mutex<HashMap<GroupId, Instant>>,
    last_seen: Mutex<HashMap<NodeId, Instant>>,
    /// When the control leader last pinged this node (it pings every active node), or
    /// this node, leading the control group, last heard from a quorum.
    last_pinged: Mutex<Instant>,
    /// Not before this does the node ask to be back again.
    next_rejoin: Mutex<Instant>,
    /// Set once this node has been out of touch past the grace period (and so probably
    /// marked down): replicas it still holds from before may belong to groups that have
    /// moved on without it.
    was_away: std::sync::atomic::AtomicBool,
    /// Set when this node leaves gracefully: it never asks to be back.
    leaving: std::sync::atomic::AtomicBool,
    /// Set while this node, asking to be back, reaches no member at all: it cannot serve
    /// anything a quorum must confirm, so clients are sent elsewhere at once.
    isolated: std::sync::atomic::AtomicBool,
    /// Hosted groups without a working leader as this node sees them, since when.
    leaderless_since: Mutex<HashMap<GroupId, Instant>>,
    /// Lines that would repeat every round (a change deferred, a peer refusing), one per
    /// key per [`LOG_REPEAT`].
    quiet: RateLimit<(&'static str, u64)>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Delivers the events of the partitions this node leads.
    events: Arc<EventHub>,
    /// Value bytes over the hosted replicas, as last measured.
    memory_used: AtomicU64,
    /// Peers found gone, for fast failover.
    successions: tokio::sync::Mutex<successor::Successions>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id())
            .field("advertise", &self.config.advertise)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// A node that has not bootstrapped or joined yet; it answers peers meanwhile.
    pub fn new(config: ClusterConfig, clock: Arc<dyn Clock>) -> Result<Self, ClusterError> {
        let heartbeat = config.heartbeat.as_millis() as u64;
        let election = config.election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "grid".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            install_snapshot_timeout: 5_000,
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 64,
            // Snapshots are built when `snapshots::snapshot_due` says (every
            // `snapshot_logs` entries, held back for a lagging follower).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // Applied entries stay a little while for followers a few entries behind (a
            // follower further behind gets a snapshot), then go: the state holds the values.
            max_in_snapshot_log_to_keep: config.snapshot_logs.saturating_mul(2),
            purge_batch_size: (config.snapshot_logs / 2).max(1),
            // Sent for every group at once by the node (`send_heartbeats`), so the
            // heartbeats to one peer leave, and are answered, together.
            enable_heartbeat: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::RaftConfig(e.to_string()))?;
        Ok(Self {
            me: AtomicU64::new(0),
            peers: Arc::new(Peers::new(Dial {
                auth_token: None,
                client_name: PEER_CLIENT_NAME.to_string(),
                connect_timeout: Duration::from_secs(2),
                tls: config.peer_tls.clone(),
                peer_key: Some(config.peer_key.clone()),
            })),
            raft_config: Arc::new(raft_config),
            control: OnceLock::new(),
            groups: RwLock::new(BTreeMap::new()),
            changing: Arc::default(),
            compacting: Mutex::default(),
            hand_overs: AtomicUsize::new(0),
            released: tokio::sync::Notify::new(),
            unlisted_since: Mutex::new(HashMap::new()),
            hand_over_after: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            last_pinged: Mutex::new(Instant::now()),
            next_rejoin: Mutex::new(Instant::now()),
            was_away: std::sync::atomic::AtomicBool::new(false),
            leaving: std::sync::atomic::AtomicBool::new(false),
            isolated: std::sync::atomic::AtomicBool::new(false),
            leaderless_since: Mutex::new(HashMap::new()),
            quiet: RateLimit::new(LOG_REPEAT),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            events: Arc::new(EventHub::new(
                config.event_ack_timeout.as_millis() as u64,
                Arc::clone(&clock),
            )),
            memory_used: AtomicU64::new(0),
            successions: tokio::sync::Mutex::default(),
            config,
            clock,
        })
    }

    /// The node's event delivery.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// Fault injection: drop every message this node sends to the peers at `addrs`
    /// (replacing earlier filters; none heals).
    pub fn block_peers(&self, addrs: impl IntoIterator<Item = String>) {
        let rules: Vec<Rule> = addrs.into_iter().map(Rule::cut).collect();
        self.filter_peers(Filters::new(rules));
    }

    /// Fault injection: from now on, what this node sends its peers goes through
    /// `filters` (replacing earlier ones; empty filters heal).
    pub fn filter_peers(&self, filters: Filters) {
        tracing::warn!(?filters, "fault injection: peer filters set");
        self.peers.set_filters(filters);
    }

    /// This node's id; 0 until it has joined.
    pub fn id(&self) -> NodeId {
        self.me.load(Ordering::Relaxed)
    }

    /// A new group's log and state machine: in memory, and in fresh files with a data
    /// directory.
    async fn fresh_storage(
        &self,
        group: GroupId,
        machine: Machine,
    ) -> Result<(GroupLog, GroupSm), ClusterError> {
        let files = match &self.config.data {
            Some(data) => Some(data.create_group(group).await?),
            None => None,
        };
        let log = files.clone().map(GroupLog::on_disk).unwrap_or_default();
        let sm = GroupSm::with_files(machine, self.config.partition, files);
        Ok((log, sm))
    }

    async fn new_raft(
        &self,
        group: GroupId,
        machine: Machine,
    ) -> Result<(GroupRaft, GroupSm), ClusterError> {
        let (log, sm) = self.fresh_storage(group, machine).await?;
        Ok((self.start_raft(group, log, sm.clone()).await?, sm))
    }

    async fn start_raft(
        &self,
        group: GroupId,
        log: GroupLog,
        sm: GroupSm,
    ) -> Result<GroupRaft, ClusterError> {
        let network = NetworkFactory {
            peers: Arc::clone(&self.peers),
            group,
        };
        GroupRaft::new(self.id(), Arc::clone(&self.raft_config), network, log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    async fn host_group(&self, p: GroupId) -> Result<Arc<PartitionGroup>, ClusterError> {
        if let Some(g) = self.group(p) {
            return Ok(g);
        }
        let machine = Machine::Partition(Box::new(Partition::new(self.config.partition)));
        let (log, sm) = self.fresh_storage(p, machine).await?;
        self.host(p, log, sm).await
    }

    /// Starts a partition group on `log` and `sm` and hosts it (unless one is already).
    async fn host(
        &self,
        p: GroupId,
        log: GroupLog,
        sm: GroupSm,
    ) -> Result<Arc<PartitionGroup>, ClusterError> {
        let log_bytes = log.bytes();
        let raft = self.start_raft(p, log, sm.clone()).await?;
        let group = Arc::new(PartitionGroup::new(
            p,
            (raft, sm, log_bytes),
            self.id(),
            Arc::clone(&self.clock),
            Arc::clone(&self.events),
            self.read_lease(),
        ));
        let mut groups = write(&self.groups);
        Ok(Arc::clone(groups.entry(p).or_insert(group)))
    }

    fn group(&self, p: GroupId) -> Option<Arc<PartitionGroup>> {
        read(&self.groups).get(&p).cloned()
    }

    fn all_groups(&self) -> Vec<Arc<PartitionGroup>> {
        read(&self.groups).values().cloned().collect()
    }

    /// One heartbeat round: every group this node leads sends its heartbeats now, all in
    /// the same instant.
    async fn send_heartbeats(&self) {
        let leading =
            |raft: &GroupRaft| raft.metrics().borrow().state == openraft::ServerState::Leader;
        if let Some(raft) = self.control_raft().filter(|r| leading(r)) {
            let _ = raft.trigger().heartbeat().await;
        }
        for g in self.all_groups() {
            if leading(&g.raft) {
                let _ = g.raft.trigger().heartbeat().await;
            }
        }
    }

    fn control_raft(&self) -> Option<&GroupRaft> {
        self.control.get().map(|(raft, _)| raft)
    }

    /// The replicated cluster state, once this node has it.
    pub fn state(&self) -> Option<ClusterState> {
        self.with_state(ClusterState::clone)
    }

    /// Runs `f` on the cluster state in place (none before this node has joined). Do not
    /// hold across an `.await`: it reads under the control state machine's lock.
    fn with_state<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Option<T> {
        let (_, sm) = self.control.get()?;
        match &sm.read().machine {
            Machine::Control(state) if state.partitions > 0 => Some(f(state)),
            _ => None,
        }
    }

    /// How long a group's follower refuses to vote for another candidate after it last
    /// heard from its leader: openraft's leader lease, the longest election timeout.
    fn leader_lease(&self) -> Duration {
        self.config.election_timeout * 2
    }

    /// How long a leader answers reads after a confirmation: a fraction of how long
    /// followers refuse to vote after hearing from it (`election_timeout_max`, twice the
    /// election timeout); zero without lease reads.
    fn read_lease(&self) -> Duration {
        if self.config.lease_reads {
            crate::cluster::group::lease_for(self.leader_lease())
        } else {
            Duration::ZERO
        }
    }

    fn self_member(&self) -> BTreeMap<NodeId, BasicNode> {
        BTreeMap::from([(self.id(), BasicNode::new(&self.config.advertise))])
    }

    /// Runs one validated client operation.
    pub async fn execute(&self, op: Op) -> Reply {
        match self.group_of(op.obj()) {
            Ok(group) => group.execute(op).await,
            Err(reply) => reply,
        }
    }

    /// Runs one migration step on its object's partition (as its leader).
    pub async fn execute_geo(&self, op: GeoOp) -> Reply {
        match self.group_of(op.obj()) {
            Ok(group) => group.execute_geo(op).await,
            Err(reply) => reply,
        }
    }

    /// The hosted group of `obj`'s partition, or where to go instead. Reads the cluster
    /// state in place (under its lock, briefly), never a copy of it per request.
    fn group_of(&self, obj: &ObjKey) -> Result<Arc<PartitionGroup>, Reply> {
        let group = self.hosted(|partitions| {
            Ok(partition_of(key_hash(&obj.namespace, &obj.key), partitions))
        })?;
        // Cut off, a replica could only wait for a quorum it cannot reach (a write until
        // its time limit); "unavailable" sends the client to the others now. A group whose
        // only voter is this node still works.
        if self.isolated() && voters_of(&group.raft) != BTreeSet::from([self.id()]) {
            return Err(Reply::Unavailable {
                code: Unavailability::CutOff,
                reason: "this node is cut off from the cluster".into(),
            });
        }
        Ok(group)
    }

    /// The hosted group of the partition `pick` chooses out of the cluster's, or where to
    /// go instead (the partition's preferred leader, or "not joined").
    fn hosted(
        &self,
        pick: impl FnOnce(u32) -> Result<u32, Reply>,
    ) -> Result<Arc<PartitionGroup>, Reply> {
        let routed = self.with_state(|state| {
            let p = pick(state.partitions)?;
            self.group(p).ok_or_else(|| Reply::NotLeader {
                leader_hint: state.assignment[p as usize]
                    .first()
                    .and_then(|id| state.addr_of(*id))
                    .map(str::to_string),
            })
        });
        routed.unwrap_or_else(|| {
            Err(Reply::Unavailable {
                code: Unavailability::NotJoined,
                reason: "this node has not joined a cluster yet".into(),
            })
        })
    }

    /// A copy of partition `p`'s objects for a backup, if this node leads it.
    pub async fn export(&self, p: u32) -> Result<Vec<grid_proto::backup::BackupObject>, Reply> {
        self.partition_group(p)?.export().await
    }

    /// A page of the keys of partition `p` in `namespace` carrying `tag`, if this node
    /// leads it.
    pub async fn find_tag(
        &self,
        p: u32,
        namespace: &str,
        tag: &str,
        after: Option<&[u8]>,
        budget: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), Reply> {
        self.partition_group(p)?
            .find_tag(namespace, tag, after, budget)
            .await
    }

    /// The group of partition `p` when this node hosts it.
    fn partition_group(&self, p: u32) -> Result<Arc<PartitionGroup>, Reply> {
        self.hosted(|partitions| {
            if p < partitions {
                Ok(p)
            } else {
                Err(Reply::BadRequest {
                    reason: format!("no partition {p}: the cluster has {partitions}"),
                })
            }
        })
    }

    /// `(free, reserve)` while the data directory's disk is under its reserve.
    pub fn short_of_space(&self) -> Option<(u64, u64)> {
        self.config.data.as_ref()?.short_of_space()
    }

    /// True while this node reaches no other member (see `liveness`).
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// Objects of the partitions this node leads that have been migrating to another
    /// site since before `before`: `(object, destination site, transfer)`.
    pub fn stuck_migrations(&self, before: Millis) -> Vec<(ObjKey, String, u64)> {
        self.all_groups()
            .iter()
            .filter(|g| g.is_leader())
            .filter_map(|g| g.with_partition(|p| p.store().migrating(before)))
            .flatten()
            .collect()
    }

    /// The partition map with the leaders this node knows. Empty while this node is cut
    /// off from the cluster: its map may be old, and clients take an empty map as "ask
    /// another node".
    pub fn map(&self) -> PartitionMap {
        let Some(state) = self.state().filter(|_| !self.isolated()) else {
            return PartitionMap::default();
        };
        let leaders = (0..state.partitions)
            .map(|p| self.group(p).and_then(|g| g.leader()))
            .collect();
        PartitionMap {
            epoch: state.epoch,
            partitions: state.partitions,
            nodes: state
                .nodes
                .iter()
                .map(|(id, n)| MapNode {
                    id: *id,
                    addr: n.addr.clone(),
                    active: n.state == NodeState::Active,
                })
                .collect(),
            replicas: state.assignment.clone(),
            leaders,
        }
    }

    /// What this node holds and leads.
    pub fn report(&self) -> NodeReport {
        let mut report = NodeReport {
            node_id: self.id(),
            ..NodeReport::default()
        };
        let state = self.state();
        report.map_epoch = state.as_ref().map_or(0, |s| s.epoch);
        let me = self.id();
        report.control_voter = self
            .control_raft()
            .is_some_and(|r| voters_of(r).contains(&me));
        for g in self.all_groups() {
            report.hosted += 1;
            report.expired += g.expired_total();
            report.evicted += g.evicted_total();
            let voters = voters_of(&g.raft);
            let target: BTreeSet<NodeId> = state
                .as_ref()
                .and_then(|s| s.assignment.get(g.id as usize))
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            let leader = g.is_leader();
            if (target.contains(&me) && !voters.contains(&me)) || (leader && voters != target) {
                report.unsettled += 1;
            }
            if leader {
                report.led += 1;
                if let Some((s, w, e)) =
                    g.with_partition(|p| (p.stats(), p.waiting(), p.outbox().len()))
                {
                    report.led_stats.objects += s.objects;
                    report.led_stats.value_bytes += s.value_bytes;
                    report.led_stats.locked += s.locked;
                    report.lock_waiters += w as u64;
                    report.pending_events += e as u64;
                }
            }
        }
        report
    }

    /// Runs the liveness, reconcile and housekeeping jobs (registered in `workers`) until
    /// `shutdown`, then stops every group.
    pub async fn run(
        self: Arc<Self>,
        tick: Duration,
        shutdown: CancellationToken,
        workers: &Workers,
    ) {
        // Separate loops, so a group that cannot commit (no quorum) never holds up moving
        // groups and admitting nodes, and the other way round; and so liveness is watched
        // whatever moves and hand-overs are under way (they may wait on the very node that
        // is unreachable).
        let watcher = workers
            .add("liveness")
            .every(WATCH_EVERY, shutdown.clone(), {
                let node = Arc::clone(&self);
                move || {
                    let node = Arc::clone(&node);
                    async move { node.watch().await }
                }
            });
        let reconciler = workers
            .add("reconcile")
            .every(RECONCILE_EVERY, shutdown.clone(), {
                let node = Arc::clone(&self);
                move || {
                    let node = Arc::clone(&node);
                    async move {
                        let round = node.reconcile().await;
                        let mut tasks = node.tasks.lock().await;
                        while tasks.try_join_next().is_some() {}
                        round
                    }
                }
            });
        // Each group's housekeeping, when it has something to propose, runs as its own
        // task and is skipped while the last one is still busy (a group without quorum),
        // never cancelled halfway: answers it settles must reach their waiters. An idle
        // group costs a look and no task. The set is dropped, and its tasks aborted, on
        // shutdown.
        let housekeeping = Arc::new(Mutex::new(JoinSet::new()));
        let busy: Arc<Mutex<BTreeSet<GroupId>>> = Arc::default();
        let maintainer = workers.add("housekeeping").every(tick, shutdown.clone(), {
            let (node, housekeeping, busy) = (
                Arc::clone(&self),
                Arc::clone(&housekeeping),
                Arc::clone(&busy),
            );
            move || {
                let mut tasks = lock(&housekeeping);
                while tasks.try_join_next().is_some() {}
                for g in node.all_groups() {
                    if lock(&busy).contains(&g.id) {
                        continue;
                    }
                    let Some(due) = g.housekeeping_due() else {
                        continue;
                    };
                    lock(&busy).insert(g.id);
                    let busy = Arc::clone(&busy);
                    tasks.spawn(async move {
                        g.run_housekeeping(due).await;
                        lock(&busy).remove(&g.id);
                    });
                }
                std::future::ready(Ok(()))
            }
        });
        let successor =
            workers
                .add("successor")
                .every(successor::SUCCESSOR_EVERY, shutdown.clone(), {
                    let node = Arc::clone(&self);
                    move || {
                        let node = Arc::clone(&node);
                        async move { node.succeed_gone_leaders().await }
                    }
                });
        let heartbeats =
            workers
                .add("heartbeats")
                .every(self.config.heartbeat, shutdown.clone(), {
                    let node = Arc::clone(&self);
                    move || {
                        let node = Arc::clone(&node);
                        async move {
                            node.send_heartbeats().await;
                            Ok(())
                        }
                    }
                });
        let snapshots =
            workers
                .add("snapshots")
                .every(snapshots::SNAPSHOTS_EVERY, shutdown.clone(), {
                    let node = Arc::clone(&self);
                    move || {
                        let node = Arc::clone(&node);
                        async move {
                            node.snapshot_round().await;
                            Ok(())
                        }
                    }
                });
        let disk_space = async {
            let Some(data) = self.config.data.clone() else {
                return;
            };
            let said = Arc::new(AtomicBool::new(false));
            let round = workers.add("disk-space").every(DISK_SPACE_EVERY, shutdown.clone(), move || {
                let (data, said) = (Arc::clone(&data), Arc::clone(&said));
                async move {
                    data.measure_free().map_err(|e| format!("free space of {}: {e}", data.root().display()))?;
                    let short = data.short_of_space();
                    if short.is_some() != said.swap(short.is_some(), Ordering::Relaxed) {
                        match short {
                            Some((free, reserve)) => tracing::error!(free, reserve, dir = %data.root().display(), "the data directory's disk is nearly full: writes are refused until there is room"),
                            None => tracing::warn!(dir = %data.root().display(), "the data directory's disk has room again: writes are taken"),
                        }
                    }
                    Ok(())
                }
            });
            round.await;
        };
        tokio::join!(watcher, reconciler, maintainer, successor, heartbeats, snapshots, disk_space);
        lock(&housekeeping).abort_all();
        self.tasks.lock().await.abort_all();
        for g in self.all_groups() {
            let _ = g.raft.shutdown().await;
        }
        if let Some(raft) = self.control_raft() {
            let _ = raft.shutdown().await;
        }
        if let Some(data) = &self.config.data {
            data.mark_stopped().await;
        }
    }

    async fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().await.spawn(task);
    }

    /// Whether a line keyed `(what, key)` may be written now (see [`LOG_REPEAT`]).
    pub(super) fn say(&self, what: &'static str, key: u64) -> bool {
        self.quiet.allow((what, key), Instant::now()).is_some()
    }
}
