//! The grid client: a typed API over pipelined, pooled connections.
//!
//! The client fetches the partition map from a bootstrap gateway and sends each operation
//! straight to the leader of the object's partition, following `NotLeader` redirects and
//! refreshing the map when a node fails. Each node gets up to `maxPoolSize` connections
//! and requests are spread over them; each connection carries many requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::sync::lock;
use grid_proto::{
    check_op, key_hash, partition_of, GeoOp, Millis, NodeStatus, ObjKey, ObjectInfo, Op,
    PartitionMap, Reply, Request, Timeout, Unavailability,
};

use crate::conn::{ConnHooks, Connection, Dial, WireStats};
use crate::connstr::ClientConfig;
use crate::error::ClientError;
use crate::near_cache::{CacheStats, NearCache};
use crate::tls::ClientTls;

mod backup;
mod events;
mod ops;
mod tags;

pub use events::{Delivery, EventSubscription};
pub use tags::{WriteOptions, Written};

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

/// The result of a read that may pull from remote sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRead {
    /// The object, now primary at this site.
    Found(Object),
    /// Neither here nor at a remote store.
    NotFound {
        /// What each remote store said.
        reasons: Vec<String>,
    },
    /// A remote site holds it locked; it stays there until the lock is released.
    Locked {
        /// The holder's lock id.
        lock_id: u64,
        /// How long it has been held.
        lock_age_ms: Millis,
    },
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

/// How this client introduces itself to nodes.
const CLIENT_NAME: &str = concat!("grid-client/", env!("CARGO_PKG_VERSION"));

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
        Reply::LowMemory { used, limit } => ClientError::LowMemory { used, limit },
        Reply::Moved { site } => ClientError::Moved { site },
        Reply::Unauthorized => ClientError::Unauthorized,
        Reply::BadRequest { reason } => ClientError::BadRequest { reason },
        Reply::Unavailable { code, reason } => ClientError::Unavailable { code, reason },
        Reply::OutcomeUnknown { reason } => ClientError::OutcomeUnknown { reason },
        Reply::NotLeader { .. } => ClientError::Unavailable {
            code: Unavailability::NoQuorum,
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
    /// How every connection is opened (credentials, TLS), from the config.
    dial: Dial,
    /// The partition map, with leaders learned from the nodes' answers.
    map: Mutex<Option<PartitionMap>>,
    /// When the map was last fetched; one request refreshes it once it is older than
    /// [`MAP_MAX_AGE`], so the client knows the nodes that joined since and can still
    /// reach the cluster after every node it knew of is gone.
    map_fetched: Mutex<Option<std::time::Instant>>,
    /// Set while one request refreshes the aged map (the others do not wait for it).
    refreshing_aged_map: std::sync::atomic::AtomicBool,
    /// Up to `max_pool_size` connections per node address, opened on demand.
    pools: Mutex<HashMap<String, Vec<Option<Arc<Connection>>>>>,
    next_slot: AtomicUsize,
    /// Largest value the nodes accept, from the last welcome.
    max_value_bytes: AtomicU64,
    /// The near cache (`clientCacheType`).
    cache: NearCache,
    /// Bytes moved over every connection of this client.
    wire: Arc<WireStats>,
}

/// Bytes a client has moved, frame headers included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireBytes {
    /// Sent to nodes.
    pub sent: u64,
    /// Received from nodes.
    pub received: u64,
}

/// Redirects to another leader a request may follow without counting as a retry.
const MAX_REDIRECTS: u32 = 8;
/// Age at which the partition map is fetched again, though nothing failed.
pub const MAP_MAX_AGE: Duration = Duration::from_secs(5);

impl GridClient {
    /// Parses a connection string, reaches a gateway and fetches the partition map.
    pub async fn connect(connection_string: &str) -> Result<Self, ClientError> {
        Self::with_config(connection_string.parse()?).await
    }

