//! The node as its connections see it: checks requests at the edge and hands them to the
//! cluster runtime.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use grid_proto::{check_op, Millis, NodeStatus, Op, PartitionMap, Reply};

use crate::clock::Clock;
use crate::cluster::runtime::ClusterNode;
use crate::config::NodeConfig;
use crate::exports::Exports;
use crate::geo::GeoService;
use crate::metrics::{inc, Metrics};
use crate::workers::Workers;

/// Bytes of objects (or keys) in one page of an export (or a tag lookup), at most.
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most remote stores one read may name.
const MAX_REMOTE_STORES: usize = 16;

/// A running node's shared state.
#[derive(Debug)]
pub struct Node {
    cluster: Arc<ClusterNode>,
    clock: Arc<dyn Clock>,
    config: NodeConfig,
    started: Millis,
    /// Counters for the admin endpoint and `status`.
    pub metrics: Metrics,
    geo: Option<Arc<GeoService>>,
    workers: Workers,
    exports: Exports,
}

impl Node {
    /// Wraps a cluster node.
    pub fn new(
        config: NodeConfig,
        cluster: Arc<ClusterNode>,
        clock: Arc<dyn Clock>,
        geo: Option<Arc<GeoService>>,
    ) -> Self {
        Self {
            cluster,
            started: clock.now(),
            workers: Workers::new(Arc::clone(&clock)),
            clock,
            config,
            metrics: Metrics::default(),
            geo,
            exports: Exports::default(),
        }
    }

    /// A page of a partition's objects for a backup (`export` 0 starts one here, as the
    /// partition's leader).
    pub async fn export(&self, partition: u32, export: u64, from: u64) -> Reply {
        let budget = self.page_budget();
        let export = if export == 0 {
            let objects = match self.cluster.export(partition).await {
                Ok(objects) => objects,
                Err(reply) => return reply,
            };
            match self.exports.start(partition, objects, Instant::now()) {
                Ok(id) => id,
                Err(reply) => return reply,
            }
        } else {
            export
        };
        self.exports
            .page(export, partition, from, budget, Instant::now())
    }

    /// A page of the keys of a partition's objects in `namespace` carrying `tag`, from
    /// just after `after` (as its leader).
    pub async fn find_tag(
        &self,
        partition: u32,
        namespace: &str,
        tag: &str,
        after: Option<&[u8]>,
    ) -> Reply {
        let valid = grid_proto::limits::validate_namespace(namespace)
            .map_err(|e| e.to_string())
            .and_then(|()| grid_proto::limits::validate_tag(tag).map_err(|e| e.to_string()));
        if let Err(reason) = valid {
            return Reply::BadRequest { reason };
        }
        match self
            .cluster
            .find_tag(partition, namespace, tag, after, self.page_budget())
            .await
        {
            Ok((keys, more)) => Reply::Keys { keys, more },
            Err(reply) => reply,
        }
    }

    /// Bytes of one page of an export or a tag lookup: a page carries at least one item,
    /// so any value this node took fits a frame.
    fn page_budget(&self) -> usize {
        PAGE_BYTES.min(self.config.max_value_bytes / 2)
    }

    /// A read that pulls the object from remote sites when it is missing here.
    pub async fn pull(&self, op: Op, remote_stores: Vec<String>) -> Reply {
        if !matches!(op, Op::Read { .. } | Op::ReadAndLock { .. }) {
            return Reply::BadRequest {
                reason: "only Read and ReadAndLock pull from remote stores".into(),
            };
        }
        if remote_stores.len() > MAX_REMOTE_STORES {
            return Reply::BadRequest {
                reason: format!("at most {MAX_REMOTE_STORES} remote stores"),
            };
        }
        match &self.geo {
            Some(geo) if !remote_stores.is_empty() => {
                geo.pull(&self.cluster, self.as_proposed(op), &remote_stores)
                    .await
            }
            None if !remote_stores.is_empty() => match self.execute(op).await {
                Reply::NotFound => Reply::NotFoundRemote {
                    reasons: vec!["this node has no geo replication (--geo-listen)".into()],
                },
                other => other,
            },
            _ => self.execute(op).await,
        }
    }

