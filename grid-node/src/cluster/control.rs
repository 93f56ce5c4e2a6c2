//! The control group's state: the cluster's nodes and the partition map, with an epoch
//! that grows on every change. Pure; the control group's Raft replicates it.
//!
//! The map is the desired placement. Each partition's leader moves its group's
//! membership toward it (learner catch-up, then a voter change), so nothing is lost while
//! data moves.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::placement::{plan, ReplicaSet};
use super::raft_types::NodeId;

/// A node's standing in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving and assigned partitions.
    Active,
    /// Leaving gracefully: its partitions are moving away.
    Leaving,
    /// Unreachable past the grace period; its partitions were re-placed.
    Down,
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Client and peer address.
    pub addr: String,
    /// Its standing.
    pub state: NodeState,
}

/// An input of the control state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Creates the cluster with its first node (id 1).
    Init {
        /// A random id for this cluster, told to every node that joins.
        cluster_id: u64,
        /// Partitions of the cluster, fixed from now on.
        partitions: u32,
        /// Replicas per partition.
        replicas: u32,
        /// The first node's address.
        addr: String,
    },
    /// A node asks to join; it gets the next id.
    Join {
        /// Its address.
        addr: String,
    },
    /// A node leaves gracefully.
    Leave {
        /// The node.
        id: NodeId,
    },
    /// A node was unreachable past the grace period.
    MarkDown {
        /// The node.
        id: NodeId,
    },
    /// A node marked down is alive and reachable again and asks to be back. Accepted
    /// only for the same id at the same address (its replicas are caught up by Raft under
    /// that id), and only while no other node serves at that address.
    Rejoin {
        /// The node.
        id: NodeId,
        /// The address it serves at.
        addr: String,
    },
}

/// The result of a control command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Applied; the map is at `epoch`.
    Applied {
        /// Map epoch after the command.
        epoch: u64,
    },
    /// A node joined under `id`.
    Joined {
        /// Its new id.
        id: NodeId,
        /// Map epoch after the join.
        epoch: u64,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Nodes and the partition map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Random id chosen at bootstrap; peers of another cluster are refused.
    pub cluster_id: u64,
    /// Grows on every change of nodes or map.
    pub epoch: u64,
    /// Number of partitions (0 until initialized).
    pub partitions: u32,
    /// Replicas per partition.
    pub replicas: u32,
    /// Next id to hand out.
    pub next_node_id: NodeId,
    /// Every node ever admitted that is not forgotten.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Desired replica set of each partition; index 0 is the preferred leader.
    pub assignment: Vec<ReplicaSet>,
}

