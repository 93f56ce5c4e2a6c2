//! Moving groups toward the map: adding learners, swapping voters once they caught up,
//! handing leadership over, and letting go of groups this node no longer holds.

use super::plan::{plan, NodeView, PartitionView, ReplicaView, Step};
use super::{
    ask, bounded, lock, members_of, ClusterNode, CAUGHT_UP_ENTRIES, DRAIN_LIMIT,
    HAND_OVER_COOLDOWN, MAX_HAND_OVERS, PEER_CALL_LIMIT,
};
use crate::cluster::control::ClusterState;
use crate::cluster::group::PartitionGroup;
use crate::cluster::peer::{PeerRequest, PeerResponse, Peers};
use crate::cluster::raft_types::{GroupId, NodeId, CONTROL_GROUP};
use crate::workers::Round;
use openraft::{BasicNode, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grid_proto::sync::write;

impl ClusterNode {
    /// One reconcile round: the control leader keeps the control group's members; every
    /// node hosts the groups the map gives it, moves the groups it leads toward the map,
    /// and lets go of replicas the map no longer lists here. What to do is decided by
    /// [`plan`] from this node's view; this carries it out. Its error is the last
    /// partition it could not host.
    pub(super) async fn reconcile(self: &Arc<Self>) -> Round {
        self.enforce_memory();
        let Some(state) = self.state() else {
            return Ok(());
        };
        let node = NodeView {
            me: self.id(),
            was_away: self.was_away.load(Ordering::Relaxed),
            leads_control: self
                .control_raft()
                .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader),
            control_busy: lock(&self.changing).contains(&CONTROL_GROUP),
            hand_over_room: MAX_HAND_OVERS.saturating_sub(self.hand_overs.load(Ordering::Acquire)),
        };
        let views: Vec<PartitionView> = (0..state.partitions)
            .map(|p| self.view_of(p, &state))
            .collect();
        let mut round = Ok(());
        for step in plan(node, &views) {
            if let Err(e) = self.take(step, &state).await {
                round = Err(e);
            }
        }
        round
    }

    /// Partition `p` as the planner sees it from here. Records when the map stopped
    /// listing this node for it.
    fn view_of(&self, p: GroupId, state: &ClusterState) -> PartitionView {
        let assignment = &state.assignment[p as usize];
        let target: BTreeSet<NodeId> = assignment.iter().copied().collect();
        let preferred = assignment.first().copied();
        let replica = self.group(p).map(|group| {
            let membership = group.raft.metrics().borrow().membership_config.clone();
            let me = self.id();
            let unlisted = if target.contains(&me) {
                lock(&self.unlisted_since).remove(&p);
                Duration::ZERO
            } else {
                lock(&self.unlisted_since)
                    .entry(p)
                    .or_insert_with(Instant::now)
                    .elapsed()
            };
            let member = membership.membership().nodes().any(|(id, _)| *id == me);
            ReplicaView {
                voters: membership.membership().voter_ids().collect(),
                member,
                leading: group.is_leader(),
                unlisted,
                leaderless: self.leaderless_for(&group),
                busy: lock(&self.changing).contains(&p),
                hand_over_cooling: lock(&self.hand_over_after)
                    .get(&p)
                    .is_some_and(|at| Instant::now() < *at),
                preferred_caught_up: preferred.is_some_and(|to| caught_up(&group, [to].iter())),
            }
        });
        PartitionView {
            partition: p,
            target,
            preferred,
            replica,
        }
    }

    /// Carries out one planned step; changes that take a while run as tasks of their own.
    async fn take(self: &Arc<Self>, step: Step, state: &ClusterState) -> Round {
        match step {
            Step::ManageControl => {
                if lock(&self.changing).insert(CONTROL_GROUP) {
                    let (node, state) = (Arc::clone(self), state.clone());
                    self.spawn(async move {
                        node.manage_control_members(&state).await;
                        lock(&node.changing).remove(&CONTROL_GROUP);
                    })
                    .await;
                }
            }
            Step::Host(p) => {
                if let Err(e) = self.host_group(p).await {
                    tracing::warn!(partition = p, error = %e, "cannot host partition");
                    return Err(format!("cannot host partition {p}: {e}"));
                }
            }
            Step::Release(p) => self.release_group(p).await,
            Step::Move {
                partition,
                voters,
                target,
            } => {
                let Some(group) = self.group(partition) else {
                    return Ok(());
                };
                if !lock(&self.changing).insert(partition) {
                    return Ok(());
                }
                let members = addrs_of(state, target.iter());
                let removed = addrs_of(state, voters.difference(&target));
                let node = Arc::clone(self);
                self.spawn(async move {
                    node.move_group(&group, voters, members, removed).await;
                    lock(&node.changing).remove(&partition);
                })
                .await;
            }
            Step::HandOver { partition, to } => {
                if let Some(group) = self.group(partition) {
                    self.start_hand_over(&group, to, state).await;
                }
            }
        }
        Ok(())
    }

    /// Stops hosting a partition's replica.
    pub(super) async fn release_group(&self, p: GroupId) {
        let removed = write(&self.groups).remove(&p);
        lock(&self.unlisted_since).remove(&p);
        lock(&self.leaderless_since).remove(&p);
        if let Some(g) = removed {
            let _ = g.raft.shutdown().await;
            if let Some(data) = &self.config.data {
                if let Err(e) = data.remove_group(p).await {
                    tracing::warn!(partition = p, error = %e, "the files of a partition that moved away could not be removed");
                }
            }
            tracing::info!(partition = p, "partition moved away");
        }
        self.released.notify_waiters();
    }

    /// Starts handing a group's leadership to its preferred leader (the map's first
    /// replica), so leaders spread as the placement planned; the planner has checked that
    /// it caught up, that none cools down and that there is room. A group whose hand-over
    /// failed waits before the next try.
    async fn start_hand_over(
        self: &Arc<Self>,
        group: &Arc<PartitionGroup>,
        to: NodeId,
        state: &ClusterState,
    ) {
        let p = group.id;
        let Some(addr) = state.addr_of(to).map(str::to_string) else {
            return;
        };
        if !lock(&self.changing).insert(p) {
            return;
        }
        self.hand_overs.fetch_add(1, Ordering::AcqRel);
        let (node, group) = (Arc::clone(self), Arc::clone(group));
        let lease = self.config.election_timeout * 2;
        self.spawn(async move {
            let moved = hand_over(&group, &node.peers, to, &addr, lease).await;
            if !moved {
                lock(&node.hand_over_after).insert(p, Instant::now() + HAND_OVER_COOLDOWN);
            }
            tracing::debug!(partition = p, to, moved, "leadership hand-over");
            lock(&node.changing).remove(&p);
            node.hand_overs.fetch_sub(1, Ordering::AcqRel);
        })
        .await;
    }
}

