//! The Raft log (and vote) of one group. Shared by the group's core and its replication
//! tasks through an `Arc`. Entries are always held in memory, where reads find them.
//!
//! Without a data directory that is all: a node that restarts comes back empty and
//! rejoins under a new node id, so it never votes twice in a term it has forgotten. With
//! one, every change also goes to the group's files ([`super::durable`]): an append
//! counts as stored once the disk writer says so (synced first under `--fsync always`),
//! a vote, a truncation and a purge once they are on disk. The log counts the value
//! bytes its entries carry, so the node's memory limit sees them (they stay until a
//! snapshot lets the log be purged).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, EntryPayload, LogId, RaftLogId, StorageError, StorageIOError, Vote};
use tokio::sync::Mutex;

use super::durable::{GroupFiles, OpenedGroup};
use super::raft_types::{GroupCommand, NodeId, TypeConfig};

#[derive(Debug, Default)]
struct Inner {
    last_purged: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// A group's log.
#[derive(Debug, Clone, Default)]
pub struct GroupLog {
    inner: Arc<Mutex<Inner>>,
    /// Value bytes carried by the entries held now.
    bytes: Arc<AtomicU64>,
    /// Its files, with a data directory.
    disk: Option<Arc<GroupFiles>>,
}

fn disk_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl GroupLog {
    /// A log kept in `files` too, starting empty.
    pub fn on_disk(files: Arc<GroupFiles>) -> Self {
        Self {
            disk: Some(files),
            ..Self::default()
        }
    }

    /// The log a group found on disk had.
    pub fn reopened(opened: &mut OpenedGroup) -> Self {
        let log: BTreeMap<u64, Entry<TypeConfig>> = std::mem::take(&mut opened.entries)
            .into_iter()
            .map(|e| (e.log_id.index, e))
            .collect();
        let bytes: u64 = log.values().map(entry_bytes).sum();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                last_purged: opened.purged,
                log,
                committed: None,
                vote: opened.vote,
            })),
            bytes: Arc::new(AtomicU64::new(bytes)),
            disk: Some(Arc::clone(&opened.files)),
        }
    }

    /// A counter of the value bytes in the log, readable without locking it.
    pub fn bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes)
    }

    fn hold(&self, inner: &mut Inner, entry: Entry<TypeConfig>) {
        self.bytes.fetch_add(entry_bytes(&entry), Ordering::Relaxed);
        if let Some(replaced) = inner.log.insert(entry.log_id.index, entry) {
            self.bytes
                .fetch_sub(entry_bytes(&replaced), Ordering::Relaxed);
        }
    }

    fn forget(&self, removed: &BTreeMap<u64, Entry<TypeConfig>>) {
        let gone: u64 = removed.values().map(entry_bytes).sum();
        self.bytes.fetch_sub(gone, Ordering::Relaxed);
    }
}

/// The value bytes an entry carries (client values and imported objects).
fn entry_bytes(entry: &Entry<TypeConfig>) -> u64 {
    match &entry.payload {
        EntryPayload::Normal(GroupCommand::Partition { cmd, .. }) => cmd.value_bytes() as u64,
        _ => 0,
    }
}

impl RaftLogReader<TypeConfig> for GroupLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .inner
            .lock()
            .await
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for GroupLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if let Some(disk) = &self.disk {
            disk.save_vote(*vote).await.map_err(|e| {
                StorageError::from(StorageIOError::write_vote(&std::io::Error::other(
                    e.to_string(),
                )))
            })?;
        }
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let Some(disk) = &self.disk else {
            for entry in entries {
                self.hold(&mut inner, entry);
            }
            // Memory is the medium: the entries are "flushed" now. The core waits for this.
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // Queued under the lock, so the files get appends in the log's order. The core
        // counts the entries as stored when the writer says so.
        disk.append(
            &entries,
            Box::new(move |result| callback.log_io_completed(result)),
        );
        for entry in entries {
            self.hold(&mut inner, entry);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if let Some(disk) = &self.disk {
            disk.truncate(log_id.index).await.map_err(disk_err)?;
        }
        let removed = inner.log.split_off(&log_id.index);
        self.forget(&removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        if let Some(disk) = &self.disk {
            disk.purge(log_id).await.map_err(disk_err)?;
        }
        inner.last_purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        let removed = std::mem::replace(&mut inner.log, keep);
        self.forget(&removed);
        Ok(())
    }
}