impl ClusterState {
    /// Nodes that should hold data.
    pub fn active_nodes(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Active)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A node's address.
    pub fn addr_of(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id).map(|n| n.addr.as_str())
    }

    fn replan(&mut self) {
        let active = self.active_nodes();
        if !active.is_empty() {
            let previous = (!self.assignment.is_empty()).then_some(self.assignment.as_slice());
            self.assignment = plan(self.partitions, self.replicas as usize, &active, previous);
        }
        self.epoch += 1;
    }

    /// Whether node `id` at `addr` may come back, and if it may, brings it back.
    fn rejoin(&mut self, id: NodeId, addr: &str) -> ControlResponse {
        let refused = |reason: &str| ControlResponse::Refused {
            reason: reason.to_string(),
        };
        if self.partitions == 0 {
            return refused("the cluster is not initialized");
        }
        let taken = self
            .nodes
            .iter()
            .any(|(other, n)| *other != id && n.addr == addr && n.state == NodeState::Active);
        let Some(node) = self.nodes.get_mut(&id) else {
            return refused("no such node; join as a new one");
        };
        if node.addr != addr {
            return refused("the node is registered at another address");
        }
        match node.state {
            NodeState::Active => ControlResponse::Applied { epoch: self.epoch },
            NodeState::Leaving => refused("the node has left the cluster"),
            NodeState::Down if taken => {
                refused("another node serves at that address now; join as a new one")
            }
            NodeState::Down => {
                node.state = NodeState::Active;
                self.replan();
                ControlResponse::Applied { epoch: self.epoch }
            }
        }
    }

    /// Applies one command.
    pub fn apply(&mut self, command: ControlCommand) -> ControlResponse {
        let refused = |reason: &str| ControlResponse::Refused {
            reason: reason.to_string(),
        };
        match command {
            ControlCommand::Init {
                cluster_id,
                partitions,
                replicas,
                addr,
            } => {
                if self.partitions != 0 {
                    return refused("the cluster is already initialized");
                }
                self.cluster_id = cluster_id;
                self.partitions = partitions;
                self.replicas = replicas;
                self.next_node_id = 2;
                self.nodes.insert(
                    1,
                    NodeInfo {
                        addr,
                        state: NodeState::Active,
                    },
                );
                self.replan();
                ControlResponse::Joined {
                    id: 1,
                    epoch: self.epoch,
                }
            }
            ControlCommand::Join { addr } => {
                if self.partitions == 0 {
                    return refused("the cluster is not initialized");
                }
                let id = self.next_node_id;
                self.next_node_id += 1;
                // The same address again is a restarted process: its old self is gone.
                for node in self.nodes.values_mut() {
                    if node.addr == addr && node.state == NodeState::Active {
                        node.state = NodeState::Down;
                    }
                }
                self.nodes.insert(
                    id,
                    NodeInfo {
                        addr,
                        state: NodeState::Active,
                    },
                );
                self.replan();
                ControlResponse::Joined {
                    id,
                    epoch: self.epoch,
                }
            }
            ControlCommand::Rejoin { id, addr } => self.rejoin(id, &addr),
            ControlCommand::Leave { id } | ControlCommand::MarkDown { id } => {
                let state = if matches!(command, ControlCommand::Leave { .. }) {
                    NodeState::Leaving
                } else {
                    NodeState::Down
                };
                let active = self.active_nodes().len();
                let Some(node) = self.nodes.get_mut(&id) else {
                    return refused("no such node");
                };
                if node.state == state {
                    return ControlResponse::Applied { epoch: self.epoch };
                }
                if active == 1 && node.state == NodeState::Active {
                    return refused(
                        "the last active node cannot leave; its data would have nowhere to go",
                    );
                }
                node.state = state;
                self.replan();
                ControlResponse::Applied { epoch: self.epoch }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(resp: ControlResponse) -> NodeId {
        match resp {
            ControlResponse::Joined { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodes_join_and_the_map_follows() {
        let mut s = ClusterState::default();
        assert!(matches!(
            s.apply(ControlCommand::Join { addr: "a".into() }),
            ControlResponse::Refused { .. }
        ));
        assert_eq!(
            joined(s.apply(ControlCommand::Init {
                cluster_id: 7,
                partitions: 8,
                replicas: 3,
                addr: "a:1".into()
            })),
            1
        );
        assert!(s.assignment.iter().all(|r| r == &vec![1]));
        let e1 = s.epoch;
        assert_eq!(
            joined(s.apply(ControlCommand::Join { addr: "b:1".into() })),
            2
        );
        assert_eq!(
            joined(s.apply(ControlCommand::Join { addr: "c:1".into() })),
            3
        );
        assert!(s.epoch > e1);
        assert!(s.assignment.iter().all(|r| r.len() == 3));
        // Down: re-placed away, epoch grows, twice is a no-op.
        let e2 = s.epoch;
        assert!(matches!(
            s.apply(ControlCommand::MarkDown { id: 3 }),
            ControlResponse::Applied { .. }
        ));
        assert!(s.assignment.iter().all(|r| !r.contains(&3) && r.len() == 2));
        assert!(s.epoch > e2);
        let e3 = s.epoch;
        s.apply(ControlCommand::MarkDown { id: 3 });
        assert_eq!(s.epoch, e3);
        // A restart at the same address gets a new id and retires the old one.
        let again = joined(s.apply(ControlCommand::Join { addr: "b:1".into() }));
        assert_eq!(again, 4);
        assert_eq!(s.nodes[&2].state, NodeState::Down);
        assert_eq!(s.active_nodes(), BTreeSet::from([1, 4]));
    }

    fn three_nodes() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(ControlCommand::Init {
            cluster_id: 7,
            partitions: 8,
            replicas: 3,
            addr: "a:1".into(),
        });
        s.apply(ControlCommand::Join { addr: "b:1".into() });
        s.apply(ControlCommand::Join { addr: "c:1".into() });
        s
    }

    fn refused(resp: ControlResponse) -> bool {
        matches!(resp, ControlResponse::Refused { .. })
    }

    #[test]
    fn a_node_marked_down_rejoins_and_gets_replicas_again() {
        let mut s = three_nodes();
        s.apply(ControlCommand::MarkDown { id: 3 });
        assert!(s.assignment.iter().all(|r| r.len() == 2));
        let down = s.epoch;
        let back = s.apply(ControlCommand::Rejoin {
            id: 3,
            addr: "c:1".into(),
        });
        assert!(matches!(back, ControlResponse::Applied { epoch } if epoch > down));
        assert_eq!(s.nodes[&3].state, NodeState::Active);
        assert!(s.assignment.iter().all(|r| r.len() == 3 && r.contains(&3)));
        // Asking again changes nothing: an active node's rejoin is a no-op.
        let settled = s.epoch;
        assert!(matches!(
            s.apply(ControlCommand::Rejoin { id: 3, addr: "c:1".into() }),
            ControlResponse::Applied { epoch } if epoch == settled
        ));
    }

    #[test]
    fn a_rejoin_is_refused_unless_it_is_the_same_node_at_the_same_address() {
        let mut s = three_nodes();
        s.apply(ControlCommand::MarkDown { id: 3 });
        let before = s.clone();
        // Another address, an unknown id: refused, nothing changes.
        assert!(refused(s.apply(ControlCommand::Rejoin {
            id: 3,
            addr: "x:1".into()
        })));
        assert!(refused(s.apply(ControlCommand::Rejoin {
            id: 9,
            addr: "c:1".into()
        })));
        assert_eq!(s, before);
        // A node that left does not come back by rejoining.
        s.apply(ControlCommand::Leave { id: 2 });
        assert!(refused(s.apply(ControlCommand::Rejoin {
            id: 2,
            addr: "b:1".into()
        })));
        // A process restarted at the address took over under a new id: the old id stays
        // down.
        let new_id = joined(s.apply(ControlCommand::Join { addr: "c:1".into() }));
        assert!(refused(s.apply(ControlCommand::Rejoin {
            id: 3,
            addr: "c:1".into()
        })));
        assert_eq!(s.nodes[&3].state, NodeState::Down);
        assert_eq!(s.nodes[&new_id].state, NodeState::Active);
        // Before the cluster exists there is nothing to rejoin.
        assert!(refused(ClusterState::default().apply(
            ControlCommand::Rejoin {
                id: 1,
                addr: "a:1".into()
            }
        )));
    }

    #[test]
    fn the_last_node_cannot_leave() {
        let mut s = ClusterState::default();
        s.apply(ControlCommand::Init {
            cluster_id: 7,
            partitions: 4,
            replicas: 3,
            addr: "a".into(),
        });
        assert!(matches!(
            s.apply(ControlCommand::Leave { id: 1 }),
            ControlResponse::Refused { .. }
        ));
        assert!(matches!(
            s.apply(ControlCommand::Leave { id: 9 }),
            ControlResponse::Refused { .. }
        ));
    }
}
