//! Tags: the general write ([`GridClient::write`]) that sets them, and the fan-out over
//! partitions that finds or removes the objects carrying one.
//!
//! **Consistency.** Each partition answers for its own objects at a linearizable point
//! (its leader confirms it still leads after what it applied; a partition with more than
//! a page of matching keys, about 4 MB, answers page by page, each page at its own). The partitions are asked
//! one after another, not at one instant: an object tagged while `find_by_tag` runs may
//! or may not be listed, every object tagged before it started and still tagged when it
//! ends is. `remove_by_tag` removes what `find_by_tag` listed, each removal one
//! linearizable step that checks the tag again.

use futures_util::future::join_all;
use grid_proto::{items, ObjKey, Op, Reply, Request, Timeout, WriteBody};

use super::unexpected;
use crate::error::ClientError;
use crate::GridClient;

/// Removals sent at once by `remove_by_tag`.
const REMOVALS_IN_FLIGHT: usize = 64;

/// How a [`GridClient::write`] treats the object besides its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Its tags from now on; `None` keeps them.
    pub tags: Option<Vec<String>>,
    /// Its expiry from now on; `None` keeps it (none for a new object).
    pub timeout: Option<Timeout>,
    /// The lock the caller holds, if the object is locked.
    pub lock_id: Option<u64>,
    /// Release that lock in the same step.
    pub unlock: bool,
    /// Create the object when it is absent (never with a lock id).
    pub create: bool,
    /// The version the caller's lock read found. With it and the lock, the near cache
    /// applies item changes to its copy of that version instead of forgetting it.
    pub base_version: Option<u64>,
}

/// What a [`GridClient::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The object was created at this version.
    Added(u64),
    /// The object was changed; its new version.
    Updated(u64),
}

impl GridClient {
    /// The general write: the whole value, some items of an item map
    /// (`grid_proto::items`) or neither, with tags, expiry and lock in one step. An
    /// absent object without `create` answers [`ClientError::NotFound`]; with a lock id,
    /// [`ClientError::LockLost`].
    pub async fn write(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        body: WriteBody,
        options: WriteOptions,
    ) -> Result<Written, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let cache = &self.inner.cache;
        // What the near cache holds after the write: the new bytes of a whole write; for
        // item changes under the caller's lock, its copy with the changes applied if that
        // copy is of the version the lock read found (while the lock is held nobody else
        // writes; a lock lost meanwhile makes the write fail, which drops the copy).
        let next = match &body {
            WriteBody::Whole(value) if cache.enabled() => Some(value.clone()),
            WriteBody::Items(changes) if options.lock_id.is_some() => cache
                .get(&obj)
                .filter(|cached| Some(cached.version) == options.base_version)
                .and_then(|cached| items::apply(&cached.value, changes).ok()),
            _ => None,
        };
        let op = Op::Write {
            obj: obj.clone(),
            body,
            tags: options.tags,
            timeout: options.timeout,
            lock_id: options.lock_id,
            unlock: options.unlock,
            create: options.create,
            // The node sets its own bound.
            max_bytes: 0,
        };
        let reply = self.execute(op).await;
        match (&reply, next) {
            (Ok(Reply::Added { version } | Reply::Updated { version }), Some(next)) => {
                cache.put(obj, *version, next)
            }
            _ => cache.invalidate(&obj),
        }
        match reply? {
            Reply::Added { version } => Ok(Written::Added(version)),
            Reply::Updated { version } => Ok(Written::Updated(version)),
            other => Err(unexpected(other)),
        }
    }

    /// The keys in `ns` of objects carrying `tag`, over every partition, sorted. See the
    /// module docs for what it sees of concurrent writes.
    pub async fn find_by_tag(&self, ns: &str, tag: &str) -> Result<Vec<Vec<u8>>, ClientError> {
        grid_proto::limits::validate_namespace(ns).map_err(|e| ClientError::BadRequest {
            reason: e.to_string(),
        })?;
        grid_proto::limits::validate_tag(tag).map_err(|e| ClientError::BadRequest {
            reason: e.to_string(),
        })?;
        if self.partition_map().is_none() {
            self.refresh().await?;
        }
        let partitions = self.partition_map().map_or(0, |m| m.partitions);
        let asks = (0..partitions).map(|p| self.find_in_partition(p, ns, tag));
        let mut keys = Vec::new();
        for found in join_all(asks).await {
            keys.extend(found?);
        }
        keys.sort();
        Ok(keys)
    }

    /// Removes the objects in `ns` carrying `tag`, locked or not; returns how many it
    /// removed. A holder of a removed object's lock finds it lost at its next write.
    pub async fn remove_by_tag(&self, ns: &str, tag: &str) -> Result<u64, ClientError> {
        let keys = self.find_by_tag(ns, tag).await?;
        let mut removed = 0;
        for chunk in keys.chunks(REMOVALS_IN_FLIGHT) {
            let removals = chunk.iter().map(|key| self.remove_tagged(ns, key, tag));
            for outcome in join_all(removals).await {
                removed += u64::from(outcome?);
            }
        }
        Ok(removed)
    }

    /// Removes one object if it still carries `tag`: `true` if it did.
    pub async fn remove_tagged(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        tag: &str,
    ) -> Result<bool, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let tag = tag.to_string();
        self.run_removal(Op::RemoveTagged { obj, tag }).await
    }

    async fn find_in_partition(
        &self,
        p: u32,
        ns: &str,
        tag: &str,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        self.with_retries(p, || async {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            loop {
                let ask = Request::FindTag {
                    partition: p,
                    namespace: ns.to_string(),
                    tag: tag.to_string(),
                    after: keys.last().cloned(),
                };
                match self.call_leader(p, &ask).await?.1 {
                    Reply::Keys { keys: page, more } => {
                        let progressed = !page.is_empty();
                        keys.extend(page);
                        if !more || !progressed {
                            return Ok(keys);
                        }
                    }
                    other => return Err(unexpected(other)),
                }
            }
        })
        .await
    }
}
