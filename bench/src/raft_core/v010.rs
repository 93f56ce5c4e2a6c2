//! openraft 0.10.0-alpha.37 in one process: [`Core010`]. Its network is the v2 trait
//! (whole snapshots, no chunks); its state machine's snapshot type is its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use futures_util::{Stream, TryStreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, EntryPayload, OptionalSend, RaftNetworkV2, ReadPolicy, SnapshotPolicy};
use openraft010 as openraft;

use super::{Kv, Put, ReadMode, Shape};

/// The bench's types for 0.10: the macro's defaults, but a one-shot answer per write as in
/// 0.9 (the default responder reports every stage of a write).
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct Types;

type LeaderId = openraft::vote::leader_id_adv::LeaderId<u64, u64>;

impl openraft::RaftTypeConfig for Types {
    type D = Put;
    type R = ();
    type NodeId = u64;
    type Node = BasicNode;
    type Term = u64;
    type LeaderId = LeaderId;
    type Vote = openraft::impls::Vote<LeaderId>;
    type Payload = EntryPayload<Put, u64, BasicNode>;
    type Entry = openraft::Entry<<LeaderId as RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = openraft::impls::OneshotResponder<Self, T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

type Raft = openraft::Raft<Types, MemSm>;
type Data = Cursor<Vec<u8>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct LogInner {
    last_purged: Option<LogIdOf<Types>>,
    log: BTreeMap<u64, EntryOf<Types>>,
    committed: Option<LogIdOf<Types>>,
    vote: Option<VoteOf<Types>>,
}

/// A replica's log and vote.
#[derive(Debug, Clone, Default)]
struct MemLog(Arc<Mutex<LogInner>>);

impl RaftLogReader<Types> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<Types>>, io::Error> {
        Ok(lock(&self.0)
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Types>>, io::Error> {
        Ok(lock(&self.0).vote)
    }
}

impl RaftLogStorage<Types> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, io::Error> {
        let inner = lock(&self.0);
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Types>) -> Result<(), io::Error> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, c: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        lock(&self.0).committed = c;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<Types>>, io::Error> {
        Ok(lock(&self.0).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Types>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<Types>> + OptionalSend,
    {
        lock(&self.0)
            .log
            .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<Types>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index + 1);
        lock(&self.0).log.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<Types>) -> Result<(), io::Error> {
        let mut inner = lock(&self.0);
        inner.last_purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct SmInner {
    last_applied: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
    kv: Kv,
    snapshot: Option<(SnapshotMetaOf<Types>, Vec<u8>)>,
}

/// A replica's state machine.
#[derive(Debug, Clone, Default)]
pub struct MemSm(Arc<Mutex<SmInner>>);

impl RaftSnapshotBuilder<Types> for MemSm {
    type SnapshotData = Data;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Data>, io::Error> {
        let mut inner = lock(&self.0);
        let bytes = inner.kv.encode().map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Types> {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(SnapshotOf::<Types, Data> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<Types> for MemSm {
    type SnapshotData = Data;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let inner = lock(&self.0);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut inner = lock(&self.0);
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(put) => inner.kv.apply(&put),
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembershipOf::<Types>::new(Some(entry.log_id), m)
                    }
                }
            }
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Types>,
        snapshot: Data,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let kv = Kv::decode(&bytes).map_err(io::Error::other)?;
        let mut inner = lock(&self.0);
        inner.kv = kv;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Types, Data>>, io::Error> {
        Ok(lock(&self.0)
            .snapshot
            .clone()
            .map(|(meta, bytes)| SnapshotOf::<Types, Data> {
                meta,
                snapshot: Cursor::new(bytes),
            }))
    }
}

/// Every replica of every group, by (group, node id).
type Router = Arc<RwLock<HashMap<(usize, u64), Raft>>>;

/// One replica's way to its group's other replicas.
struct Factory {
    router: Router,
    group: usize,
}

/// A direct line to one replica.
struct Link {
    raft: Option<Raft>,
}

impl RaftNetworkFactory<Types> for Factory {
    type Network = Link;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Link {
        let routes = self.router.read().unwrap_or_else(|p| p.into_inner());
        Link {
            raft: routes.get(&(self.group, target)).cloned(),
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<Types> {
    Unreachable::new(&io::Error::other(e.to_string()))
}

impl Link {
    fn raft(&self) -> Result<&Raft, Unreachable<Types>> {
        self.raft
            .as_ref()
            .ok_or_else(|| unreachable("no such replica"))
    }
}

impl RaftNetworkV2<Types> for Link {
    type SnapshotData = Data;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Types>,
        snapshot: SnapshotOf<Types, Data>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        let raft = self.raft()?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))
    }
}

/// openraft 0.10's cluster.
pub struct Core010 {
    /// Every replica, by (group, node id).
    replicas: Vec<(usize, u64, Raft)>,
    /// Each group's leader.
    leaders: Vec<Raft>,
}

impl std::fmt::Debug for Core010 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core010")
            .field("groups", &self.leaders.len())
            .finish_non_exhaustive()
    }
}

impl super::Core for Core010 {
    const NAME: &'static str = "0.10.0-alpha.37";

    async fn start(shape: Shape) -> anyhow::Result<Self> {
        let config = Arc::new(
            openraft::Config {
                heartbeat_interval: shape.heartbeat.as_millis() as u64,
                election_timeout_min: shape.election.as_millis() as u64,
                election_timeout_max: 2 * shape.election.as_millis() as u64,
                max_payload_entries: 64,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(shape.snapshot_logs),
                max_in_snapshot_log_to_keep: shape.snapshot_logs,
                ..Default::default()
            }
            .validate()?,
        );
        let router = Router::default();
        let mut replicas = Vec::new();
        for group in 0..shape.groups {
            for id in super::NODES {
                let factory = Factory {
                    router: Arc::clone(&router),
                    group,
                };
                let raft = Raft::new(
                    id,
                    Arc::clone(&config),
                    factory,
                    MemLog::default(),
                    MemSm::default(),
                )
                .await?;
                router
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((group, id), raft.clone());
                replicas.push((group, id, raft));
            }
        }
        let members: BTreeMap<u64, BasicNode> = super::NODES
            .into_iter()
            .map(|id| (id, BasicNode::default()))
            .collect();
        let mut leaders = Vec::new();
        for group in 0..shape.groups {
            let replica = |id: u64| super::replica(&replicas, group, id);
            let first = replica(super::first_of(group))?;
            first.initialize(members.clone()).await?;
            let metrics = first
                .wait(Some(Duration::from_secs(30)))
                .metrics(|m| m.current_leader.is_some(), "a leader")
                .await?;
            let id = metrics.current_leader.context("no leader")?;
            let leader = replica(id)?;
            // Leading in its own eyes, with its term's first entry applied: before that a
            // write may be turned away.
            leader
                .wait(Some(Duration::from_secs(30)))
                .metrics(
                    |m| {
                        m.state == openraft::ServerState::Leader
                            && m.current_leader == Some(id)
                            && m.last_applied
                                .is_some_and(|a| Some(a.index) >= m.last_log_index)
                    },
                    "the leader ready",
                )
                .await?;
            leaders.push(leader);
        }
        Ok(Self { replicas, leaders })
    }

    async fn write(&self, group: usize, put: Put) -> anyhow::Result<()> {
        self.leaders[group].client_write(put).await?;
        Ok(())
    }

    fn offers(_mode: ReadMode) -> bool {
        true
    }

    async fn read(&self, group: usize, mode: ReadMode) -> anyhow::Result<()> {
        let leader = &self.leaders[group];
        // A lease that has lapsed (no quorum heard from lately) fails the lease read at
        // once; like the grid's, it then falls back to a read index.
        if mode == ReadMode::Lease
            && leader
                .ensure_linearizable(ReadPolicy::LeaseRead)
                .await
                .is_ok()
        {
            return Ok(());
        }
        leader.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        Ok(())
    }

    async fn stop(self) {
        for (_, _, raft) in self.replicas {
            let _ = raft.shutdown().await;
        }
    }
}
