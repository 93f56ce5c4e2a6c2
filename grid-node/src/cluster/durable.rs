//! A node's data directory (`--data-dir`): its identity, and each hosted group's Raft
//! log, vote and last snapshot, so a node restarted with it comes back as the same member
//! and catches up from its own log.
//!
//! ```text
//! DIR/identity             node id and cluster id (a state file)
//! DIR/groups/control/      the control group
//! DIR/groups/p00017/       partition 17
//!     log/*.seg            entries (disk/segments.rs), each a LOG_ENTRY
//!     vote                 the vote (a state file, synced before Raft goes on)
//!     purged               the last log id purged (entries up to it are skipped)
//!     snapshot             the state as of its last applied entry (GROUP_SNAPSHOT)
//! DIR/running              the boot of the machine a node started in; removed on a
//!                          clean stop
//! ```
//!
//! Every file is checksummed and versioned. Log I/O runs on the node's disk writer
//! thread (`disk/writer.rs`), in order; a snapshot file is written whole beside the old
//! one and renamed over it. What a restart does with damage found here is
//! `runtime/restart.rs`'s to decide.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::raft_types::{GroupId, NodeId, TypeConfig, CONTROL_GROUP};
use crate::disk::state_file::{self, StateFileError, StateKind};
use crate::disk::writer::{DiskWriter, SharedLog};
use crate::disk::{space, DiskError, FsyncPolicy, SegmentLog};
use crate::format::{FormatError, DISK_RECORD, LOG_ENTRY, LOG_ENTRY_V1};

/// Log segments roll over at this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const IDENTITY: StateKind = StateKind {
    name: "node identity",
    version: 1,
};
const VOTE: StateKind = StateKind {
    name: "raft vote",
    version: 1,
};
const PURGED: StateKind = StateKind {
    name: "purged log id",
    version: 1,
};
const SNAPSHOT: StateKind = StateKind {
    name: "group snapshot",
    version: 1,
};
const RUNNING: StateKind = StateKind {
    name: "running since boot",
    version: 1,
};

/// This boot of the machine (empty where the system does not say).
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A data directory that cannot be used.
#[derive(Debug, Error)]
pub enum DurableError {
    /// A state file is damaged, foreign or of another version.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// A log directory cannot be read or written.
    #[error(transparent)]
    Log(#[from] DiskError),
    /// A record passed its checksum but does not decode.
    #[error("{}: {source}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        source: FormatError,
    },
    /// The directory itself.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Who this node is in its cluster, kept so a restart comes back as the same member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its node id.
    pub node_id: NodeId,
    /// The cluster it belongs to.
    pub cluster_id: u64,
}

/// A node's data directory and its disk writer.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    policy: FsyncPolicy,
    writer: DiskWriter,
    /// Free space under which writes are refused (`--disk-reserve`).
    reserve: u64,
    /// Free space as last measured.
    free: AtomicU64,
}

/// The files of one hosted group.
#[derive(Debug)]
pub struct GroupFiles {
    dir: PathBuf,
    log: SharedLog,
    writer: DiskWriter,
}

/// A group as found on disk.
#[derive(Debug)]
pub struct OpenedGroup {
    /// Its files, to go on writing.
    pub files: Arc<GroupFiles>,
    /// Entries after the purged one, in order.
    pub entries: Vec<Entry<TypeConfig>>,
    /// The vote.
    pub vote: Option<Vote<NodeId>>,
    /// The last log id purged.
    pub purged: Option<LogId<NodeId>>,
    /// The snapshot's bytes, checksum verified; why not, if the file is damaged.
    pub snapshot: Result<Option<Vec<u8>>, String>,
    /// Damage cut from the log's tail.
    pub cut: Option<crate::disk::Cut>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DurableError + '_ {
    move |source| DurableError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn group_dir_name(group: GroupId) -> String {
    if group == CONTROL_GROUP {
        "control".into()
    } else {
        format!("p{group:05}")
    }
}

fn group_of_dir_name(name: &str) -> Option<GroupId> {
    if name == "control" {
        return Some(CONTROL_GROUP);
    }
    let digits = name.strip_prefix('p')?;
    (digits.len() == 5 || digits.len() > 5 && !digits.starts_with('0'))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|g| *g != CONTROL_GROUP)
}

fn read_record<T: serde::de::DeserializeOwned>(
    kind: StateKind,
    path: &Path,
) -> Result<Option<T>, DurableError> {
    let Some(body) = state_file::read(kind, path)? else {
        return Ok(None);
    };
    DISK_RECORD
        .decode(&body)
        .map(Some)
        .map_err(|source| DurableError::Record {
            path: path.to_path_buf(),
            source,
        })
}

