//! The one openraft type configuration every Raft group of a node uses: partition groups
//! and the control group alike carry a [`GroupCommand`] and answer a [`GroupResponse`].

use std::io::Cursor;
use std::sync::Arc;

use grid_proto::Millis;
use serde::{Deserialize, Serialize};

use super::control::{ControlCommand, ControlResponse};
use crate::partition::{Command, Outcome};

/// Identifies a Raft group on the wire: a partition number, or [`CONTROL_GROUP`].
pub type GroupId = u32;

/// The control group's id.
pub const CONTROL_GROUP: GroupId = u32::MAX;

pub use crate::partition::NodeId;

/// A log entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// For a partition group: a command stamped with the leader's clock.
    Partition {
        /// The leader's clock when it proposed the command.
        now: Millis,
        /// The command, shared: the log, each follower's replication and the state
        /// machine hold the same one (encoded exactly as the command itself).
        cmd: Arc<Command>,
    },
    /// For the control group.
    Control(ControlCommand),
}

/// What applying an entry returns to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupResponse {
    /// Blank and membership entries.
    #[default]
    None,
    /// A partition command's outcome.
    Partition(Outcome),
    /// A control command's result.
    Control(ControlResponse),
}

openraft::declare_raft_types!(
    /// The type configuration of every group.
    pub TypeConfig:
        D = GroupCommand,
        R = GroupResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft group handle.
pub type GroupRaft = openraft::Raft<TypeConfig>;
/// A group member's address record.
pub type Member = openraft::BasicNode;
