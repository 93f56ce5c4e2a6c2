//! Copying a partition out for a backup: its leader takes a copy as of a linearizable
//! point and the client fetches it page by page from that node. A copy interrupted (its
//! node gone, leadership moved before it started) is started again, within
//! `maxRequestRetries`.

use std::time::Duration;

use grid_proto::backup::BackupObject;
use grid_proto::{Reply, Request};

use super::unexpected;
use crate::error::ClientError;
use crate::GridClient;

/// Redirects followed while looking for a partition's leader.
const MAX_REDIRECTS: u32 = 8;

impl GridClient {
    /// Every object of partition `p`, as of one point in its history (later writes are
    /// not in it, earlier acknowledged ones are), sorted by key.
    pub async fn export_partition(&self, p: u32) -> Result<Vec<BackupObject>, ClientError> {
        let mut attempt = 0;
        loop {
            match self.try_export(p).await {
                Ok(objects) => return Ok(objects),
                Err(e)
                    if attempt < self.inner.config.max_request_retries
                        && !matches!(
                            e,
                            ClientError::Unauthorized | ClientError::BadRequest { .. }
                        ) =>
                {
                    attempt += 1;
                    tracing::debug!(partition = p, attempt, error = %e, "export interrupted; starting it again");
                    tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(5))).await;
                    let _ = self.refresh().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_export(&self, p: u32) -> Result<Vec<BackupObject>, ClientError> {
        let timeout = self.inner.config.request_timeout;
        if self.partition_map().is_none() {
            self.refresh().await?;
        }
        let mut addr = self
            .route_partition(p)
            .map(|(addr, _)| addr)
            .ok_or_else(|| ClientError::BadRequest {
                reason: format!("no partition {p} in the cluster's map"),
            })?;
        let start = Request::Export {
            partition: p,
            export: 0,
            from: 0,
        };
        let mut redirects = 0;
        let (conn, first) = loop {
            let conn = self.connection(&addr).await?;
            match conn.call(&start, timeout).await? {
                Reply::NotLeader {
                    leader_hint: Some(hint),
                } if hint != addr && redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    addr = hint;
                }
                reply => break (conn, reply),
            }
        };
        let Reply::Exported {
            export,
            total,
            mut objects,
        } = first
        else {
            return Err(unexpected(first));
        };
        while (objects.len() as u64) < total {
            let page = Request::Export {
                partition: p,
                export,
                from: objects.len() as u64,
            };
            match conn.call(&page, timeout).await? {
                Reply::Exported { objects: more, .. } if !more.is_empty() => objects.extend(more),
                other => return Err(unexpected(other)),
            }
        }
        Ok(objects)
    }
}
