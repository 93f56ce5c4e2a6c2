//! `gridctl backup FILE` and `gridctl restore FILE`.
//!
//! A backup copies each partition in turn from its leader (one consistent point per
//! partition, taken without pausing writes to the others) into `FILE.partial`, renamed
//! to FILE once complete and synced, so FILE is never a half-written backup. A restore
//! checks the whole file first (every checksum, every object), then writes the objects
//! through the normal write path, many at once; a damaged or foreign file restores
//! nothing.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, TryStreamExt};

use super::{Failure, Out};
use crate::backup_file::{BackupHeader, BackupReader, BackupWriter};
use crate::{ClientError, GridClient};

/// Writes a restore keeps in flight.
const RESTORE_IN_FLIGHT: usize = 64;

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

/// Copies every partition into `path`.
pub(super) async fn backup(client: &GridClient, path: &Path, out: &mut Out) -> Result<(), Failure> {
    let started = Instant::now();
    client.refresh().await?;
    let partitions = client
        .partition_map()
        .map(|m| m.partitions)
        .filter(|p| *p > 0)
        .ok_or_else(|| failure("the cluster has no partition map yet"))?;
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let mut writer = BackupWriter::create(
        &partial,
        BackupHeader {
            created_ms,
            partitions,
        },
    )
    .map_err(failure)?;
    let (mut objects, mut bytes) = (0usize, 0usize);
    for p in 0..partitions {
        let copy = match client.export_partition(p).await {
            Ok(copy) => copy,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(failure(format!("partition {p}: {e}")));
            }
        };
        objects += copy.len();
        bytes += copy.iter().map(|o| o.value.len()).sum::<usize>();
        writer.partition(p, &copy).map_err(failure)?;
    }
    writer.finish().map_err(failure)?;
    std::fs::rename(&partial, path)
        .map_err(|e| failure(format!("{} -> {}: {e}", partial.display(), path.display())))?;
    out.line(format_args!(
        "backed up {objects} objects ({bytes} value bytes) of {partitions} partitions to {} in {:.1}s",
        path.display(),
        started.elapsed().as_secs_f64()
    ))
}

/// Checks every section of `path`; the objects it holds.
fn verify(path: &Path) -> Result<usize, Failure> {
    let mut reader = BackupReader::open(path).map_err(failure)?;
    let mut objects = 0;
    while let Some((_, copy)) = reader.next_partition().map_err(failure)? {
        objects += copy.len();
    }
    Ok(objects)
}

/// Writes every object of `path` into the cluster.
pub(super) async fn restore(
    client: &GridClient,
    path: &Path,
    out: &mut Out,
) -> Result<(), Failure> {
    let started = Instant::now();
    let total = verify(path)?;
    let mut reader = BackupReader::open(path).map_err(failure)?;
    let mut restored = 0usize;
    while let Some((_, copy)) = reader.next_partition().map_err(failure)? {
        let n = copy.len();
        stream::iter(copy.into_iter().map(Ok::<_, ClientError>))
            .try_for_each_concurrent(RESTORE_IN_FLIGHT, |o| async move {
                let timeout = o.restore_timeout();
                client
                    .put(&o.obj.namespace, &o.obj.key, o.value, timeout)
                    .await
                    .map(drop)
            })
            .await
            .map_err(|e| failure(format!("after {restored} of {total} objects: {e}")))?;
        restored += n;
    }
    out.line(format_args!(
        "restored {total} objects from {} (backed up at {} ms since the epoch) in {:.1}s",
        path.display(),
        reader.header().created_ms,
        started.elapsed().as_secs_f64()
    ))
}
