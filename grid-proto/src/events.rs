//! Events the grid pushes to registered clients: objects that expired or were evicted,
//! with their final bytes.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

use crate::msg::ObjKey;

/// Names one event: the partition it comes from and its number there. Redeliveries of an
/// event carry the same id, so a handler can drop duplicates.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct EventId {
    /// The partition.
    pub partition: u32,
    /// Its event number, never reused in the partition.
    pub seq: u64,
}

/// Why an object left the grid by itself.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub enum EventCause {
    /// Its timeout passed.
    Expired,
    /// The node ran short of memory and evicted it (least recently used first).
    LowMemory,
    /// Removed by `RemoveTagged` (revoking the sessions of a tag); carries its final bytes.
    Revoked,
}

impl std::fmt::Display for EventCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventCause::Expired => "expired",
            EventCause::LowMemory => "low-memory",
            EventCause::Revoked => "revoked",
        })
    }
}

/// An object that left the grid, pushed to one registered client of its namespace.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub struct GridEvent {
    /// Its id; acknowledge it with `AckEvent`.
    pub id: EventId,
    /// Why the object left.
    pub cause: EventCause,
    /// The object.
    pub obj: ObjKey,
    /// Its final bytes.
    pub value: Vec<u8>,
    /// Its final version.
    pub version: u64,
}
