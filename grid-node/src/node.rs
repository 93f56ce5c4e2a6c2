//! The node's partitions and the one entry point requests go through.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use grid_proto::limits::OpError;
use grid_proto::{check_op, key_hash, partition_of, Millis, NodeStatus, Op, Reply};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::metrics::{inc, Metrics};
use crate::partition::{Execution, Expiration, Partition};

/// A running node's state, shared by its connection tasks.
#[derive(Debug)]
pub struct Node {
    partitions: Box<[Mutex<Partition>]>,
    clock: Arc<dyn Clock>,
    config: NodeConfig,
    started: Millis,
    /// Counters for the admin endpoint and `status`.
    pub metrics: Metrics,
}

impl Node {
    /// A node with empty partitions, reading time from `clock`.
    pub fn new(config: NodeConfig, clock: Arc<dyn Clock>) -> Self {
        let partitions = (0..config.partitions)
            .map(|_| Mutex::new(Partition::new(config.partition_config())))
            .collect();
        Self {
            partitions,
            started: clock.now(),
            clock,
            config,
            metrics: Metrics::default(),
        }
    }

    /// The settings the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn partition(&self, index: usize) -> MutexGuard<'_, Partition> {
        // A panic while applying is a bug; the partition state is still the last fully
        // applied one (every operation checks before it changes), so keep serving.
        self.partitions[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks and runs one operation on the partition that owns its key.
    pub fn execute(&self, op: &Op) -> Execution {
        if let Err(err) = check_op(op, self.config.max_value_bytes) {
            inc(&self.metrics.bad_requests_total);
            return Execution::Ready(match err {
                OpError::ValueTooLarge { size, limit } => Reply::TooLarge {
                    size: size as u64,
                    limit: limit as u64,
                },
                OpError::Key(e) => Reply::BadRequest {
                    reason: e.to_string(),
                },
            });
        }
        let obj = op.obj();
        let index = partition_of(key_hash(&obj.namespace, &obj.key), self.config.partitions);
        let mut expired = Vec::new();
        let execution = self
            .partition(index as usize)
            .execute(op, self.clock.now(), &mut expired);
        self.on_expired(expired);
        execution
    }

    /// Runs due expiry, lease ends and lock-wait deadlines on every partition.
    pub fn tick(&self) {
        let now = self.clock.now();
        for index in 0..self.partitions.len() {
            let mut partition = self.partition(index);
            if partition.next_deadline().is_some_and(|at| at <= now) {
                let expired = partition.tick(now);
                drop(partition);
                self.on_expired(expired);
            }
        }
    }

    fn on_expired(&self, expired: Vec<Expiration>) {
        for e in expired {
            inc(&self.metrics.expired_total);
            // Delivery to registered clients comes with expiration events; until then the
            // expiry is visible in logs and metrics.
            tracing::debug!(namespace = %e.obj.namespace, version = e.version, bytes = e.value.len(), "object expired");
        }
    }

    /// Counters for `gridctl status`.
    pub fn status(&self, listen: String) -> NodeStatus {
        let mut status = NodeStatus {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            listen,
            partitions: self.config.partitions,
            connections: self.metrics.connections_open.load(Ordering::Relaxed),
            requests: self.metrics.requests_total.load(Ordering::Relaxed),
            expired: self.metrics.expired_total.load(Ordering::Relaxed),
            uptime_ms: self.clock.now().saturating_sub(self.started),
            ..NodeStatus::default()
        };
        for index in 0..self.partitions.len() {
            let stats = self.partition(index).stats();
            status.objects += stats.objects;
            status.value_bytes += stats.value_bytes;
            status.locked += stats.locked;
        }
        status.lock_waiters = self.lock_waiters();
        status
    }

    /// Requests waiting for locks, over all partitions.
    pub fn lock_waiters(&self) -> u64 {
        (0..self.partitions.len())
            .map(|i| self.partition(i).waiting() as u64)
            .sum()
    }
}