impl DataDir {
    /// Opens (creating it if missing) the directory at `root` and starts its writer.
    /// Writes are refused while free space is under `reserve`.
    pub fn open(root: &Path, policy: FsyncPolicy, reserve: u64) -> Result<Self, DurableError> {
        let groups = root.join("groups");
        fs::create_dir_all(&groups).map_err(io_err(&groups))?;
        let writer = DiskWriter::start(policy).map_err(io_err(root))?;
        let data = Self {
            root: root.to_path_buf(),
            policy,
            writer,
            reserve,
            free: AtomicU64::new(u64::MAX),
        };
        data.measure_free().map_err(io_err(root))?;
        Ok(data)
    }

    /// Measures the free space again.
    pub fn measure_free(&self) -> std::io::Result<u64> {
        let free = space::free_bytes(&self.root)?;
        self.free.store(free, Ordering::Relaxed);
        Ok(free)
    }

    /// `(free, reserve)` while free space is under the reserve: writes that add data
    /// are refused.
    pub fn short_of_space(&self) -> Option<(u64, u64)> {
        let free = self.free.load(Ordering::Relaxed);
        space::too_full(free, self.reserve).then_some((free, self.reserve))
    }

    /// Whether a snapshot file of about `bytes` fits, leaving half the reserve.
    pub fn room_for_snapshot(&self, bytes: u64) -> bool {
        space::room_for_snapshot(self.free.load(Ordering::Relaxed), self.reserve, bytes)
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// The identity kept, if this directory has served a node before.
    pub fn identity(&self) -> Result<Option<Identity>, DurableError> {
        read_record(IDENTITY, &self.root.join("identity"))
    }

    /// Forgets the identity and every group (a node that joins again as a new member).
    pub async fn forget_all(&self) -> Result<(), DurableError> {
        let path = self.root.join("identity");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(DurableError::Io { path, source: e })
            }
            _ => {}
        }
        self.clear_groups().await
    }

    /// Records that a node runs on this directory since this boot of the machine; `None`
    /// if the last node to use it stopped cleanly, else the boot it started in (a
    /// different one means the machine went down under it, taking what the kernel had
    /// not yet written).
    pub fn mark_running(&self) -> Result<Option<String>, DurableError> {
        let path = self.root.join("running");
        let before = read_record::<String>(RUNNING, &path)?;
        state_file::write(RUNNING, &path, &DISK_RECORD.encode(&boot_id()))?;
        Ok(before)
    }

    /// Records a clean stop (every append synced first).
    pub async fn mark_stopped(&self) {
        self.writer.flush().await;
        let path = self.root.join("running");
        if let Err(e) =
            fs::remove_file(&path).and_then(|()| crate::disk::segments::sync_dir(&self.root))
        {
            tracing::warn!(path = %path.display(), error = %e, "could not record a clean stop");
        }
    }

    /// Keeps `identity` (durably).
    pub fn save_identity(&self, identity: &Identity) -> Result<(), DurableError> {
        let body = DISK_RECORD.encode(identity);
        Ok(state_file::write(
            IDENTITY,
            &self.root.join("identity"),
            &body,
        )?)
    }

    fn groups_dir(&self) -> PathBuf {
        self.root.join("groups")
    }

    /// The groups kept here, the control group among them.
    pub fn groups(&self) -> Result<Vec<GroupId>, DurableError> {
        let dir = self.groups_dir();
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            match name.to_str().and_then(group_of_dir_name) {
                Some(g) => found.push(g),
                None => {
                    tracing::warn!(path = %entry.path().display(), "not a group of this data directory; left alone")
                }
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Removes every group's files (a directory without an identity: a start that never
    /// finished joining).
    pub async fn clear_groups(&self) -> Result<(), DurableError> {
        for g in self.groups()? {
            self.remove_group(g).await?;
        }
        Ok(())
    }

    /// Fresh files for a group this node starts hosting (any left from before removed).
    pub async fn create_group(&self, group: GroupId) -> Result<Arc<GroupFiles>, DurableError> {
        self.remove_group(group).await?;
        self.open_group(group).await.map(|opened| opened.files)
    }

    /// Removes a group's files, after every write already queued for them.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), DurableError> {
        let dir = self.groups_dir().join(group_dir_name(group));
        let parent = self.groups_dir();
        self.writer
            .run(move || {
                let gone = match fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => crate::disk::segments::sync_dir(&parent),
                };
                gone.map_err(|source| DiskError::Io { path: dir, source })
            })
            .await?;
        Ok(())
    }

    /// Opens a group's files as a restart finds them: damage at the log's tail cut away
    /// (and logged), entries up to the purged one skipped.
    pub async fn open_group(&self, group: GroupId) -> Result<OpenedGroup, DurableError> {
        let dir = self.groups_dir().join(group_dir_name(group));
        let log_dir = dir.join("log");
        let recovered = self
            .writer
            .run(move || SegmentLog::open(&log_dir, SEGMENT_BYTES))
            .await?;
        let vote: Option<Vote<NodeId>> = read_record(VOTE, &dir.join("vote"))?;
        let purged: Option<LogId<NodeId>> = read_record(PURGED, &dir.join("purged"))?;
        let snapshot = match state_file::read(SNAPSHOT, &dir.join("snapshot")) {
            Err(e @ StateFileError::Damaged { .. }) => Err(e.to_string()),
            other => Ok(other?),
        };
        let mut log = recovered.log;
        if let Some(purged) = purged {
            // A purge cut short by a crash finishes now, so appends go on after it.
            log.purge_through(purged.index)?;
        }
        let mut entries = Vec::with_capacity(recovered.entries.len());
        for (index, payload) in recovered.entries {
            if purged.is_some_and(|p| index <= p.index) {
                continue;
            }
            let format = match LOG_ENTRY.version_of(&payload) {
                Ok(v) if v == LOG_ENTRY_V1.version => LOG_ENTRY_V1,
                _ => LOG_ENTRY,
            };
            let entry = format
                .decode(&payload)
                .map_err(|source| DurableError::Record {
                    path: dir.join("log"),
                    source,
                })?;
            entries.push(entry);
        }
        Ok(OpenedGroup {
            files: Arc::new(GroupFiles {
                dir,
                log: Arc::new(Mutex::new(log)),
                writer: self.writer.clone(),
            }),
            entries,
            vote,
            purged,
            snapshot,
            cut: recovered.cut,
        })
    }
}

