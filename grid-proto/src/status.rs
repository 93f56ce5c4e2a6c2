//! What a node reports about itself for `gridctl status`: counters and its background
//! jobs.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

use crate::geo::RemoteStoreStatus;
use crate::msg::Millis;

/// Counters a node reports for `gridctl status`.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct NodeStatus {
    /// Node software version.
    pub server_version: String,
    /// Address the node serves clients on.
    pub listen: String,
    /// Partitions this node holds a replica of.
    pub partitions: u32,
    /// Objects stored.
    pub objects: u64,
    /// Bytes of values stored.
    pub value_bytes: u64,
    /// Objects locked right now.
    pub locked: u64,
    /// Requests waiting in lock queues right now.
    pub lock_waiters: u64,
    /// Open client connections.
    pub connections: u64,
    /// Requests served since start.
    pub requests: u64,
    /// Objects expired since start.
    pub expired: u64,
    /// Time since the node started.
    pub uptime_ms: Millis,
    /// The node's id in its cluster (0 before it has joined).
    pub node_id: u64,
    /// The partition map epoch this node has.
    pub map_epoch: u64,
    /// Partitions this node leads.
    pub partitions_led: u32,
    /// Hosted partitions whose Raft voters do not match the map yet (moving, catching up).
    pub unsettled: u32,
    /// Objects evicted for low memory since start, in the partitions led.
    pub evicted: u64,
    /// Value bytes held over every hosted replica (what `--max-memory` limits).
    pub memory_used: u64,
    /// Connections registered for events on this node.
    pub event_subscribers: u64,
    /// Events (expiry, eviction) waiting for a client's acknowledgement, in the
    /// partitions led.
    pub pending_events: u64,
    /// The node's site (empty without geo replication).
    pub site: String,
    /// The remote sites it can pull from.
    pub remote_stores: Vec<RemoteStoreStatus>,
    /// The node's background jobs, by name.
    pub workers: Vec<WorkerStatus>,
    /// The node votes in the control group, which holds the map (a node back from being
    /// marked down votes again once the control leader has re-added it).
    pub control_voter: bool,
}

/// What a background job is doing.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    /// Between rounds.
    #[default]
    Waiting,
    /// In a round.
    Running,
    /// Serving until shutdown (a listener).
    Serving,
    /// Ended (shutdown, or a listener that failed).
    Stopped,
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerState::Waiting => "waiting",
            WorkerState::Running => "running",
            WorkerState::Serving => "serving",
            WorkerState::Stopped => "stopped",
        })
    }
}

/// One background job of a node, for `gridctl status --workers`. Times are relative to
/// the answering node's clock, so they read the same whatever the asker's clock says.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct WorkerStatus {
    /// The job's name (`liveness`, `reconcile`, ...).
    pub name: String,
    /// What it is doing.
    pub state: WorkerState,
    /// Rounds it finished.
    pub runs: u64,
    /// Rounds (or a serving job's end) that reported an error.
    pub failures: u64,
    /// How long it has been in its state (since a round started or ended, or since it
    /// began serving); none before its first round.
    pub since_change_ms: Option<Millis>,
    /// How long its last finished round took.
    pub last_took_ms: Millis,
    /// Its last error, kept until another replaces it.
    pub last_error: Option<String>,
    /// Time since that error.
    pub since_last_error_ms: Option<Millis>,
}
