//! Backing a running cluster up into a file, and restoring a file into a cluster (what
//! `gridctl backup` and `gridctl restore` run).
//!
//! A backup copies each partition in turn from its leader (one consistent point per
//! partition, taken without pausing writes to the others) into `FILE.partial`, renamed
//! to FILE once complete and synced, so FILE is never a half-written backup. A restore
//! checks the whole file first (every checksum, every object), then writes the objects
//! through the normal write path, many at once; a damaged or foreign file restores
//! nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, TryStreamExt};
use thiserror::Error;

use crate::backup_file::{BackupFileError, BackupHeader, BackupReader, BackupWriter};
use crate::{ClientError, GridClient, WriteOptions};
use grid_proto::WriteBody;

/// Writes a restore keeps in flight.
const RESTORE_IN_FLIGHT: usize = 64;

/// A backup or restore that did not complete.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The file cannot be written, or read as a backup.
    #[error(transparent)]
    File(#[from] BackupFileError),
    /// The cluster did not answer as needed.
    #[error("{what}: {source}")]
    Cluster {
        /// What was under way.
        what: String,
        /// The client's error.
        source: ClientError,
    },
}

/// What a backup or restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Objects copied.
    pub objects: usize,
    /// Their value bytes.
    pub value_bytes: usize,
    /// Partitions of the file.
    pub partitions: u32,
    /// When the backup was taken, ms since the epoch.
    pub created_ms: u64,
    /// How long it took.
    pub took: Duration,
}

fn cluster(what: impl Into<String>) -> impl FnOnce(ClientError) -> BackupError {
    let what = what.into();
    move |source| BackupError::Cluster { what, source }
}

/// Copies every partition of the cluster `client` talks to into `path`.
pub async fn backup(client: &GridClient, path: &Path) -> Result<Summary, BackupError> {
    let started = Instant::now();
    client
        .refresh()
        .await
        .map_err(cluster("the partition map"))?;
    let partitions = client.partition_map().map_or(0, |m| m.partitions);
    if partitions == 0 {
        return Err(cluster("the partition map")(ClientError::Unavailable {
            code: grid_proto::Unavailability::NotJoined,
            reason: "the cluster has no partition map yet".into(),
        }));
    }
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let header = BackupHeader {
        created_ms,
        partitions,
    };
    let mut writer = BackupWriter::create(&partial, header)?;
    let (mut objects, mut value_bytes) = (0, 0);
    for p in 0..partitions {
        let copy = match client.export_partition(p).await {
            Ok(copy) => copy,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(cluster(format!("partition {p}"))(e));
            }
        };
        objects += copy.len();
        value_bytes += copy.iter().map(|o| o.value.len()).sum::<usize>();
        writer.partition(p, &copy)?;
    }
    writer.finish()?;
    std::fs::rename(&partial, path).map_err(|source| BackupFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        objects,
        value_bytes,
        partitions,
        created_ms,
        took: started.elapsed(),
    })
}

/// Checks every section of `path`: the header and the objects it holds.
pub fn verify(path: &Path) -> Result<(BackupHeader, usize), BackupFileError> {
    let mut reader = BackupReader::open(path)?;
    let mut objects = 0;
    while let Some((_, copy)) = reader.next_partition()? {
        objects += copy.len();
    }
    Ok((reader.header(), objects))
}

/// Writes every object of `path` into the cluster `client` talks to, once the whole
/// file has been checked.
pub async fn restore(client: &GridClient, path: &Path) -> Result<Summary, BackupError> {
    let started = Instant::now();
    let (header, total) = verify(path)?;
    let mut reader = BackupReader::open(path)?;
    let (mut restored, mut value_bytes) = (0, 0);
    while let Some((_, copy)) = reader.next_partition()? {
        let (n, bytes) = (
            copy.len(),
            copy.iter().map(|o| o.value.len()).sum::<usize>(),
        );
        stream::iter(copy.into_iter().map(Ok::<_, ClientError>))
            .try_for_each_concurrent(RESTORE_IN_FLIGHT, |o| async move {
                let options = WriteOptions {
                    tags: Some(o.tags.clone()),
                    timeout: Some(o.restore_timeout()),
                    create: true,
                    ..WriteOptions::default()
                };
                let body = WriteBody::Whole(o.value);
                client
                    .write(&o.obj.namespace, &o.obj.key, body, options)
                    .await
                    .map(drop)
            })
            .await
            .map_err(cluster(format!("after {restored} of {total} objects")))?;
        restored += n;
        value_bytes += bytes;
    }
    Ok(Summary {
        objects: restored,
        value_bytes,
        partitions: header.partitions,
        created_ms: header.created_ms,
        took: started.elapsed(),
    })
}