    /// The settings the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's background jobs.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// The cluster runtime.
    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.cluster
    }

    /// The refusal for an operation whose key or value is out of bounds, counted.
    pub fn check(&self, op: &Op) -> Result<(), Reply> {
        check_op(op, self.config.max_value_bytes).map_err(|err| {
            inc(&self.metrics.bad_requests_total);
            Reply::from(err)
        })
    }

    /// Checks one operation's limits and runs it on its partition.
    pub async fn execute(&self, op: Op) -> Reply {
        if let Err(reply) = self.check(&op) {
            return reply;
        }
        if let Some(reply) = self.refuse_for_memory(&op) {
            return reply;
        }
        if let Some(reply) = self.refuse_for_disk(&op) {
            return reply;
        }
        self.cluster.execute(self.as_proposed(op)).await
    }

    /// `op` with this node's settings filled in ([`Op::as_proposed`]).
    fn as_proposed(&self, op: Op) -> Op {
        let lease = self.config.default_lock_lease.as_millis() as u64;
        op.as_proposed(self.config.max_value_bytes, lease)
    }

    /// `DiskFull` for a write that adds data while the data directory's disk is under
    /// its reserve.
    fn refuse_for_disk(&self, op: &Op) -> Option<Reply> {
        let grows = op.adds_data();
        let (free, reserve) = self.cluster.short_of_space().filter(|_| grows)?;
        inc(&self.metrics.disk_full_refusals_total);
        Some(Reply::Unavailable {
            code: grid_proto::Unavailability::DiskFull,
            reason: format!(
                "the data directory's disk has {free} bytes free, under --disk-reserve {reserve}: writes are refused until there is room (reads go on)"
            ),
        })
    }

    /// `LowMemory` for a write that adds bytes while the node is past its limit and may
    /// not evict.
    fn refuse_for_memory(&self, op: &Op) -> Option<Reply> {
        let limit = self.cluster.memory_limit();
        let max = limit.max.filter(|_| !limit.evict)?;
        let used = self.cluster.memory_used();
        (op.adds_data() && used > max).then(|| {
            inc(&self.metrics.low_memory_refusals_total);
            Reply::LowMemory { used, limit: max }
        })
    }

    /// The partition map.
    pub fn map(&self) -> PartitionMap {
        self.cluster.map()
    }

    /// Counters for `gridctl status`: objects, bytes and locks of the partitions this node
    /// leads, so the sums over all nodes are the cluster's totals.
    pub fn status(&self, listen: String) -> NodeStatus {
        let r = self.cluster.report();
        NodeStatus {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            listen,
            partitions: r.hosted,
            objects: r.led_stats.objects,
            value_bytes: r.led_stats.value_bytes,
            locked: r.led_stats.locked,
            lock_waiters: r.lock_waiters,
            connections: self.metrics.connections_open.load(Ordering::Relaxed),
            requests: self.metrics.requests_total.load(Ordering::Relaxed),
            expired: r.expired,
            evicted: r.evicted,
            memory_used: self.cluster.memory_used(),
            event_subscribers: self.cluster.events().subscribers() as u64,
            pending_events: r.pending_events,
            site: self
                .geo
                .as_ref()
                .map(|g| g.site().to_string())
                .unwrap_or_default(),
            remote_stores: self
                .geo
                .as_ref()
                .map(|g| g.remote_status())
                .unwrap_or_default(),
            uptime_ms: self.clock.now().saturating_sub(self.started),
            node_id: r.node_id,
            map_epoch: r.map_epoch,
            partitions_led: r.led,
            unsettled: r.unsettled,
            workers: self.workers.status(),
            control_voter: r.control_voter,
        }
    }

    /// Requests waiting for locks in the partitions this node leads.
    pub fn lock_waiters(&self) -> u64 {
        self.cluster.report().lock_waiters
    }
}
