//! Node counters, rendered in the Prometheus text format on the admin port.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use grid_proto::NodeStatus;

/// Monotonic counters and gauges updated by the connection tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Requests decoded and answered.
    pub requests_total: AtomicU64,
    /// Requests refused as malformed or over a limit.
    pub bad_requests_total: AtomicU64,
    /// Connections closed for a framing error (garbage, oversize, unknown version).
    pub frame_errors_total: AtomicU64,
    /// Failed authentications.
    pub auth_failures_total: AtomicU64,
    /// Writes refused because the node is past `--max-memory` with eviction off.
    pub low_memory_refusals_total: AtomicU64,
    /// Writes refused because the data directory's disk is under `--disk-reserve`.
    pub disk_full_refusals_total: AtomicU64,
    /// Connections refused at accept because `--max-connections` were open.
    pub connections_refused_total: AtomicU64,
    /// Connections closed by a bound: no hello in time, idle, or a client not reading.
    pub connections_timed_out_total: AtomicU64,
    /// Connections that proved the cluster secret (other nodes).
    pub peer_connections_total: AtomicU64,
    /// Peer messages received (each one frame, carrying a batch of requests).
    pub peer_messages_total: AtomicU64,
    /// Requests those peer messages carried.
    pub peer_requests_total: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// Renders the counters and the node status as Prometheus text.
    pub fn render(&self, status: &NodeStatus) -> String {
        let rows: [(&str, &str, &str, u64); 26] = [
            (
                "grid_connections_total",
                "counter",
                "Client connections accepted.",
                get(&self.connections_total),
            ),
            (
                "grid_connections_open",
                "gauge",
                "Client connections open.",
                get(&self.connections_open),
            ),
            (
                "grid_requests_total",
                "counter",
                "Requests answered.",
                get(&self.requests_total),
            ),
            (
                "grid_bad_requests_total",
                "counter",
                "Requests refused as malformed or over a limit.",
                get(&self.bad_requests_total),
            ),
            (
                "grid_connections_refused_total",
                "counter",
                "Connections refused at accept: --max-connections were open.",
                get(&self.connections_refused_total),
            ),
            (
                "grid_connections_timed_out_total",
                "counter",
                "Connections closed by a bound: no hello in time, idle, or not reading replies.",
                get(&self.connections_timed_out_total),
            ),
            (
                "grid_peer_connections_total",
                "counter",
                "Connections that proved the cluster secret.",
                get(&self.peer_connections_total),
            ),
            (
                "grid_peer_messages_total",
                "counter",
                "Peer messages received, each one frame carrying a batch of requests.",
                get(&self.peer_messages_total),
            ),
            (
                "grid_peer_requests_total",
                "counter",
                "Requests carried by the peer messages received.",
                get(&self.peer_requests_total),
            ),
            (
                "grid_frame_errors_total",
                "counter",
                "Connections closed for a framing error.",
                get(&self.frame_errors_total),
            ),
            (
                "grid_auth_failures_total",
                "counter",
                "Failed authentications.",
                get(&self.auth_failures_total),
            ),
            (
                "grid_expired_total",
                "counter",
                "Objects that timed out in the partitions led.",
                status.expired,
            ),
            ("grid_objects", "gauge", "Objects stored.", status.objects),
            (
                "grid_value_bytes",
                "gauge",
                "Bytes of values stored.",
                status.value_bytes,
            ),
            (
                "grid_locked_objects",
                "gauge",
                "Objects locked.",
                status.locked,
            ),
            (
                "grid_lock_waiters",
                "gauge",
                "Requests waiting for a lock.",
                status.lock_waiters,
            ),
            (
                "grid_partitions",
                "gauge",
                "Partition replicas held by this node.",
                u64::from(status.partitions),
            ),
            (
                "grid_partitions_led",
                "gauge",
                "Partitions this node leads.",
                u64::from(status.partitions_led),
            ),
            (
                "grid_partitions_unsettled",
                "gauge",
                "Partitions whose replicas do not match the map yet.",
                u64::from(status.unsettled),
            ),
            (
                "grid_low_memory_refusals_total",
                "counter",
                "Writes refused past --max-memory (eviction off).",
                get(&self.low_memory_refusals_total),
            ),
            (
                "grid_disk_full_refusals_total",
                "counter",
                "Writes refused while the data directory's disk is under --disk-reserve.",
                get(&self.disk_full_refusals_total),
            ),
            (
                "grid_evicted_total",
                "counter",
                "Objects evicted for low memory in the partitions led.",
                status.evicted,
            ),
            (
                "grid_memory_used_bytes",
                "gauge",
                "Value bytes held over every hosted replica.",
                status.memory_used,
            ),
            (
                "grid_event_subscribers",
                "gauge",
                "Connections registered for events.",
                status.event_subscribers,
            ),
            (
                "grid_pending_events",
                "gauge",
                "Events waiting for a client's acknowledgement, in the partitions led.",
                status.pending_events,
            ),
            (
                "grid_map_epoch",
                "gauge",
                "Partition map epoch known to this node.",
                status.map_epoch,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
