//! A cluster node: bootstraps the cluster or joins it, hosts the Raft groups the map gives
//! it, moves each group it leads toward the map, and (on the control leader) admits
//! nodes, watches them, and re-places the partitions of nodes that stay unreachable.
//!
//! ```text
//! start ─▶ bootstrap (id 1: control + all partitions on itself) | join (ask any member)
//! reconcile, every 200 ms:
//!   control leader: control membership ⇐ active nodes; ping nodes; MarkDown after grace
//!   every node:     host groups the map assigns; as a group's leader, add learners then
//!                   swap voters to the map's replica set; drop groups it no longer holds
//! maintain, every tick: each led group adopts waiters, records touches, ticks when due
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use grid_proto::{key_hash, partition_of, GeoOp, MapNode, Millis, ObjKey, Op, PartitionMap, Reply};
use openraft::{BasicNode, ChangeMembers, ServerState};
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::{ClusterState, ControlCommand, ControlResponse, NodeState};
use super::group::PartitionGroup;
use super::log_store::MemLog;
use super::peer::{
    encode, NetworkFactory, PeerEnvelope, PeerRequest, PeerResponse, Peers, RaftRpc,
};
use super::raft_types::{GroupCommand, GroupId, GroupRaft, GroupResponse, NodeId, CONTROL_GROUP};
use super::state_machine::{GroupSm, Machine};
use crate::clock::Clock;
use crate::events::EventHub;
use crate::partition::{Partition, PartitionConfig};
use crate::store::StoreStats;

mod memory;
pub use memory::MemoryLimit;

