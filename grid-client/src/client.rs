//! The grid client: a typed API over pipelined, pooled connections.
//!
//! Requests go to the first reachable bootstrap gateway (a single node today; the
//! partition map and leader routing extend [`GridClient::execute`] without changing the
//! typed API). Each node gets up to `maxPoolSize` connections and requests are spread
//! over them; each connection carries many requests in flight.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use grid_proto::{check_op, Millis, NodeStatus, ObjKey, ObjectInfo, Op, Reply, Request, Timeout};

use crate::conn::Connection;
use crate::connstr::ClientConfig;
use crate::error::ClientError;

/// An object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its bytes.
    pub value: Vec<u8>,
    /// Version and lock facts.
    pub info: ObjectInfo,
}

/// The result of a read that sent a cached version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// The object changed (or was not cached); here are its bytes.
    Modified(Object),
    /// The cached version is current.
    NotModified(ObjectInfo),
    /// No such object.
    NotFound,
}

/// Options of a read-and-lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// Wait this long in the object's queue if it is locked; zero answers `Locked` at once.
    pub wait: Duration,
    /// Lease of the lock; `None` takes the node's default (90 s).
    pub lease: Option<Duration>,
    /// Take over a lock held at least this long (ASP.NET `executionTimeout`).
    pub take_over_after: Option<Duration>,
    /// Version the caller caches; if current, the bytes are not sent.
    pub cached_version: Option<u64>,
}

/// The result of a read-and-lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockResult {
    /// The caller holds the lock. `value` is `None` when the cached version was current.
    Acquired {
        /// The new lock id (fencing token).
        lock_id: u64,
        /// The bytes, unless the cached version is current.
        value: Option<Vec<u8>>,
        /// Version and lock facts (`uninitialized` as it was before this lock).
        info: ObjectInfo,
    },
    /// Someone else holds it.
    Locked {
        /// Their lock id.
        lock_id: u64,
        /// How long they have held it.
        lock_age_ms: Millis,
    },
    /// No such object.
    NotFound,
}

/// Options of an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// New expiry; `None` keeps the current one.
    pub timeout: Option<Timeout>,
    /// Write only at this version.
    pub expected_version: Option<u64>,
    /// The caller's lock id, required when the object is locked.
    pub lock_id: Option<u64>,
    /// Release the lock in the same step.
    pub unlock: bool,
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(u128::from(u64::MAX)) as Millis
}

/// Turns a reply no typed result expects into an error.
fn unexpected(reply: Reply) -> ClientError {
    match reply {
        Reply::NotFound => ClientError::NotFound,
        Reply::Locked {
            lock_id,
            lock_age_ms,
        } => ClientError::Locked {
            lock_id,
            lock_age_ms,
        },
        Reply::LockLost => ClientError::LockLost,
        Reply::VersionMismatch { current } => ClientError::VersionMismatch { current },
        Reply::TooLarge { size, limit } => ClientError::TooLarge { size, limit },
        Reply::Unauthorized => ClientError::Unauthorized,
        Reply::BadRequest { reason } => ClientError::BadRequest { reason },
        Reply::Unavailable { reason } => ClientError::Unavailable { reason },
        Reply::NotLeader { .. } | Reply::WrongPartitionMap { .. } => ClientError::Unavailable {
            reason: format!("routing: {reply:?}"),
        },
        other => ClientError::Protocol {
            reason: format!("unexpected reply {other:?}"),
        },
    }
}

/// A client of one grid. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct GridClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// Index of the gateway in use.
    gateway: AtomicUsize,
    /// Up to `max_pool_size` connections to it, opened on demand.
    pool: Mutex<Vec<Option<Arc<Connection>>>>,
    next_slot: AtomicUsize,
    /// Largest value the node accepts, from its last welcome.
    max_value_bytes: AtomicU64,
}

impl GridClient {
    /// Parses a connection string and connects to the first reachable gateway.
    pub async fn connect(connection_string: &str) -> Result<Self, ClientError> {
        Self::with_config(connection_string.parse()?).await
    }

