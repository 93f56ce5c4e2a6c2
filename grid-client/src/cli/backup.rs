//! `gridctl backup FILE` and `gridctl restore FILE` (the work is [`crate::backup`]).

use std::path::Path;

use super::{Failure, Out};
use crate::backup::{self, BackupError};
use crate::GridClient;

impl From<BackupError> for Failure {
    fn from(e: BackupError) -> Self {
        Failure::Error(e.to_string())
    }
}

/// Copies every partition into `path`.
pub(super) async fn backup(client: &GridClient, path: &Path, out: &mut Out) -> Result<(), Failure> {
    let s = backup::backup(client, path).await?;
    out.line(format_args!(
        "backed up {} objects ({} value bytes) of {} partitions to {} in {:.1}s",
        s.objects,
        s.value_bytes,
        s.partitions,
        path.display(),
        s.took.as_secs_f64()
    ))
}

/// Writes every object of `path` into the cluster.
pub(super) async fn restore(
    client: &GridClient,
    path: &Path,
    out: &mut Out,
) -> Result<(), Failure> {
    let s = backup::restore(client, path).await?;
    out.line(format_args!(
        "restored {} objects ({} value bytes) from {} (backed up at {} ms since the epoch) in {:.1}s",
        s.objects,
        s.value_bytes,
        path.display(),
        s.created_ms,
        s.took.as_secs_f64()
    ))
}
