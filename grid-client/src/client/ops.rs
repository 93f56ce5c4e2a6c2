//! The typed object operations, with the near cache in the path: a read sends the cached
//! version (the node answers `NotModified` without the bytes, or the new bytes), and
//! every write, remove or lock this client makes updates or drops its cached copy. See
//! [`crate::near_cache`] for why this is never stale.

use grid_proto::{ObjKey, Op, Reply, Timeout};

use super::{
    ms, unexpected, LockOptions, LockResult, Object, ReadResult, RemoteRead, UpdateOptions,
};
use crate::error::ClientError;
use crate::near_cache::ReadOutcome;
use crate::GridClient;

impl GridClient {
    /// Reads an object; `None` if absent. Slides its expiry. With the near cache on, a
    /// cached copy is revalidated by version and its bytes are not sent again if current.
    pub async fn get(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Object>, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let cache = &self.inner.cache;
        let cached = cache.get(&obj);
        let op = Op::Read {
            obj: obj.clone(),
            cached_version: cached.as_ref().map(|c| c.version),
        };
        let reply = self.execute(op).await;
        match reply {
            Ok(Reply::Retrieved { value, info }) => {
                cache.count(match cached {
                    Some(_) => ReadOutcome::Refreshed,
                    None => ReadOutcome::Miss,
                });
                if cache.enabled() {
                    cache.put(obj, info.version, value.clone());
                }
                Ok(Some(Object { value, info }))
            }
            Ok(Reply::NotModified { info }) => match cached {
                Some(c) if c.version == info.version => {
                    cache.count(ReadOutcome::NotModified);
                    Ok(Some(Object {
                        value: c.value.clone(),
                        info,
                    }))
                }
                _ => Err(ClientError::Protocol {
                    reason: "NotModified for a version this client does not hold".into(),
                }),
            },
            Ok(Reply::NotFound) => {
                cache.invalidate(&obj);
                Ok(None)
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// Reads an object that may live at another site: on a miss here, the node pulls it
    /// from `remote_stores` in order and this site becomes its primary.
    pub async fn get_remote(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        remote_stores: &[String],
    ) -> Result<RemoteRead, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let op = Op::Read {
            obj: obj.clone(),
            cached_version: None,
        };
        match self.pull(op, remote_stores).await? {
            Reply::Retrieved { value, info } => {
                if self.inner.cache.enabled() {
                    self.inner.cache.put(obj, info.version, value.clone());
                }
                Ok(RemoteRead::Found(Object { value, info }))
            }
            Reply::NotFound => Ok(RemoteRead::NotFound {
                reasons: Vec::new(),
            }),
            Reply::NotFoundRemote { reasons } => Ok(RemoteRead::NotFound { reasons }),
            Reply::Locked {
                lock_id,
                lock_age_ms,
            } => Ok(RemoteRead::Locked {
                lock_id,
                lock_age_ms,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Reads an object unless `cached_version` (the caller's own cache) is current. Does
    /// not use the near cache.
    pub async fn get_if_modified(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        cached_version: Option<u64>,
    ) -> Result<ReadResult, ClientError> {
        let op = Op::Read {
            obj: ObjKey::new(ns, key.as_ref()),
            cached_version,
        };
        match self.execute(op).await? {
            Reply::Retrieved { value, info } => Ok(ReadResult::Modified(Object { value, info })),
            Reply::NotModified { info } => Ok(ReadResult::NotModified(info)),
            Reply::NotFound => Ok(ReadResult::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a write carrying `value` and returns the node's reply; the near cache learns
    /// the new version with these bytes, or forgets the object if the write failed.
    async fn write_value(&self, obj: ObjKey, value: Vec<u8>, op: Op) -> Result<Reply, ClientError> {
        let cache = &self.inner.cache;
        let kept = cache.enabled().then(|| value.clone());
        let op = match op {
            Op::Create {
                timeout,
                uninitialized,
                ..
            } => Op::Create {
                obj: obj.clone(),
                value,
                timeout,
                uninitialized,
            },
            Op::Put {
                timeout, lock_id, ..
            } => Op::Put {
                obj: obj.clone(),
                value,
                timeout,
                lock_id,
            },
            Op::Update {
                timeout,
                expected_version,
                lock_id,
                unlock,
                ..
            } => Op::Update {
                obj: obj.clone(),
                value,
                timeout,
                expected_version,
                lock_id,
                unlock,
            },
            other => other,
        };
        let reply = self.execute(op).await;
        match (&reply, kept) {
            (Ok(Reply::Added { version } | Reply::Updated { version }), Some(kept)) => {
                cache.put(obj, *version, kept);
            }
            // AlreadyExists leaves the cached copy as it was; anything else may have
            // changed the object or says nothing about it.
            (Ok(Reply::AlreadyExists), _) => {}
            _ => cache.invalidate(&obj),
        }
        reply
    }

    /// Adds or replaces an object; returns its new version. A locked object answers
    /// [`ClientError::Locked`].
    pub async fn put(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        timeout: Timeout,
    ) -> Result<u64, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let op = Op::Put {
            obj: obj.clone(),
            value: Vec::new(),
            timeout,
            lock_id: None,
        };
        match self.write_value(obj, value.into(), op).await? {
            Reply::Added { version } | Reply::Updated { version } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Adds an object if absent: `Some(version)` if added, `None` if it already existed.
    /// `uninitialized` marks it for the next read-and-lock (ASP.NET
    /// `CreateUninitializedItem`).
    pub async fn create(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        timeout: Timeout,
        uninitialized: bool,
    ) -> Result<Option<u64>, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let op = Op::Create {
            obj: obj.clone(),
            value: Vec::new(),
            timeout,
            uninitialized,
        };
        match self.write_value(obj, value.into(), op).await? {
            Reply::Added { version } => Ok(Some(version)),
            Reply::AlreadyExists => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces an existing object; returns its new version.
    pub async fn update(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        options: UpdateOptions,
    ) -> Result<u64, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let op = Op::Update {
            obj: obj.clone(),
            value: Vec::new(),
            timeout: options.timeout,
            expected_version: options.expected_version,
            lock_id: options.lock_id,
            unlock: options.unlock,
        };
        match self.write_value(obj, value.into(), op).await? {
            Reply::Updated { version } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Removes an object: `true` if it was there.
    pub async fn remove(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        lock_id: Option<u64>,
    ) -> Result<bool, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        self.run_removal(Op::Remove { obj, lock_id }).await
    }

    /// Runs a removal (`Remove`, `RemoveTagged`): `true` if it removed the object. The
    /// near cache forgets the object whatever the answer.
    pub(super) async fn run_removal(&self, op: Op) -> Result<bool, ClientError> {
        let reply = self.execute(op.clone()).await;
        self.inner.cache.invalidate(op.obj());
        match reply? {
            Reply::Removed => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// Reads and locks an object, waiting in its FIFO queue up to `options.wait`. Without
    /// `options.cached_version`, the near cache supplies one, and the bytes come from it
    /// when current (`value` is then `Some`). With it, `value` is `None` when that
    /// version is current.
    pub async fn lock(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        options: LockOptions,
    ) -> Result<LockResult, ClientError> {
        self.lock_from(ns, key, options, &[]).await
    }

    /// [`GridClient::lock`], pulling the object from `remote_stores` (in order) when it
    /// is not at this site; it then becomes primary here.
    pub async fn lock_from(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        options: LockOptions,
        remote_stores: &[String],
    ) -> Result<LockResult, ClientError> {
        let obj = ObjKey::new(ns, key.as_ref());
        let cache = &self.inner.cache;
        let cached = match options.cached_version {
            Some(_) => None,
            None => cache.get(&obj),
        };
        let op = Op::ReadAndLock {
            obj: obj.clone(),
            cached_version: options
                .cached_version
                .or(cached.as_ref().map(|c| c.version)),
            lease_ms: options.lease.map(ms),
            wait_ms: ms(options.wait),
            take_over_after_ms: options.take_over_after.map(ms),
        };
        let reply = if remote_stores.is_empty() {
            self.execute(op).await?
        } else {
            self.pull(op, remote_stores).await?
        };
        let (value, info) = match reply {
            Reply::Retrieved { value, info } => {
                if cache.enabled() {
                    cache.put(obj, info.version, value.clone());
                }
                (Some(value), info)
            }
            Reply::NotModified { info } => match &cached {
                Some(c) if c.version == info.version => {
                    cache.count(ReadOutcome::NotModified);
                    (Some(c.value.clone()), info)
                }
                Some(_) => {
                    return Err(ClientError::Protocol {
                        reason: "NotModified for a version this client does not hold".into(),
                    })
                }
                None => (None, info),
            },
            Reply::Locked {
                lock_id,
                lock_age_ms,
            } => {
                return Ok(LockResult::Locked {
                    lock_id,
                    lock_age_ms,
                })
            }
            Reply::NotFound | Reply::NotFoundRemote { .. } => {
                cache.invalidate(&obj);
                return Ok(LockResult::NotFound);
            }
            other => return Err(unexpected(other)),
        };
        let lock_id = info.lock_id.ok_or_else(|| ClientError::Protocol {
            reason: "lock granted without a lock id".into(),
        })?;
        Ok(LockResult::Acquired {
            lock_id,
            value,
            info,
        })
    }

    /// Releases a lock held with `lock_id`.
    pub async fn unlock(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        lock_id: u64,
    ) -> Result<(), ClientError> {
        let op = Op::Unlock {
            obj: ObjKey::new(ns, key.as_ref()),
            lock_id,
        };
        match self.execute(op).await? {
            Reply::Unlocked => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Extends a held lock's lease from now.
    pub async fn refresh_lock(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        lock_id: u64,
    ) -> Result<(), ClientError> {
        let op = Op::RefreshLock {
            obj: ObjKey::new(ns, key.as_ref()),
            lock_id,
        };
        match self.execute(op).await? {
            Reply::LockRefreshed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Restarts an object's expiry from now, optionally with a new timeout: `true` if it
    /// exists.
    pub async fn reset_timeout(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        timeout: Option<Timeout>,
    ) -> Result<bool, ClientError> {
        let op = Op::ResetTimeout {
            obj: ObjKey::new(ns, key.as_ref()),
            timeout,
        };
        match self.execute(op).await? {
            Reply::TimeoutReset => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(other)),
        }
    }
}
