//! The state machine behind every group: a partition or the control state, plus what Raft
//! needs around it (last applied log id, membership, whether a snapshot exists).
//!
//! A snapshot is not kept as bytes beside the state: that would hold every value twice.
//! The state itself is the snapshot. Building one only records where it stands (Raft
//! keeps nothing of a built snapshot but its metadata, and purges the log it covers), so
//! it costs nothing and can happen every few dozen entries; its bytes are encoded only
//! when a follower needs them, from the state as applied at that moment, which is a
//! snapshot at least as new as the last one built.
//!
//! With a data directory a built snapshot is also written to the group's snapshot file
//! before Raft purges the log it covers (so it is built far less often: see
//! `runtime/snapshots.rs`), and one installed from the leader is written before it
//! replaces the state. A restart starts from that file and applies the log after it.
//!
//! The state sits behind a `std` read-write lock that is never held across an `.await`,
//! so the leader's lock-free reads and the ticker can look at it directly.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use grid_proto::sync::{read, write};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{Entry, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::control::ClusterState;
use super::durable::GroupFiles;
use super::raft_types::{GroupCommand, GroupResponse, Member, NodeId, TypeConfig};
use crate::format::{CONTROL_SNAPSHOT, GROUP_SNAPSHOT};
use crate::partition::{Partition, PartitionConfig};

/// What a group replicates.
#[derive(Debug, Clone)]
pub enum Machine {
    /// A partition's objects, lock waiters and pending events (boxed: far larger than
    /// the control state).
    Partition(Box<Partition>),
    /// The cluster's membership and partition map.
    Control(ClusterState),
}

/// The state plus Raft's bookkeeping.
#[derive(Debug)]
pub struct SmState {
    /// Last entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// Membership as of the last applied membership entry.
    pub last_membership: StoredMembership<NodeId, Member>,
    /// The replicated state.
    pub machine: Machine,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
    #[serde(with = "serde_bytes")]
    machine: Vec<u8>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<SmState>,
    /// Whether a snapshot was built or installed: until then Raft has purged nothing
    /// and none is offered.
    has_snapshot: AtomicBool,
    partition_config: PartitionConfig,
    snapshots_built: AtomicU64,
    /// The group's files, with a data directory.
    files: Option<Arc<GroupFiles>>,
}

/// A group's state machine; clones share it.
#[derive(Debug, Clone)]
pub struct GroupSm(Arc<Inner>);

fn storage_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl GroupSm {
    /// A state machine starting from `machine`.
    pub fn new(machine: Machine, partition_config: PartitionConfig) -> Self {
        Self::with_files(machine, partition_config, None)
    }

    /// A state machine starting from `machine`, its snapshots kept in `files`.
    pub fn with_files(
        machine: Machine,
        partition_config: PartitionConfig,
        files: Option<Arc<GroupFiles>>,
    ) -> Self {
        Self(Arc::new(Inner {
            state: RwLock::new(SmState {
                last_applied: None,
                last_membership: StoredMembership::default(),
                machine,
            }),
            has_snapshot: AtomicBool::new(false),
            partition_config,
            snapshots_built: AtomicU64::new(0),
            files,
        }))
    }

    /// Starts from a snapshot file's bytes (a restart).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let restored = self.decode(bytes).map_err(|e| e.to_string())?;
        *self.write() = restored;
        self.0.has_snapshot.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads the state. Do not hold across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        read(&self.0.state)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmState> {
        write(&self.0.state)
    }

    fn encode(state: &SmState) -> Vec<u8> {
        let machine = match &state.machine {
            Machine::Partition(p) => p.snapshot(),
            Machine::Control(c) => CONTROL_SNAPSHOT.encode(c),
        };
        let file = SnapshotFile {
            last_applied: state.last_applied,
            last_membership: state.last_membership.clone(),
            machine,
        };
        GROUP_SNAPSHOT.encode(&file)
    }

    #[allow(clippy::result_large_err)] // reason: openraft's storage error type, returned as is
    fn decode(&self, bytes: &[u8]) -> Result<SmState, StorageError<NodeId>> {
        let file: SnapshotFile = GROUP_SNAPSHOT.decode(bytes).map_err(storage_err)?;
        let machine = match &self.read().machine {
            Machine::Partition(_) => Machine::Partition(Box::new(
                Partition::restore(self.0.partition_config, &file.machine).map_err(storage_err)?,
            )),
            Machine::Control(_) => Machine::Control(
                CONTROL_SNAPSHOT
                    .decode(&file.machine)
                    .map_err(storage_err)?,
            ),
        };
        Ok(SmState {
            last_applied: file.last_applied,
            last_membership: file.last_membership,
            machine,
        })
    }
}

impl GroupSm {
    /// A snapshot of the state as applied now, its bytes encoded if `with_bytes`.
    fn snapshot_now(&self, with_bytes: bool) -> Snapshot<TypeConfig> {
        let (bytes, last_log_id, last_membership) = {
            let state = self.read();
            (
                if with_bytes {
                    Self::encode(&state)
                } else {
                    Vec::new()
                },
                state.last_applied,
                state.last_membership.clone(),
            )
        };
        let n = self.0.snapshots_built.fetch_add(1, Ordering::Relaxed);
        Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id: format!("{}-{n}", last_log_id.map_or(0, |l| l.index)),
            },
            snapshot: Box::new(Cursor::new(bytes)),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for GroupSm {
    /// Raft takes only the metadata of a built snapshot (the bytes would be dropped), so
    /// none are encoded: [`RaftStateMachine::get_current_snapshot`] encodes them when a
    /// follower needs them.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let Some(files) = &self.0.files else {
            let snapshot = self.snapshot_now(false);
            self.0.has_snapshot.store(true, Ordering::Release);
            return Ok(snapshot);
        };
        let mut snapshot = self.snapshot_now(true);
        let bytes = std::mem::take(snapshot.snapshot.get_mut());
        files.save_snapshot(bytes).await.map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                &std::io::Error::other(e.to_string()),
            ))
        })?;
        self.0.has_snapshot.store(true, Ordering::Release);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        let state = self.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<GroupResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.write();
        let mut out = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => GroupResponse::None,
                EntryPayload::Membership(m) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    GroupResponse::None
                }
                EntryPayload::Normal(command) => match (&mut state.machine, command) {
                    (Machine::Partition(p), GroupCommand::Partition { now, cmd }) => {
                        GroupResponse::Partition(p.apply(&cmd, now))
                    }
                    (Machine::Control(c), GroupCommand::Control(cmd)) => {
                        GroupResponse::Control(c.apply(cmd))
                    }
                    // A command for the other kind of group cannot be proposed (each group
                    // handle only proposes its own kind); answer nothing rather than panic.
                    _ => GroupResponse::None,
                },
            };
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let mut installed = self.decode(&bytes)?;
        installed.last_applied = meta.last_log_id;
        installed.last_membership = meta.last_membership.clone();
        if let Some(files) = &self.0.files {
            files.save_snapshot(bytes).await.map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(
                    Some(meta.signature()),
                    &std::io::Error::other(e.to_string()),
                ))
            })?;
        }
        *self.write() = installed;
        self.0.has_snapshot.store(true, Ordering::Release);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .0
            .has_snapshot
            .load(Ordering::Acquire)
            .then(|| self.snapshot_now(true)))
    }
}