/// Most voters of the control group.
const CONTROL_VOTERS: usize = 5;
/// How often the map is reconciled.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);
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
    /// Token for peer connections.
    pub auth_token: Option<String>,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
    /// Settings of every partition.
    pub partition: PartitionConfig,
    /// How long a client has to acknowledge an event before another gets it.
    pub event_ack_timeout: Duration,
    /// The node's memory limit.
    pub memory: MemoryLimit,
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
    /// Leadership hand-overs under way.
    hand_overs: AtomicUsize,
    /// Hosted groups the map no longer lists here, since when.
    unlisted_since: Mutex<HashMap<GroupId, Instant>>,
    /// Groups whose hand-over failed, and when to try again.
    hand_over_after: Mutex<HashMap<GroupId, Instant>>,
    last_seen: Mutex<HashMap<NodeId, Instant>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Delivers the events of the partitions this node leads.
    events: Arc<EventHub>,
    /// Value bytes over the hosted replicas, as last measured.
    memory_used: AtomicU64,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id())
            .field("advertise", &self.config.advertise)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
            max_in_snapshot_log_to_keep: (config.snapshot_logs / 5).max(1),
            purge_batch_size: (config.snapshot_logs / 20).max(1),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::RaftConfig(e.to_string()))?;
        Ok(Self {
            me: AtomicU64::new(0),
            peers: Arc::new(Peers::new(
                config.auth_token.clone(),
                Duration::from_secs(2),
            )),
            raft_config: Arc::new(raft_config),
            control: OnceLock::new(),
            groups: RwLock::new(BTreeMap::new()),
            changing: Arc::default(),
            hand_overs: AtomicUsize::new(0),
            unlisted_since: Mutex::new(HashMap::new()),
            hand_over_after: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            events: Arc::new(EventHub::new(
                config.event_ack_timeout.as_millis() as u64,
                Arc::clone(&clock),
            )),
            memory_used: AtomicU64::new(0),
            config,
            clock,
        })
    }

    /// The node's event delivery.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// Fault injection: drop this node's messages to the peers at `addrs`.
    pub fn block_peers(&self, addrs: std::collections::HashSet<String>) {
        tracing::warn!(?addrs, "fault injection: blocking peers");
        self.peers.block(addrs);
    }

    /// This node's id; 0 until it has joined.
    pub fn id(&self) -> NodeId {
        self.me.load(Ordering::Relaxed)
    }

    async fn new_raft(
        &self,
        group: GroupId,
        machine: Machine,
    ) -> Result<(GroupRaft, GroupSm), ClusterError> {
        let sm = GroupSm::new(machine, self.config.partition);
        let network = NetworkFactory {
            peers: Arc::clone(&self.peers),
            group,
        };
        let raft = GroupRaft::new(
            self.id(),
            Arc::clone(&self.raft_config),
            network,
            MemLog::default(),
            sm.clone(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok((raft, sm))
    }

    async fn host_group(&self, p: GroupId) -> Result<Arc<PartitionGroup>, ClusterError> {
        if let Some(g) = self.group(p) {
            return Ok(g);
        }
        let machine = Machine::Partition(Box::new(Partition::new(self.config.partition)));
        let (raft, sm) = self.new_raft(p, machine).await?;
        let group = Arc::new(PartitionGroup::new(
            p,
            raft,
            sm,
            self.id(),
            Arc::clone(&self.clock),
            Arc::clone(&self.events),
        ));
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(groups.entry(p).or_insert(group)))
    }

    fn group(&self, p: GroupId) -> Option<Arc<PartitionGroup>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&p)
            .cloned()
    }

    fn all_groups(&self) -> Vec<Arc<PartitionGroup>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn control_raft(&self) -> Option<&GroupRaft> {
        self.control.get().map(|(raft, _)| raft)
    }

    /// The replicated cluster state, once this node has it.
    pub fn state(&self) -> Option<ClusterState> {
        let (_, sm) = self.control.get()?;
        match &sm.read().machine {
            Machine::Control(state) if state.partitions > 0 => Some(state.clone()),
            _ => None,
        }
    }

    fn self_member(&self) -> BTreeMap<NodeId, BasicNode> {
        BTreeMap::from([(self.id(), BasicNode::new(&self.config.advertise))])
    }

    /// Bootstraps a new cluster or joins an existing one.
    pub async fn start(&self) -> Result<(), ClusterError> {
        if self.config.join.is_empty() {
            self.bootstrap().await
        } else {
            let id = self.join().await?;
            self.me.store(id, Ordering::Relaxed);
            let (raft, sm) = self
                .new_raft(CONTROL_GROUP, Machine::Control(ClusterState::default()))
                .await?;
            let _ = self.control.set((raft, sm));
            tracing::info!(id, "joined the cluster");
            Ok(())
        }
    }

    async fn bootstrap(&self) -> Result<(), ClusterError> {
        self.me.store(1, Ordering::Relaxed);
        let raft_err = |e: String| ClusterError::Raft(e);
        let (raft, sm) = self
            .new_raft(CONTROL_GROUP, Machine::Control(ClusterState::default()))
            .await?;
        raft.initialize(self.self_member())
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        raft.wait(Some(JOIN_DEADLINE))
            .state(ServerState::Leader, "control group leader")
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let cluster_id = random_id();
        self.peers.set_cluster(cluster_id);
        let init = ControlCommand::Init {
            cluster_id,
            partitions: self.config.partitions,
            replicas: self.config.replicas,
            addr: self.config.advertise.clone(),
        };
        raft.client_write(GroupCommand::Control(init))
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let _ = self.control.set((raft, sm));
        for p in 0..self.config.partitions {
            let group = self.host_group(p).await?;
            group
                .raft
                .initialize(self.self_member())
                .await
                .map_err(|e| raft_err(e.to_string()))?;
        }
        tracing::info!(
            partitions = self.config.partitions,
            "bootstrapped a new cluster"
        );
        Ok(())
    }

    async fn join(&self) -> Result<NodeId, ClusterError> {
        let started = Instant::now();
        let mut queue: Vec<String> = self.config.join.clone();
        let mut reason = String::from("no member answered");
        while started.elapsed() < JOIN_DEADLINE {
            let Some(seed) = queue.first().cloned() else {
                queue = self.config.join.clone();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            queue.remove(0);
            let request = PeerRequest::Join {
                addr: self.config.advertise.clone(),
            };
            match self
                .peers
                .call(&seed, &request, Duration::from_secs(10))
                .await
            {
                Ok(PeerResponse::Joined { id, cluster }) => {
                    self.peers.set_cluster(cluster);
                    return Ok(id);
                }
                Ok(PeerResponse::NotLeader {
                    leader_addr: Some(addr),
                }) => queue.insert(0, addr),
                Ok(PeerResponse::Refused { reason }) => {
                    return Err(ClusterError::Join {
                        seeds: self.config.join.clone(),
                        reason,
                    })
                }
                Ok(other) => reason = format!("{seed} answered {other:?}"),
                Err(e) => reason = e.to_string(),
            }
        }
        Err(ClusterError::Join {
            seeds: self.config.join.clone(),
            reason,
        })
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

    /// The hosted group of `obj`'s partition, or where to go instead.
    fn group_of(&self, obj: &ObjKey) -> Result<Arc<PartitionGroup>, Reply> {
        let Some(state) = self.state() else {
            return Err(Reply::Unavailable {
                reason: "this node has not joined a cluster yet".into(),
            });
        };
        let p = partition_of(key_hash(&obj.namespace, &obj.key), state.partitions);
        self.group(p).ok_or_else(|| Reply::NotLeader {
            leader_hint: state.assignment[p as usize]
                .first()
                .and_then(|id| state.addr_of(*id))
                .map(str::to_string),
        })
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

    /// The partition map with the leaders this node knows.
    pub fn map(&self) -> PartitionMap {
        let Some(state) = self.state() else {
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

    /// True when other active nodes could take over this node's replicas.
    pub fn can_leave(&self) -> bool {
        self.state().is_some_and(|s| {
            let active = s.active_nodes();
            active.contains(&self.id()) && active.len() > 1
        })
    }

    /// Leaves the cluster gracefully: asks the control leader to re-place this node's
    /// partitions, then waits (up to `deadline`) until no group is hosted here any more,
    /// which means their replicas and leadership have moved to other nodes.
    pub async fn leave(&self, deadline: Duration) -> Result<(), ClusterError> {
        let started = Instant::now();
        let fail = |reason: String| ClusterError::Leave { reason };
        let mut target: Option<String> = None;
        loop {
            if started.elapsed() > deadline {
                return Err(fail(
                    "the control leader did not accept the leave in time".into(),
                ));
            }
            let answer = match &target {
                None => {
                    self.control_command(ControlCommand::Leave { id: self.id() })
                        .await
                }
                Some(addr) => self
                    .peers
                    .call(
                        addr,
                        &PeerRequest::Leave { id: self.id() },
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap_or(PeerResponse::NotLeader { leader_addr: None }),
            };
            match answer {
                PeerResponse::Applied => break,
                PeerResponse::Refused { reason } => return Err(fail(reason)),
                PeerResponse::NotLeader { leader_addr } => {
                    target = leader_addr.or_else(|| self.control_leader_addr());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return Err(fail(format!("unexpected answer {other:?}"))),
            }
        }
        tracing::info!("leaving: moving replicas and leadership away");
        while self.report().hosted > 0 {
            if started.elapsed() > deadline {
                return Err(fail(format!(
                    "{} partitions still hosted here",
                    self.report().hosted
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Answers a peer message.
    pub async fn handle_peer(&self, payload: &[u8]) -> Vec<u8> {
        let request = match postcard::from_bytes::<PeerEnvelope>(payload) {
            Ok(envelope) => {
                let joining = matches!(envelope.request, PeerRequest::Join { .. });
                let mine = self.peers.cluster();
                if joining || (mine != 0 && envelope.cluster == mine) {
                    Ok(envelope.request)
                } else {
                    // Another cluster (or a node that has not joined yet) is not answered:
                    // a process restarted at a member's address must not pose as it.
                    return encode(&PeerResponse::NoSuchGroup);
                }
            }
            Err(e) => Err(e),
        };
        let response = match request {
            Err(e) => PeerResponse::Refused {
                reason: format!("undecodable peer message: {e}"),
            },
            Ok(PeerRequest::Ping) => PeerResponse::Pong { id: self.id() },
            Ok(PeerRequest::Join { addr }) => {
                self.control_command(ControlCommand::Join { addr }).await
            }
            Ok(PeerRequest::Leave { id }) => {
                self.control_command(ControlCommand::Leave { id }).await
            }
            Ok(PeerRequest::Release { group, to }) => {
                let listed = self
                    .state()
                    .and_then(|s| s.assignment.get(group as usize).map(|r| r.contains(&to)))
                    .unwrap_or(true);
                if to == self.id() && !listed {
                    self.release_group(group).await;
                }
                PeerResponse::Applied
            }
            Ok(PeerRequest::Elect { group, to }) => {
                match self.group(group).filter(|_| to == self.id()) {
                    Some(g) => match g.raft.trigger().elect().await {
                        Ok(()) => PeerResponse::Applied,
                        Err(e) => PeerResponse::Refused {
                            reason: e.to_string(),
                        },
                    },
                    None => PeerResponse::NoSuchGroup,
                }
            }
            Ok(PeerRequest::Raft { group, to, rpc }) => {
                let raft = if group == CONTROL_GROUP {
                    self.control_raft().cloned()
                } else {
                    self.group(group).map(|g| g.raft.clone())
                };
                // Answer only as the member the message is meant for.
                match raft.filter(|_| to == self.id()) {
                    None => PeerResponse::NoSuchGroup,
                    Some(raft) => match rpc {
                        RaftRpc::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
                        RaftRpc::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
                        RaftRpc::Snapshot(r) => {
                            PeerResponse::Snapshot(raft.install_snapshot(r).await)
                        }
                    },
                }
            }
        };
        encode(&response)
    }

    fn control_leader_addr(&self) -> Option<String> {
        let leader = self.control_raft()?.metrics().borrow().current_leader?;
        self.state()?.addr_of(leader).map(str::to_string)
    }

    /// Runs a control command here if this node leads the control group.
    async fn control_command(&self, command: ControlCommand) -> PeerResponse {
        let Some(raft) = self.control_raft() else {
            return PeerResponse::NotLeader { leader_addr: None };
        };
        let write = tokio::time::timeout(
            MEMBERSHIP_CHANGE_LIMIT,
            raft.client_write(GroupCommand::Control(command)),
        );
        let Ok(written) = write.await else {
            return PeerResponse::Refused {
                reason: format!(
                    "the control group did not commit within {MEMBERSHIP_CHANGE_LIMIT:?}"
                ),
            };
        };
        match written {
            Ok(resp) => match resp.data {
                GroupResponse::Control(ControlResponse::Joined { id, .. }) => {
                    PeerResponse::Joined {
                        id,
                        cluster: self.peers.cluster(),
                    }
                }
                GroupResponse::Control(ControlResponse::Applied { .. }) => PeerResponse::Applied,
                GroupResponse::Control(ControlResponse::Refused { reason }) => {
                    PeerResponse::Refused { reason }
                }
                other => PeerResponse::Refused {
                    reason: format!("unexpected control response {other:?}"),
                },
            },
            Err(e) => match e.forward_to_leader() {
                Some(f) => PeerResponse::NotLeader {
                    leader_addr: f
                        .leader_node
                        .as_ref()
                        .map(|n| n.addr.clone())
                        .or_else(|| self.control_leader_addr()),
                },
                None => PeerResponse::Refused {
                    reason: e.to_string(),
                },
            },
        }
    }

    /// Runs the reconcile and maintenance loops until `shutdown`, then stops every group.
    pub async fn run(self: Arc<Self>, tick: Duration, shutdown: CancellationToken) {
        // Two loops, so a group that cannot commit (no quorum) never holds up moving
        // groups and admitting nodes, and the other way round.
        let reconciler = every(RECONCILE_EVERY, shutdown.clone(), {
            let node = Arc::clone(&self);
            move || {
                let node = Arc::clone(&node);
                async move {
                    node.reconcile().await;
                    let mut tasks = node.tasks.lock().await;
                    while tasks.try_join_next().is_some() {}
                }
            }
        });
        // Each group's housekeeping runs as its own task and is skipped while the last one
        // is still busy (a group without quorum), never cancelled halfway: answers it
        // settles must reach their waiters. The set is dropped, and its tasks aborted, on
        // shutdown.
        let housekeeping = Arc::new(Mutex::new(JoinSet::new()));
        let busy: Arc<Mutex<BTreeSet<GroupId>>> = Arc::default();
        let maintainer = every(tick, shutdown.clone(), {
            let (node, housekeeping, busy) = (
                Arc::clone(&self),
                Arc::clone(&housekeeping),
                Arc::clone(&busy),
            );
            move || {
                let mut tasks = lock(&housekeeping);
                while tasks.try_join_next().is_some() {}
                for g in node.all_groups() {
                    if !lock(&busy).insert(g.id) {
                        continue;
                    }
                    let busy = Arc::clone(&busy);
                    tasks.spawn(async move {
                        g.maintain().await;
                        lock(&busy).remove(&g.id);
                    });
                }
                std::future::ready(())
            }
        });
        tokio::join!(reconciler, maintainer);
        lock(&housekeeping).abort_all();
        self.tasks.lock().await.abort_all();
        for g in self.all_groups() {
            let _ = g.raft.shutdown().await;
        }
        if let Some(raft) = self.control_raft() {
            let _ = raft.shutdown().await;
        }
    }

    async fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().await.spawn(task);
    }

    async fn reconcile(self: &Arc<Self>) {
        self.enforce_memory();
        let Some(state) = self.state() else {
            return;
        };
        let me = self.id();
        if self
            .control_raft()
            .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader)
        {
            if lock(&self.changing).insert(CONTROL_GROUP) {
                let (node, state) = (Arc::clone(self), state.clone());
                self.spawn(async move {
                    node.manage_control_members(&state).await;
                    lock(&node.changing).remove(&CONTROL_GROUP);
                })
                .await;
            }
            self.watch_nodes(&state).await;
        } else {
            // Liveness seen in an earlier term says nothing now.
            lock(&self.last_seen).clear();
        }
        for p in 0..state.partitions {
            let target: BTreeSet<NodeId> = state.assignment[p as usize].iter().copied().collect();
            let hosted = self.group(p);
            if hosted.is_none() && target.contains(&me) {
                if let Err(e) = self.host_group(p).await {
                    tracing::warn!(partition = p, error = %e, "cannot host partition");
                }
                continue;
            }
            let Some(group) = hosted else { continue };
            let membership = group.raft.metrics().borrow().membership_config.clone();
            let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
            if group.is_leader() {
                // A leader that has already committed a membership without itself keeps
                // leading until it steps down; openraft 0.9 must not be asked for another
                // membership change then (it asserts), so only a voting leader moves groups.
                let may_change = voters.contains(&me) && voters != target && !target.is_empty();
                if may_change && lock(&self.changing).insert(p) {
                    let members: BTreeMap<NodeId, String> = target
                        .iter()
                        .filter_map(|id| state.addr_of(*id).map(|a| (*id, a.to_string())))
                        .collect();
                    let removed_addrs: BTreeMap<NodeId, String> = voters
                        .difference(&target)
                        .filter_map(|id| state.addr_of(*id).map(|a| (*id, a.to_string())))
                        .collect();
                    let (changing, peers) = (Arc::clone(&self.changing), Arc::clone(&self.peers));
                    self.spawn(async move {
                        move_group(&group, &peers, voters, members, removed_addrs).await;
                        lock(&changing).remove(&p);
                    })
                    .await;
                } else if voters == target {
                    let preferred = state.assignment[p as usize].first().copied();
                    if let Some(to) = preferred.filter(|to| *to != me) {
                        self.maybe_hand_over(&group, to, &state).await;
                    }
                }
            } else if !target.contains(&me) {
                // The group moved away from this node. Its leader says so when it removes
                // this member (`Release`); the member's own log may never show it, as a
                // leader stops replicating to removed members. As a fallback, a replica the
                // map has not listed for a while goes too.
                // A voter never goes by itself: the group may still count on it (its
                // leader tells it with `Release` once it is out).
                let gone = !membership.membership().nodes().any(|(id, _)| *id == me);
                let since = *lock(&self.unlisted_since)
                    .entry(p)
                    .or_insert_with(Instant::now);
                if gone || (!voters.contains(&me) && since.elapsed() > UNLISTED_GRACE) {
                    self.release_group(p).await;
                }
            } else {
                lock(&self.unlisted_since).remove(&p);
            }
        }
    }

    /// Stops hosting a partition's replica.
    async fn release_group(&self, p: GroupId) {
        let removed = self
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&p);
        lock(&self.unlisted_since).remove(&p);
        if let Some(g) = removed {
            let _ = g.raft.shutdown().await;
            tracing::info!(partition = p, "partition moved away");
        }
    }

    /// Starts handing a group's leadership to its preferred leader (the map's first
    /// replica), so leaders spread as the placement planned. Bounded: a few at a time, and
    /// a group whose hand-over failed waits before the next try.
    async fn maybe_hand_over(
        self: &Arc<Self>,
        group: &Arc<PartitionGroup>,
        to: NodeId,
        state: &ClusterState,
    ) {
        let p = group.id;
        if !caught_up(group, [to].iter()) {
            return;
        }
        if lock(&self.hand_over_after)
            .get(&p)
            .is_some_and(|at| Instant::now() < *at)
        {
            return;
        }
        if self.hand_overs.load(Ordering::Acquire) >= MAX_HAND_OVERS
            || !lock(&self.changing).insert(p)
        {
            return;
        }
        let Some(addr) = state.addr_of(to).map(str::to_string) else {
            lock(&self.changing).remove(&p);
            return;
        };
        self.hand_overs.fetch_add(1, Ordering::AcqRel);
        let (node, group) = (Arc::clone(self), Arc::clone(group));
        let lease = self.config.election_timeout * 2;
        self.spawn(async move {
            let moved = hand_over(&group, &node.peers, to, &addr, lease).await;
            if !moved {
                lock(&node.hand_over_after).insert(p, Instant::now() + HAND_OVER_COOLDOWN);
            }
            tracing::debug!(partition = p, to, moved, "leadership hand-over");
            lock(&node.changing).remove(&p);
            node.hand_overs.fetch_sub(1, Ordering::AcqRel);
        })
        .await;
    }

    /// Control leader: every active node is a member; up to five are voters; down nodes go.
    async fn manage_control_members(&self, state: &ClusterState) {
        let Some(raft) = self.control_raft() else {
            return;
        };
        let membership = raft.metrics().borrow().membership_config.clone();
        let members: BTreeSet<NodeId> =
            membership.membership().nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if !voters.contains(&self.id()) {
            // A leader on its way out (see `reconcile`): leave changes to its successor.
            return;
        }
        let active = state.active_nodes();
        let result: Result<(), String> = async {
            for id in active.difference(&members) {
                tracing::info!(node = id, "adding node to the control group");
                if let Some(addr) = state.addr_of(*id) {
                    bounded(
                        "add control learner",
                        raft.add_learner(*id, BasicNode::new(addr), false),
                    )
                    .await?;
                }
            }
            let mut want: BTreeSet<NodeId> = voters.intersection(&active).copied().collect();
            for id in &active {
                if want.len() >= CONTROL_VOTERS.min(active.len()) {
                    break;
                }
                want.insert(*id);
            }
            if want != voters && !want.is_empty() {
                tracing::info!(?want, ?voters, "changing control voters");
                bounded("change control voters", raft.change_membership(want, false)).await?;
            }
            let gone: BTreeSet<NodeId> = members
                .iter()
                .filter(|id| !active.contains(id))
                .copied()
                .collect();
            if !gone.is_empty() {
                let now = voters_of(raft);
                let removable: BTreeSet<NodeId> = gone.difference(&now).copied().collect();
                if !removable.is_empty() {
                    let remove =
                        raft.change_membership(ChangeMembers::RemoveNodes(removable), false);
                    bounded("remove control members", remove).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::info!(error = %e, "control membership change deferred");
        }
    }

    /// Control leader: pings active nodes and marks those silent past the grace period down.
    async fn watch_nodes(&self, state: &ClusterState) {
        let me = self.id();
        let now = Instant::now();
        let targets: Vec<(NodeId, String)> = state
            .nodes
            .iter()
            .filter(|(id, n)| **id != me && n.state == NodeState::Active)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let pings = targets.iter().map(|(id, addr)| async move {
            let ok = matches!(
                self.peers.call(addr, &PeerRequest::Ping, Duration::from_millis(500)).await,
                Ok(PeerResponse::Pong { id: answered }) if answered == *id
            );
            (*id, ok)
        });
        let results = futures_util::future::join_all(pings).await;
        let mut down = Vec::new();
        {
            let mut seen = lock(&self.last_seen);
            for (id, ok) in results {
                let last = seen.entry(id).or_insert(now);
                if ok {
                    *last = now;
                } else if now.duration_since(*last) > self.config.down_after {
                    down.push(id);
                }
            }
        }
        for id in down {
            tracing::warn!(
                node = id,
                "node unreachable past the grace period; re-placing its partitions"
            );
            if let Some(raft) = self.control_raft() {
                let mark =
                    raft.client_write(GroupCommand::Control(ControlCommand::MarkDown { id }));
                let _ = bounded("mark down", mark).await;
            }
            lock(&self.last_seen).remove(&id);
        }
    }
}

/// Runs `round` every `period` until `shutdown`; a slow round delays the next one.
pub(crate) async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = round() => {}
                }
            }
        }
    }
}

/// The voters of a group's current membership, as this node sees it.
fn voters_of(raft: &GroupRaft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// A random id, from the standard library's per-process random hash keys and the clock.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish().max(1)
}

/// Longest a membership change may take before it is retried on a later round.
const MEMBERSHIP_CHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Awaits a membership call, giving up after [`MEMBERSHIP_CHANGE_LIMIT`].
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(MEMBERSHIP_CHANGE_LIMIT, call).await {
        Ok(result) => result.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {MEMBERSHIP_CHANGE_LIMIT:?}"
        )),
    }
}

/// True when the leader sees the logs of `members` close to its own.
fn caught_up<'a>(group: &PartitionGroup, mut members: impl Iterator<Item = &'a NodeId>) -> bool {
    let metrics = group.raft.metrics();
    let m = metrics.borrow();
    let last = m.last_log_index.unwrap_or(0);
    members.all(|id| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten())
            .is_some_and(|matched| matched.index + CAUGHT_UP_ENTRIES >= last)
    })
}

