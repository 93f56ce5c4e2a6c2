//! The partition map: which nodes hold and lead each partition.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

/// A node of the cluster, as the map shows it.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub struct MapNode {
    /// Its id.
    pub id: u64,
    /// Its client address.
    pub addr: String,
    /// False once it is leaving or down.
    pub active: bool,
}

/// Where every partition lives.
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
pub struct PartitionMap {
    /// Grows on every change.
    pub epoch: u64,
    /// Number of partitions.
    pub partitions: u32,
    /// The nodes.
    pub nodes: Vec<MapNode>,
    /// Each partition's replica set (node ids); the first is the preferred leader.
    pub replicas: Vec<Vec<u64>>,
    /// Each partition's leader as known to the answering node, if known.
    pub leaders: Vec<Option<u64>>,
}

impl PartitionMap {
    /// The address of node `id`.
    pub fn addr_of(&self, id: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.as_str())
    }
}
