//! The replicated cluster: placement of partitions on nodes, one Raft group per partition
//! plus a control group for membership and the partition map.
//!
//! - [`placement`]: the pure planner (consistent hashing with balance bounds).
//! - [`control`]: the control state (nodes, map, epoch), pure.
//! - [`raft_types`], [`log_store`], [`state_machine`]: the one openraft configuration and
//!   its in-memory storage, shared by every group.
//! - [`peer`]: node-to-node messages over one connection per peer; [`filter`]: drop or
//!   delay them by peer and kind, for fault tests.
//! - [`group`]: a partition group as its leader runs client requests through it.
//! - [`runtime`]: a cluster node: bootstrap or join, hosting groups, moving them to the map,
//!   failure detection, ticking.

pub mod control;
pub mod durable;
pub mod filter;
pub mod group;
pub mod log_store;
pub mod peer;
pub mod placement;
pub mod raft_types;
pub mod runtime;
pub mod state_machine;