/// Waits (up to `limit`) until another node is known to lead the group.
async fn successor_known(group: &PartitionGroup, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !group.is_leader() && group.leader().is_some_and(|l| l != group.me()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Hands a group's leadership to `to` (openraft 0.9 has no transfer): drain, stop
/// heartbeats until the followers' leader lease lapses, then ask `to` to stand. Requests
/// held meanwhile are redirected to the new leader afterwards.
async fn hand_over(
    group: &PartitionGroup,
    peers: &Peers,
    to: NodeId,
    addr: &str,
    lease: Duration,
) -> bool {
    if !group.drain(DRAIN_LIMIT).await {
        group.undrain();
        return false;
    }
    group.raft.runtime_config().heartbeat(false);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let elect = PeerRequest::Elect {
        group: group.id,
        to,
    };
    let asked = matches!(
        peers.call(addr, &elect, Duration::from_secs(2)).await,
        Ok(PeerResponse::Applied)
    );
    let moved = asked && successor_known(group, lease * 2).await;
    group.raft.runtime_config().heartbeat(true);
    group.undrain();
    moved
}

/// Moves a group's voters to `target`: new members join as learners and catch up first,
/// then one membership change swaps the voters.
async fn move_group(
    group: &PartitionGroup,
    peers: &Peers,
    voters: BTreeSet<NodeId>,
    target: BTreeMap<NodeId, String>,
    removed_addrs: BTreeMap<NodeId, String>,
) {
    for (id, addr) in &target {
        if voters.contains(id) {
            continue;
        }
        let added = tokio::time::timeout(
            Duration::from_secs(30),
            group.raft.add_learner(*id, BasicNode::new(addr), true),
        )
        .await;
        match added {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(partition = group.id, node = id, error = %e, "add learner deferred");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    partition = group.id,
                    node = id,
                    "learner catch-up timed out; will retry"
                );
                return;
            }
        }
    }
    // A voter that has not caught up could leave the group without a quorum; wait for the
    // leader to see every newcomer's log close to its own.
    if !caught_up(group, target.keys().filter(|id| !voters.contains(id))) {
        tracing::debug!(partition = group.id, "new replicas still catching up");
        return;
    }
    let ids: BTreeSet<NodeId> = target.keys().copied().collect();
    let leaving = !ids.contains(&group.me());
    if leaving && !group.drain(DRAIN_LIMIT).await {
        group.undrain();
        tracing::debug!(
            partition = group.id,
            "writes still in flight; hand-over deferred"
        );
        return;
    }
    let changed = bounded(
        "change voters",
        group.raft.change_membership(ids.clone(), false),
    )
    .await;
    if changed.is_ok() {
        for gone in voters.difference(&ids) {
            if let Some(addr) = removed_addrs.get(gone) {
                let release = PeerRequest::Release {
                    group: group.id,
                    to: *gone,
                };
                let _ = peers.call(addr, &release, Duration::from_secs(2)).await;
            }
        }
    }
    if leaving {
        // Held requests go to the successor as soon as it is known.
        if changed.is_ok() {
            successor_known(group, Duration::from_secs(5)).await;
        }
        group.undrain();
    }
    match changed {
        Ok(_) => {
            tracing::info!(partition = group.id, voters = ?target.keys().collect::<Vec<_>>(), "partition moved")
        }
        Err(e) => tracing::info!(partition = group.id, error = %e, "membership change deferred"),
    }
}