    /// Connects with an already parsed configuration.
    pub async fn with_config(config: ClientConfig) -> Result<Self, ClientError> {
        let tls = match &config.node {
            Some(node) => node.tls.clone(),
            None if config.use_secure => Some(ClientTls::new(&config.tls)?),
            None => None,
        };
        let dial = Dial {
            auth_token: config.auth_token.clone(),
            client_name: config
                .client_name
                .clone()
                .unwrap_or_else(|| CLIENT_NAME.to_string()),
            connect_timeout: config.connect_timeout,
            tls,
            peer_key: config.node.as_ref().map(|n| n.key.clone()),
        };
        let client = GridClient {
            inner: Arc::new(Inner {
                dial,
                cache: NearCache::new(config.near_cache),
                config,
                map: Mutex::new(None),
                map_fetched: Mutex::new(None),
                refreshing_aged_map: std::sync::atomic::AtomicBool::new(false),
                pools: Mutex::new(HashMap::new()),
                next_slot: AtomicUsize::new(0),
                max_value_bytes: AtomicU64::new(u64::MAX),
                wire: Arc::default(),
            }),
        };
        client.refresh_map().await?;
        Ok(client)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Near-cache counters (hits, misses, `NotModified`, size).
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Bytes this client has sent and received over all its connections.
    pub fn wire_bytes(&self) -> WireBytes {
        WireBytes {
            sent: self.inner.wire.sent.load(Ordering::Relaxed),
            received: self.inner.wire.received.load(Ordering::Relaxed),
        }
    }

    /// Fetches the partition map again.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        self.refresh_map().await
    }

    /// The partition map as this client knows it.
    pub fn partition_map(&self) -> Option<PartitionMap> {
        lock(&self.inner.map).clone()
    }

    /// A live pooled connection to `addr`, opened when its slot is empty or broken.
    async fn connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        let slots = self.inner.config.max_pool_size as usize;
        let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % slots;
        if let Some(conn) = lock(&self.inner.pools)
            .get(addr)
            .and_then(|pool| pool[slot].as_ref())
            .filter(|c| !c.is_closed())
        {
            return Ok(Arc::clone(conn));
        }
        let conn = self.open(addr, None).await?;
        self.inner
            .max_value_bytes
            .store(conn.max_value_bytes, Ordering::Relaxed);
        let conn = Arc::new(conn);
        lock(&self.inner.pools)
            .entry(addr.to_string())
            .or_insert_with(|| vec![None; slots])[slot] = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Opens a connection to `addr` that counts its bytes, taking pushed events to
    /// `events` if given.
    async fn open(
        &self,
        addr: &str,
        events: Option<tokio::sync::mpsc::UnboundedSender<grid_proto::GridEvent>>,
    ) -> Result<Connection, ClientError> {
        let hooks = ConnHooks {
            stats: Some(Arc::clone(&self.inner.wire)),
            events,
        };
        Connection::open_with(addr, &self.inner.dial, hooks).await
    }

    /// Addresses to ask for the map: the known nodes first, then the gateways.
    fn map_sources(&self) -> Vec<String> {
        let mut sources: Vec<String> = lock(&self.inner.map)
            .as_ref()
            .map(|m| {
                m.nodes
                    .iter()
                    .filter(|n| n.active)
                    .map(|n| n.addr.clone())
                    .collect()
            })
            .unwrap_or_default();
        for g in &self.inner.config.gateways {
            let g = g.to_string();
            if !sources.contains(&g) {
                sources.push(g);
            }
        }
        sources
    }

