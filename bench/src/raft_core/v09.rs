//! openraft 0.9 (the grid's version) in one process: [`Core09`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{
    LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot, SnapshotMeta,
};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogId, SnapshotPolicy, StorageError, StorageIOError,
    StoredMembership, Vote,
};

use super::{Kv, Put, ReadMode, Shape};

openraft::declare_raft_types!(
    /// The bench's types for 0.9.
    pub Types: D = Put, R = (), NodeId = u64, Node = BasicNode, SnapshotData = Cursor<Vec<u8>>,
);

type Raft = openraft::Raft<Types>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn storage_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

#[derive(Debug, Default)]
struct LogInner {
    last_purged: Option<LogId<u64>>,
    log: BTreeMap<u64, Entry<Types>>,
    committed: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
}

/// A replica's log and vote.
#[derive(Debug, Clone, Default)]
struct MemLog(Arc<Mutex<LogInner>>);

impl RaftLogReader<Types> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Types>>, StorageError<u64>> {
        Ok(lock(&self.0)
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<Types> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<u64>> {
        let inner = lock(&self.0);
        let last = inner.log.values().next_back().map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(lock(&self.0).vote)
    }

    async fn save_committed(&mut self, c: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        lock(&self.0).committed = c;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(lock(&self.0).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Types>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
        I::IntoIter: Send,
    {
        lock(&self.0)
            .log
            .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.0).log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = lock(&self.0);
        inner.last_purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct SmInner {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    kv: Kv,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

/// A replica's state machine.
#[derive(Debug, Clone, Default)]
struct MemSm(Arc<Mutex<SmInner>>);

impl RaftSnapshotBuilder<Types> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<u64>> {
        let mut inner = lock(&self.0);
        let bytes = inner.kv.encode().map_err(storage_err)?;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!("{:?}", inner.last_applied),
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<Types> for MemSm {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = lock(&self.0);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = lock(&self.0);
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(put) => inner.kv.apply(&put),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let kv = Kv::decode(&bytes).map_err(storage_err)?;
        let mut inner = lock(&self.0);
        inner.kv = kv;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<u64>> {
        Ok(lock(&self.0)
            .snapshot
            .clone()
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
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
    target: u64,
    raft: Option<Raft>,
}

impl RaftNetworkFactory<Types> for Factory {
    type Network = Link;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Link {
        let routes = self.router.read().unwrap_or_else(|p| p.into_inner());
        Link {
            target,
            raft: routes.get(&(self.group, target)).cloned(),
        }
    }
}

impl Link {
    fn raft(&self) -> Result<&Raft, Unreachable> {
        self.raft
            .as_ref()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("no such replica")))
    }
}

impl RaftNetwork<Types> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft().map_err(RPCError::Unreachable)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Types>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.raft().map_err(RPCError::Unreachable)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft().map_err(RPCError::Unreachable)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// openraft 0.9's cluster.
pub struct Core09 {
    /// Every replica, by (group, node id).
    replicas: Vec<(usize, u64, Raft)>,
    /// Each group's leader.
    leaders: Vec<Raft>,
}

impl std::fmt::Debug for Core09 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core09")
            .field("groups", &self.leaders.len())
            .finish_non_exhaustive()
    }
}

impl super::Core for Core09 {
    const NAME: &'static str = "0.9.25";

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
        let members: BTreeSet<u64> = super::NODES.into_iter().collect();
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

    fn offers(mode: ReadMode) -> bool {
        mode == ReadMode::ReadIndex
    }

    async fn read(&self, group: usize, mode: ReadMode) -> anyhow::Result<()> {
        anyhow::ensure!(mode == ReadMode::ReadIndex, "0.9 has no lease read");
        self.leaders[group].ensure_linearizable().await?;
        Ok(())
    }

    async fn stop(self) {
        for (_, _, raft) in self.replicas {
            let _ = raft.shutdown().await;
        }
    }
}