/// The addresses of `ids`, as the map lists them.
fn addrs_of<'a>(
    state: &ClusterState,
    ids: impl Iterator<Item = &'a NodeId>,
) -> BTreeMap<NodeId, String> {
    ids.filter_map(|id| state.addr_of(*id).map(|a| (*id, a.to_string())))
        .collect()
}

/// True when the leader sees the logs of `members` close to its own.
pub(super) fn caught_up<'a>(
    group: &PartitionGroup,
    mut members: impl Iterator<Item = &'a NodeId>,
) -> bool {
    let metrics = group.raft.metrics();
    let m = metrics.borrow();
    let last = m.last_log_index.unwrap_or(0);
    members.all(|id| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten())
            .is_some_and(|matched| matched.index + CAUGHT_UP_ENTRIES >= last)
    })
}

/// Waits (up to `limit`) until another node is known to lead the group.
pub(super) async fn successor_known(group: &PartitionGroup, limit: Duration) -> bool {
    let me = group.me();
    let mut metrics = group.raft.metrics();
    let known = metrics
        .wait_for(|m| m.state != ServerState::Leader && m.current_leader.is_some_and(|l| l != me));
    let known = matches!(tokio::time::timeout(limit, known).await, Ok(Ok(_)));
    known
}

/// Hands a group's leadership to `to` (openraft 0.9 has no transfer): drain, stop
/// heartbeats until the followers' leader lease lapses, then ask `to` to stand. Requests
/// held meanwhile are redirected to the new leader afterwards.
pub(super) async fn hand_over(
    group: &PartitionGroup,
    peers: &Peers,
    to: NodeId,
    addr: &str,
    lease: Duration,
) -> bool {
    if !group.drain(DRAIN_LIMIT).await {
        group.undrain();
        return false;
    }
    group.raft.runtime_config().heartbeat(false);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let elect = PeerRequest::Elect {
        group: group.id,
        to,
    };
    let asked = matches!(
        ask(peers, addr, &elect, PEER_CALL_LIMIT).await,
        Ok(PeerResponse::Applied)
    );
    let moved = asked && successor_known(group, lease * 2).await;
    group.raft.runtime_config().heartbeat(true);
    group.undrain();
    moved
}

