//! Copying a partition out for a backup: its leader takes a copy as of a linearizable
//! point and the client fetches it page by page from that node. A copy interrupted (its
//! node gone, leadership moved before it started) is started again, within
//! `maxRequestRetries`. The helpers that reach a partition's leader serve tags too.

use std::sync::Arc;
use std::time::Duration;

use grid_proto::backup::BackupObject;
use grid_proto::{Reply, Request};

use super::unexpected;
use crate::conn::Connection;
use crate::error::ClientError;
use crate::GridClient;

/// Redirects followed while looking for a partition's leader.
const MAX_REDIRECTS: u32 = 8;

impl GridClient {
    /// Every object of partition `p`, as of one point in its history (later writes are
    /// not in it, earlier acknowledged ones are), sorted by key.
    pub async fn export_partition(&self, p: u32) -> Result<Vec<BackupObject>, ClientError> {
        self.with_retries(p, || self.try_export(p)).await
    }

    /// Runs `attempt` on partition `p` until it succeeds, fails for good (refused, bad
    /// request) or `maxRequestRetries` run out, refreshing the map in between.
    pub(super) async fn with_retries<T, F>(
        &self,
        p: u32,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, ClientError>
    where
        F: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(done) => return Ok(done),
                Err(e)
                    if tries < self.inner.config.max_request_retries
                        && !matches!(
                            e,
                            ClientError::Unauthorized | ClientError::BadRequest { .. }
                        ) =>
                {
                    tries += 1;
                    tracing::debug!(partition = p, attempt = tries, error = %e, "partition request interrupted; trying again");
                    tokio::time::sleep(Duration::from_millis(50u64 << tries.min(5))).await;
                    let _ = self.refresh().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `request` to partition `p`'s leader, following its redirects; returns the
    /// connection that answered and the answer.
    pub(super) async fn call_leader(
        &self,
        p: u32,
        request: &Request,
    ) -> Result<(Arc<Connection>, Reply), ClientError> {
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
        let mut redirects = 0;
        loop {
            let conn = self.connection(&addr).await?;
            match conn.call(request, timeout).await? {
                Reply::NotLeader {
                    leader_hint: Some(hint),
                } if hint != addr && redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    addr = hint;
                }
                reply => return Ok((conn, reply)),
            }
        }
    }

    async fn try_export(&self, p: u32) -> Result<Vec<BackupObject>, ClientError> {
        let timeout = self.inner.config.request_timeout;
        let start = Request::Export {
            partition: p,
            export: 0,
            from: 0,
        };
        let (conn, first) = self.call_leader(p, &start).await?;
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