impl GroupFiles {
    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends entries; `done` is told once they are stored as the fsync policy says.
    pub fn append(&self, entries: &[Entry<TypeConfig>], done: crate::disk::writer::Done) {
        let records = entries
            .iter()
            .map(|e| (e.log_id.index, LOG_ENTRY.encode(e)))
            .collect();
        self.writer.append(Arc::clone(&self.log), records, done);
    }

    /// Removes entries from `index` on, durably.
    pub async fn truncate(&self, index: u64) -> Result<(), DurableError> {
        let log = Arc::clone(&self.log);
        self.writer
            .run(move || grid_proto::sync::lock(&log).truncate_from(index))
            .await?;
        Ok(())
    }

    /// Records `purged` durably, then drops the segments it covers.
    pub async fn purge(&self, purged: LogId<NodeId>) -> Result<(), DurableError> {
        let (log, path) = (Arc::clone(&self.log), self.dir.join("purged"));
        self.writer
            .run(move || {
                state_file::write(PURGED, &path, &DISK_RECORD.encode(&purged)).map_err(|e| {
                    DiskError::Failed {
                        dir: path.clone(),
                        why: e.to_string(),
                    }
                })?;
                grid_proto::sync::lock(&log).purge_through(purged.index)
            })
            .await?;
        Ok(())
    }

    /// Keeps the vote, durably whatever the fsync policy.
    pub async fn save_vote(&self, vote: Vote<NodeId>) -> Result<(), DurableError> {
        let path = self.dir.join("vote");
        self.writer
            .run(move || {
                state_file::write(VOTE, &path, &DISK_RECORD.encode(&vote)).map_err(|e| {
                    DiskError::Failed {
                        dir: path.clone(),
                        why: e.to_string(),
                    }
                })
            })
            .await?;
        Ok(())
    }

    /// Replaces the snapshot file with `bytes`, durably. Off the writer thread: a large
    /// snapshot must not hold up every group's appends.
    pub async fn save_snapshot(&self, bytes: Vec<u8>) -> Result<(), DurableError> {
        let path = self.dir.join("snapshot");
        let written =
            tokio::task::spawn_blocking(move || state_file::write(SNAPSHOT, &path, &bytes))
                .await
                .map_err(|e| DurableError::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other(e),
                })?;
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_directories_are_named_one_way() {
        for g in [0, 7, 99_999, 123_456, CONTROL_GROUP] {
            assert_eq!(group_of_dir_name(&group_dir_name(g)), Some(g), "{g}");
        }
        for name in ["p1", "p0001", "x00001", "p000001", "p-0001", "controls", ""] {
            assert_eq!(group_of_dir_name(name), None, "{name}");
        }
    }
}