impl ClusterNode {
    /// Moves a group's voters to `target`: new members join as learners and catch up
    /// first, then one membership change swaps the voters.
    pub(super) async fn move_group(
        &self,
        group: &PartitionGroup,
        voters: BTreeSet<NodeId>,
        target: BTreeMap<NodeId, String>,
        removed_addrs: BTreeMap<NodeId, String>,
    ) {
        let p = group.id;
        let members = members_of(&group.raft);
        for (id, addr) in &target {
            // A learner already there (at this address) is left to catch up: adding it
            // again would write a membership entry, which restarts its replication and
            // any snapshot in flight.
            if voters.contains(id) || members.get(id) == Some(addr) {
                continue;
            }
            // A node that has not learnt of the group yet (its map lags while it joins)
            // would only answer "not hosted" to every append; wait until it hosts it.
            let hosts = PeerRequest::Hosts { group: p, to: *id };
            match ask(&self.peers, addr, &hosts, PEER_CALL_LIMIT).await {
                Ok(PeerResponse::Applied) => {}
                answer => {
                    tracing::debug!(
                        partition = p,
                        node = id,
                        ?answer,
                        "new replica not hosted yet"
                    );
                    return;
                }
            }
            let added = tokio::time::timeout(
                Duration::from_secs(30),
                group.raft.add_learner(*id, BasicNode::new(addr), true),
            )
            .await;
            match added {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(partition = p, node = id, error = %e, "add learner deferred");
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        partition = p,
                        node = id,
                        "learner catch-up timed out; will retry"
                    );
                    return;
                }
            }
        }
        // A voter that has not caught up could leave the group without a quorum; wait for
        // the leader to see every newcomer's log close to its own.
        if !caught_up(group, target.keys().filter(|id| !voters.contains(id))) {
            tracing::debug!(partition = p, "new replicas still catching up");
            return;
        }
        let ids: BTreeSet<NodeId> = target.keys().copied().collect();
        let leaving = !ids.contains(&group.me());
        if leaving && !group.drain(DRAIN_LIMIT).await {
            group.undrain();
            tracing::debug!(partition = p, "writes still in flight; hand-over deferred");
            return;
        }
        let changed = bounded(
            "change voters",
            group.raft.change_membership(ids.clone(), false),
        )
        .await;
        if changed.is_ok() {
            for gone in voters.difference(&ids) {
                if let Some(addr) = removed_addrs.get(gone) {
                    let release = PeerRequest::Release {
                        group: p,
                        to: *gone,
                    };
                    // A removed member that does not hear this (cut off) lets go by itself
                    // later, or is caught up again if the map gives it the group back.
                    let _ = ask(&self.peers, addr, &release, PEER_CALL_LIMIT).await;
                }
            }
        }
        if leaving {
            // Held requests go to the successor as soon as it is known.
            if changed.is_ok() {
                successor_known(group, Duration::from_secs(5)).await;
            }
            group.undrain();
        }
        match changed {
            Ok(_) => {
                tracing::info!(partition = p, voters = ?target.keys().collect::<Vec<_>>(), "partition moved")
            }
            Err(e) if self.say("membership change deferred", u64::from(p)) => {
                tracing::info!(partition = p, error = %e, "membership change deferred")
            }
            Err(e) => tracing::debug!(partition = p, error = %e, "membership change deferred"),
        }
    }
}