    /// Connects with an already parsed configuration.
    pub async fn with_config(config: ClientConfig) -> Result<Self, ClientError> {
        let pool = vec![None; config.max_pool_size as usize];
        let client = GridClient {
            inner: Arc::new(Inner {
                config,
                gateway: AtomicUsize::new(0),
                pool: Mutex::new(pool),
                next_slot: AtomicUsize::new(0),
                max_value_bytes: AtomicU64::new(u64::MAX),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Option<Arc<Connection>>>> {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A live connection from the pool, opening one (trying gateways in order from the
    /// current one) when the slot is empty or broken.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let slots = self.inner.config.max_pool_size as usize;
        let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % slots;
        if let Some(conn) = self.pool()[slot].as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let gateways = &self.inner.config.gateways;
        let start = self.inner.gateway.load(Ordering::Relaxed);
        let mut last_err = None;
        for i in 0..gateways.len() {
            let index = (start + i) % gateways.len();
            let addr = gateways[index].to_string();
            let opened = Connection::open(
                &addr,
                self.inner.config.auth_token.as_deref(),
                self.inner.config.connect_timeout,
            )
            .await;
            match opened {
                Ok(conn) => {
                    self.inner
                        .max_value_bytes
                        .store(conn.max_value_bytes, Ordering::Relaxed);
                    let conn = Arc::new(conn);
                    if index != start {
                        // Another gateway answered: move the whole pool over to it.
                        self.inner.gateway.store(index, Ordering::Relaxed);
                        self.pool().iter_mut().for_each(|c| *c = None);
                    }
                    self.pool()[slot] = Some(Arc::clone(&conn));
                    return Ok(conn);
                }
                Err(ClientError::Unauthorized) => return Err(ClientError::Unauthorized),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(ClientError::Connect {
            addr: String::new(),
            reason: "no gateways".into(),
        }))
    }

    /// Sends a request, retrying within `maxRequestRetries` when it surely did not run,
    /// or when it only reads and its connection broke.
    async fn call(&self, request: &Request, extra_wait: Duration) -> Result<Reply, ClientError> {
        let idempotent = matches!(
            request,
            Request::Ping | Request::Status | Request::Op(Op::Read { .. })
        );
        let timeout = self.inner.config.request_timeout + extra_wait;
        let mut attempt = 0;
        loop {
            let result = match self.connection().await {
                Ok(conn) => conn.call(request, timeout).await,
                Err(e) => Err(e),
            };
            let result = match result {
                Ok(reply @ (Reply::Unavailable { .. } | Reply::NotLeader { .. })) => {
                    Err(unexpected(reply))
                }
                other => other,
            };
            let retry = match &result {
                Err(e) if e.did_not_run() => true,
                Err(ClientError::ConnectionLost { .. }) => idempotent,
                _ => false,
            };
            if !retry || attempt >= self.inner.config.max_request_retries {
                return result;
            }
            attempt += 1;
            let backoff = Duration::from_millis(20u64 << attempt.min(6));
            tracing::debug!(attempt, ?backoff, error = ?result.err(), "retrying request");
            tokio::time::sleep(backoff).await;
        }
    }

    /// Runs any operation and returns the node's reply as is, result codes included.
    /// Limits are checked before sending.
    pub async fn execute(&self, op: Op) -> Result<Reply, ClientError> {
        let limit = self.inner.max_value_bytes.load(Ordering::Relaxed);
        check_op(&op, usize::try_from(limit).unwrap_or(usize::MAX))?;
        let wait = match &op {
            Op::ReadAndLock { wait_ms, .. } => Duration::from_millis(*wait_ms),
            _ => Duration::ZERO,
        };
        self.call(&Request::Op(op), wait).await
    }

    /// Checks the node answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(&Request::Ping, Duration::ZERO).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The node's counters.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.call(&Request::Status, Duration::ZERO).await? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// Reads an object; `None` if absent. Slides its expiry.
    pub async fn get(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Object>, ClientError> {
        match self.get_if_modified(ns, key, None).await? {
            ReadResult::Modified(object) => Ok(Some(object)),
            ReadResult::NotFound => Ok(None),
            ReadResult::NotModified(_) => Err(ClientError::Protocol {
                reason: "NotModified without a cached version".into(),
            }),
        }
    }

    /// Reads an object unless `cached_version` is current.
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

    /// Adds or replaces an object; returns its new version. A locked object answers
    /// [`ClientError::Locked`].
    pub async fn put(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        timeout: Timeout,
    ) -> Result<u64, ClientError> {
        let op = Op::Put {
            obj: ObjKey::new(ns, key.as_ref()),
            value: value.into(),
            timeout,
            lock_id: None,
        };
        match self.execute(op).await? {
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
        let op = Op::Create {
            obj: ObjKey::new(ns, key.as_ref()),
            value: value.into(),
            timeout,
            uninitialized,
        };
        match self.execute(op).await? {
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
        let op = Op::Update {
            obj: ObjKey::new(ns, key.as_ref()),
            value: value.into(),
            timeout: options.timeout,
            expected_version: options.expected_version,
            lock_id: options.lock_id,
            unlock: options.unlock,
        };
        match self.execute(op).await? {
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
        let op = Op::Remove {
            obj: ObjKey::new(ns, key.as_ref()),
            lock_id,
        };
        match self.execute(op).await? {
            Reply::Removed => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// Reads and locks an object, waiting in its FIFO queue up to `options.wait`.
    pub async fn lock(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        options: LockOptions,
    ) -> Result<LockResult, ClientError> {
        let op = Op::ReadAndLock {
            obj: ObjKey::new(ns, key.as_ref()),
            cached_version: options.cached_version,
            lease_ms: options.lease.map(ms),
            wait_ms: ms(options.wait),
            take_over_after_ms: options.take_over_after.map(ms),
        };
        let (value, info) = match self.execute(op).await? {
            Reply::Retrieved { value, info } => (Some(value), info),
            Reply::NotModified { info } => (None, info),
            Reply::Locked {
                lock_id,
                lock_age_ms,
            } => {
                return Ok(LockResult::Locked {
                    lock_id,
                    lock_age_ms,
                })
            }
            Reply::NotFound => return Ok(LockResult::NotFound),
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