    /// Fetches the map again if it is older than [`MAP_MAX_AGE`] and no other request is
    /// doing so; a failure leaves the map as it was (the request goes on with it).
    async fn refresh_aged_map(&self) {
        let aged = lock(&self.inner.map_fetched).is_some_and(|at| at.elapsed() > MAP_MAX_AGE);
        if !aged || self.inner.refreshing_aged_map.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the refresh ends (a dropped request included).
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.inner.refreshing_aged_map);
        let _ = self.refresh_map().await;
        // Failed or not, not again before another MAP_MAX_AGE.
        *lock(&self.inner.map_fetched) = Some(std::time::Instant::now());
    }

    /// Fetches the partition map from the first node that answers.
    async fn refresh_map(&self) -> Result<(), ClientError> {
        let mut last_err = None;
        for addr in self.map_sources() {
            let fetched = match self.connection(&addr).await {
                Ok(conn) => {
                    conn.call(&Request::GetMap, self.inner.config.request_timeout)
                        .await
                }
                Err(e) => Err(e),
            };
            match fetched {
                Ok(Reply::Map(map)) if map.partitions > 0 => {
                    let mut known = lock(&self.inner.map);
                    // A node cut off from the cluster (or marked down) keeps an old map;
                    // never trade a newer one for it.
                    if known.as_ref().is_none_or(|k| map.epoch >= k.epoch) {
                        *known = Some(*map);
                        *lock(&self.inner.map_fetched) = Some(std::time::Instant::now());
                        return Ok(());
                    }
                    last_err = Some(ClientError::Unavailable {
                        code: Unavailability::CutOff,
                        reason: format!("{addr} has an older partition map"),
                    });
                }
                Ok(Reply::Map(_)) => {
                    last_err = Some(ClientError::Unavailable {
                        code: Unavailability::NotJoined,
                        reason: format!("{addr} has not joined a cluster yet"),
                    })
                }
                Ok(Reply::Unauthorized) | Err(ClientError::Unauthorized) => {
                    return Err(ClientError::Unauthorized)
                }
                Ok(other) => last_err = Some(unexpected(other)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(ClientError::Connect {
            addr: String::new(),
            reason: "no gateways".into(),
        }))
    }

    /// The address of the node believed to lead `obj`'s partition, and the partition.
    fn route(&self, obj: &ObjKey) -> Option<(String, u32)> {
        let partitions = lock(&self.inner.map).as_ref()?.partitions;
        self.route_partition(partition_of(key_hash(&obj.namespace, &obj.key), partitions))
    }

    /// The address of the node believed to lead partition `p`, and `p`.
    fn route_partition(&self, p: u32) -> Option<(String, u32)> {
        let map = lock(&self.inner.map);
        let map = map.as_ref()?;
        let leader = map.leaders.get(p as usize).copied().flatten();
        let replicas = map.replicas.get(p as usize)?;
        let id = leader.or_else(|| replicas.first().copied())?;
        Some((map.addr_of(id)?.to_string(), p))
    }

    /// Drops the pooled connections to `addr` and, for partition `p`, the belief that it
    /// leads: the next request opens afresh and learns the leader again.
    fn forget_node(&self, addr: &str, p: Option<u32>) {
        lock(&self.inner.pools).remove(addr);
        let mut map = lock(&self.inner.map);
        let Some(map) = map.as_mut() else { return };
        let id = map.nodes.iter().find(|n| n.addr == addr).map(|n| n.id);
        if let Some(slot) = p.and_then(|p| map.leaders.get_mut(p as usize)) {
            if *slot == id {
                *slot = None;
            }
        }
    }

    /// Records that `addr` leads partition `p` (from a redirect).
    fn learn_leader(&self, p: u32, addr: &str) -> bool {
        let mut map = lock(&self.inner.map);
        let Some(map) = map.as_mut() else {
            return false;
        };
        let Some(id) = map.nodes.iter().find(|n| n.addr == addr).map(|n| n.id) else {
            return false;
        };
        if let Some(slot) = map.leaders.get_mut(p as usize) {
            *slot = Some(id);
        }
        true
    }

    /// Sends a request to a node: the partition leader for operations, any node
    /// otherwise. Follows leader redirects, refreshes the map on failures, and retries
    /// within `maxRequestRetries` when the request surely did not run, or when it only
    /// reads.
    async fn call(&self, request: &Request, extra_wait: Duration) -> Result<Reply, ClientError> {
        // Migration steps are idempotent per transfer; a pulling read finds the object
        // already here when retried. A pulling read-and-lock is not: a retry would
        // queue behind the lock the first attempt may have taken.
        let idempotent = matches!(
            request,
            Request::Ping
                | Request::Status
                | Request::GetMap
                | Request::Op(Op::Read { .. })
                | Request::Geo(_)
                | Request::Pull {
                    op: Op::Read { .. },
                    ..
                }
        );
        self.refresh_aged_map().await;
        let timeout = self.inner.config.request_timeout + extra_wait;
        let (mut attempt, mut redirects) = (0u32, 0u32);
        loop {
            let routed = match request {
                Request::Op(op) | Request::Pull { op, .. } => self.route(op.obj()),
                Request::Geo(op) => self.route(op.obj()),
                _ => None,
            };
            let addr = match &routed {
                Some((addr, _)) => addr.clone(),
                None => self.map_sources().into_iter().next().unwrap_or_default(),
            };
            let result = match self.connection(&addr).await {
                Ok(conn) => conn.call(request, timeout).await,
                Err(e) => Err(e),
            };
            if matches!(result, Err(ClientError::Timeout { .. })) {
                // A node that stops answering may be cut off: nothing after this should
                // wait on the same connection or take it for the partition's leader.
                self.forget_node(&addr, routed.as_ref().map(|(_, p)| *p));
            }
            if let (Ok(Reply::NotLeader { leader_hint }), Some((_, p))) = (&result, &routed) {
                let learned = leader_hint
                    .as_deref()
                    .is_some_and(|hint| hint != addr && self.learn_leader(*p, hint));
                if learned && redirects < MAX_REDIRECTS {
                    redirects += 1;
                    continue;
                }
            }
            let result = match result {
                Ok(
                    reply @ (Reply::Unavailable { .. }
                    | Reply::NotLeader { .. }
                    | Reply::OutcomeUnknown { .. }),
                ) => Err(unexpected(reply)),
                other => other,
            };
            let retry = match &result {
                Err(e) if e.did_not_run() => true,
                Err(e) if e.is_indeterminate() => idempotent,
                _ => false,
            };
            if !retry || attempt >= self.inner.config.max_request_retries {
                return result;
            }
            attempt += 1;
            let backoff = Duration::from_millis(50u64 << attempt.min(5));
            tracing::debug!(attempt, ?backoff, error = ?result.err(), "retrying request");
            tokio::time::sleep(backoff).await;
            // The node may be gone or no longer lead: learn the map again.
            let _ = self.refresh_map().await;
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

    /// Runs a migration step on the partition leader of its object (nodes use this for
    /// their own cluster; nodes accept it only from other nodes).
    pub async fn geo(&self, op: GeoOp) -> Result<Reply, ClientError> {
        self.call(&Request::Geo(op), Duration::ZERO).await
    }

    /// Runs a read (`Read` or `ReadAndLock`) that pulls the object from `remote_stores`
    /// (site names known to the nodes), in order, when it is not here; returns the
    /// node's reply as is.
    pub async fn pull(&self, op: Op, remote_stores: &[String]) -> Result<Reply, ClientError> {
        let limit = self.inner.max_value_bytes.load(Ordering::Relaxed);
        check_op(&op, usize::try_from(limit).unwrap_or(usize::MAX))?;
        let wait = match &op {
            Op::ReadAndLock { wait_ms, .. } => Duration::from_millis(*wait_ms),
            _ => Duration::ZERO,
        };
        // Each remote store may cost the nodes' geo timeout.
        let remote = Duration::from_secs(10) * remote_stores.len() as u32;
        let request = Request::Pull {
            op,
            remote_stores: remote_stores.to_vec(),
        };
        self.call(&request, wait + remote).await
    }

    /// Checks the node answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(&Request::Ping, Duration::ZERO).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The counters of the node at `addr`.
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatus, ClientError> {
        let conn = self.connection(addr).await?;
        match conn
            .call(&Request::Status, self.inner.config.request_timeout)
            .await?
        {
            Reply::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// The counters of the first node that answers.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.call(&Request::Status, Duration::ZERO).await? {
            Reply::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }
}
