//! The reconcile planner: what one reconcile round does, decided from the map and this
//! node's view of each partition, with no I/O and no clock of its own. The runtime
//! gathers the views ([`PartitionView`]), calls [`plan`], and carries out the
//! [`Step`]s it returns (`moves.rs`).
//!
//! Rules, per partition:
//! - not hosted here, listed by the map: host it;
//! - hosted, not listed: let it go when [`release_unlisted`] says so;
//! - led here by a voter, voters differ from the map, nothing under way: move the voters;
//! - led here, voters as the map says, the map's preferred leader is another node that
//!   has caught up, no hand-over cooling down or under way: hand leadership to it, at
//!   most [`NodeView::hand_over_room`] at a time.
//!
//! And once per round, on the control leader: keep the control group's members, unless
//! that is under way already ([`plan_control`]: every active node a member, up to five
//! voters, inactive members removed once they no longer vote).

use std::collections::BTreeSet;
use std::time::Duration;

use super::liveness::{release_unlisted, Unlisted};
use crate::cluster::raft_types::{GroupId, NodeId};

/// This node as the round sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NodeView {
    /// Its id.
    pub me: NodeId,
    /// It was out of touch past the grace period (probably marked down).
    pub was_away: bool,
    /// It leads the control group.
    pub leads_control: bool,
    /// A change of the control group's members is under way.
    pub control_busy: bool,
    /// Hand-overs that may start now (the limit less those under way).
    pub hand_over_room: usize,
}

/// One partition as the round sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionView {
    /// The partition.
    pub partition: GroupId,
    /// The map's replica set.
    pub target: BTreeSet<NodeId>,
    /// The map's preferred leader (its first replica).
    pub preferred: Option<NodeId>,
    /// This node's replica, if it hosts one.
    pub replica: Option<ReplicaView>,
}

/// A hosted replica as the round sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReplicaView {
    /// The group's voters, as this replica has them.
    pub voters: BTreeSet<NodeId>,
    /// The group's membership includes this node (as voter or learner).
    pub member: bool,
    /// This replica leads the group.
    pub leading: bool,
    /// How long the map has not listed this node for the partition.
    pub unlisted: Duration,
    /// How long the group has had no working leader, as this replica sees it.
    pub leaderless: Duration,
    /// A move or hand-over of this group is under way.
    pub busy: bool,
    /// A failed hand-over of this group is cooling down.
    pub hand_over_cooling: bool,
    /// The preferred leader's log is close to this leader's.
    pub preferred_caught_up: bool,
}

/// What the runtime does for the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Keep the control group's members in line with the active nodes.
    ManageControl,
    /// Start hosting the partition's replica.
    Host(GroupId),
    /// Stop hosting it.
    Release(GroupId),
    /// Swap the group's voters for the map's replica set.
    Move {
        /// The group.
        partition: GroupId,
        /// Its voters now.
        voters: BTreeSet<NodeId>,
        /// The map's replica set.
        target: BTreeSet<NodeId>,
    },
    /// Hand the group's leadership to node `to`.
    HandOver {
        /// The group.
        partition: GroupId,
        /// The preferred leader.
        to: NodeId,
    },
}

/// The steps of one reconcile round, in the order they are to be taken.
pub(super) fn plan(node: NodeView, partitions: &[PartitionView]) -> Vec<Step> {
    let mut steps = Vec::new();
    if node.leads_control && !node.control_busy {
        steps.push(Step::ManageControl);
    }
    let mut hand_over_room = node.hand_over_room;
    for view in partitions {
        let listed = view.target.contains(&node.me);
        let Some(replica) = &view.replica else {
            if listed {
                steps.push(Step::Host(view.partition));
            }
            continue;
        };
        let release = release_unlisted(Unlisted {
            listed,
            member: replica.member,
            voter: replica.voters.contains(&node.me),
            leading: replica.leading,
            was_away: node.was_away,
            unlisted: replica.unlisted,
            leaderless: replica.leaderless,
        });
        if release {
            steps.push(Step::Release(view.partition));
            continue;
        }
        if !replica.leading || replica.busy {
            continue;
        }
        // A leader that has already committed a membership without itself keeps leading
        // until it steps down; openraft 0.9 must not be asked for another membership
        // change then (it asserts), so only a voting leader moves groups.
        let voting = replica.voters.contains(&node.me);
        if voting && replica.voters != view.target && !view.target.is_empty() {
            steps.push(Step::Move {
                partition: view.partition,
                voters: replica.voters.clone(),
                target: view.target.clone(),
            });
        } else if replica.voters == view.target {
            let to = view.preferred.filter(|to| *to != node.me);
            let ready = replica.preferred_caught_up && !replica.hand_over_cooling;
            if let Some(to) = to.filter(|_| ready && hand_over_room > 0) {
                hand_over_room -= 1;
                steps.push(Step::HandOver {
                    partition: view.partition,
                    to,
                });
            }
        }
    }
    steps
}

/// What the control leader changes in the control group's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ControlPlan {
    /// Active nodes to add as learners (not members yet).
    pub learners: Vec<NodeId>,
    /// The voters to change to, when they differ from now.
    pub voters: Option<BTreeSet<NodeId>>,
    /// Members no longer active and no longer voters, to remove.
    pub remove: BTreeSet<NodeId>,
}

/// The control group's membership as the map wants it: every active node a member,
/// up to `max_voters` voters (the active voters kept, others added in id order), and
/// members that are not active removed once they are not voters. `None` when this leader
/// is not a voter itself (on its way out: its successor decides).
pub(super) fn plan_control(
    me: NodeId,
    active: &BTreeSet<NodeId>,
    members: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    max_voters: usize,
) -> Option<ControlPlan> {
    if !voters.contains(&me) {
        return None;
    }
    let learners = active.difference(members).copied().collect();
    let mut want: BTreeSet<NodeId> = voters.intersection(active).copied().collect();
    for id in active {
        if want.len() >= max_voters.min(active.len()) {
            break;
        }
        want.insert(*id);
    }
    let remove = members
        .iter()
        .filter(|id| !active.contains(id) && !want.contains(id))
        .copied()
        .collect();
    let voters = (want != *voters && !want.is_empty()).then_some(want);
    Some(ControlPlan {
        learners,
        voters,
        remove,
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
