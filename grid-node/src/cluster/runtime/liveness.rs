//! Liveness: the control leader pings the active nodes and marks those silent past
//! `--down-after` down; a node that finds itself cut off (no ping from the control leader
//! for that long, or marked down in the map it has) asks to be back as soon as it can
//! reach a member again.
//!
//! ```text
//! control leader, every round: Ping each active node (whole call bounded) ─▶ silent past
//!                              down-after ⇒ MarkDown ⇒ its replicas are re-placed
//! any other node:  no Ping for down-after | Down in its map ⇒ Rejoin{id, addr} to a member
//!                  ─▶ NotLeader ⇒ ask the control leader ─▶ it pings back, then commits
//!                  Rejoin ⇒ Active, replan ⇒ leaders add it as a learner under its old
//!                  id, Raft catches its replicas up (or they are released and re-created)
//! ```
//!
//! Returning under the same id is safe because Raft's rules hold for it: a replica whose
//! log is behind never wins an election, and reads are confirmed with a quorum first, so a
//! node that was away serves nothing stale.

use super::{ask, bounded, lock, ClusterNode, PEER_CALL_LIMIT, UNLISTED_GRACE};
use crate::cluster::control::{ClusterState, ControlCommand, ControlResponse, NodeState};
use crate::cluster::group::PartitionGroup;
use crate::cluster::peer::{PeerRequest, PeerResponse};
use crate::cluster::raft_types::{GroupCommand, GroupResponse, NodeId};
use crate::workers::Round;
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bounds of the time a liveness ping may take, connecting included: a quarter of
/// `--down-after` within these, so a node that stopped answering is counted silent in
/// time, and one slowed down by load (or by large messages ahead on the shared peer
/// connection) is not.
const PING_LIMIT_MIN: Duration = Duration::from_millis(200);
const PING_LIMIT_MAX: Duration = Duration::from_secs(2);
/// Pause between two requests to be back.
const REJOIN_EVERY: Duration = Duration::from_secs(1);
/// Members asked per request to be back (following a redirect counts as one).
const REJOIN_TRIES: usize = 4;

impl ClusterNode {
    /// One liveness round: the control leader watches the others; any other node checks
    /// its own standing. Its error says this node is out of touch with the cluster.
    pub(super) async fn watch(&self) -> Round {
        let Some(state) = self.state() else {
            return Ok(());
        };
        let leads = self
            .control_raft()
            .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader);
        if leads {
            // A leader is not pinged; hearing from the nodes it pings says the same.
            if self.watch_nodes(&state).await {
                *lock(&self.last_pinged) = Instant::now();
            }
            // A leader that hears from nobody for that long is as cut off as a node
            // nobody pings: it asks to be back like one.
            if lock(&self.last_pinged).elapsed() <= self.config.down_after {
                return Ok(());
            }
        } else {
            // Liveness seen in an earlier term says nothing now.
            lock(&self.last_seen).clear();
        }
        let unpinged = lock(&self.last_pinged).elapsed();
        let rejoin = should_rejoin(&Standing {
            me: self.id(),
            state: &state,
            leaving: self.leaving.load(Ordering::Relaxed),
            unpinged,
            down_after: self.config.down_after,
        });
        if !rejoin {
            self.set_isolated(false);
        } else if Instant::now() >= *lock(&self.next_rejoin) {
            *lock(&self.next_rejoin) = Instant::now() + REJOIN_EVERY;
            if state.nodes.get(&self.id()).map(|n| n.state) == Some(NodeState::Down) {
                self.was_away.store(true, Ordering::Relaxed);
            }
            let reached = self.rejoin(&state, unpinged).await;
            // Only a long silence with nobody answering counts: a node slowed down by load
            // may miss pings for a while, and must keep serving.
            self.set_isolated(!reached && unpinged > self.config.down_after * 2);
            if !reached {
                return Err(format!(
                    "not pinged for {unpinged:.1?} and no member answered the request to be back"
                ));
            }
        }
        Ok(())
    }

    /// How long a liveness ping may take (see [`PING_LIMIT_MIN`]).
    fn ping_limit(&self) -> Duration {
        (self.config.down_after / 4).clamp(PING_LIMIT_MIN, PING_LIMIT_MAX)
    }

    /// Records whether this node reaches no member at all; says so when it changes.
    pub(super) fn set_isolated(&self, isolated: bool) {
        if self.isolated.swap(isolated, Ordering::Relaxed) != isolated {
            if isolated {
                // Cut off this long, it has surely been marked down: what it still holds
                // may have moved on without it.
                self.was_away.store(true, Ordering::Relaxed);
                tracing::warn!("cut off: no member answers; sending clients to the other nodes");
            } else {
                tracing::info!("in touch with the cluster again");
            }
        }
    }

    /// Control leader: pings active nodes and marks those silent past the grace period
    /// down. Every ping is bounded as a whole, so a peer whose connection hangs (or whose
    /// connection slot is busy with other traffic) is counted silent, never waited for.
    /// When no node answers at all, this leader is the one cut off (and could not commit
    /// anything): nobody is marked down. True when some node answered, or there is none.
    async fn watch_nodes(&self, state: &ClusterState) -> bool {
        let me = self.id();
        let now = Instant::now();
        let targets: Vec<(NodeId, String)> = state
            .nodes
            .iter()
            .filter(|(id, n)| **id != me && n.state == NodeState::Active)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let limit = self.ping_limit();
        let pings = targets.iter().map(|(id, addr)| async move {
            let ok = matches!(
                ask(&self.peers, addr, &PeerRequest::Ping, limit).await,
                Ok(PeerResponse::Pong { id: answered }) if answered == *id
            );
            (*id, ok)
        });
        let results = futures_util::future::join_all(pings).await;
        let judged = judge_pings(
            &results,
            &mut lock(&self.last_seen),
            now,
            self.config.down_after,
        );
        let Some(down) = judged else {
            return false;
        };
        for id in down {
            let Some(raft) = self.control_raft() else {
                break;
            };
            let mark = raft.client_write(GroupCommand::Control(ControlCommand::MarkDown { id }));
            match bounded("mark down", mark).await.map(|r| r.data) {
                Ok(GroupResponse::Control(ControlResponse::Applied { epoch })) => {
                    tracing::warn!(
                        node = id,
                        epoch,
                        "node unreachable past the grace period: marked down, its partitions are re-placed"
                    )
                }
                Ok(other) => tracing::info!(node = id, answer = ?other, "marking down refused"),
                Err(e) if self.say("marking down deferred", id) => {
                    tracing::info!(node = id, error = %e, "marking down deferred")
                }
                Err(e) => tracing::debug!(node = id, error = %e, "marking down deferred"),
            }
            lock(&self.last_seen).remove(&id);
        }
        true
    }

    /// Asks the cluster to take this node back: the control leader first if known, then
    /// the other members and the seeds, following redirects. Bounded in calls and time.
    /// True if any member answered at all.
    async fn rejoin(&self, state: &ClusterState, unpinged: Duration) -> bool {
        let me = self.id();
        let own = self.config.advertise.as_str();
        let mut queue: Vec<String> = Vec::new();
        let push = |addr: &str, queue: &mut Vec<String>| {
            if addr != own && !queue.iter().any(|a| a == addr) {
                queue.push(addr.to_string());
            }
        };
        if let Some(addr) = self.control_leader_addr() {
            push(&addr, &mut queue);
        }
        for (id, n) in &state.nodes {
            if *id != me && n.state == NodeState::Active {
                push(&n.addr, &mut queue);
            }
        }
        for seed in &self.config.join {
            push(seed, &mut queue);
        }
        if self.say("asking to be back", 0) {
            tracing::info!(
                not_pinged_for = ?unpinged,
                "cut off from the control leader; asking to be back in the cluster"
            );
        }
        let request = PeerRequest::Rejoin {
            id: me,
            addr: own.to_string(),
        };
        let mut reached = false;
        for _ in 0..REJOIN_TRIES {
            if queue.is_empty() {
                break;
            }
            let addr = queue.remove(0);
            let answer = ask(&self.peers, &addr, &request, PEER_CALL_LIMIT * 2).await;
            // A node of this cluster answers anything but "no such group" (what a
            // process of another cluster, or none yet, says).
            reached |= matches!(&answer, Ok(a) if !matches!(a, PeerResponse::NoSuchGroup));
            match answer {
                Ok(PeerResponse::Rejoined { readmitted }) => {
                    *lock(&self.last_pinged) = Instant::now();
                    if readmitted {
                        self.was_away.store(true, Ordering::Relaxed);
                        tracing::info!(id = me, "back in the cluster after being marked down");
                    } else {
                        tracing::debug!("the cluster still counts this node active");
                    }
                    return true;
                }
                Ok(PeerResponse::NotLeader {
                    leader_addr: Some(leader),
                }) if leader != own => queue.insert(0, leader),
                Ok(PeerResponse::Refused { reason }) => {
                    if self.say("rejoin refused", 0) {
                        tracing::warn!(%reason, "the cluster refused to take this node back");
                    }
                    return true;
                }
                answer => tracing::debug!(%addr, ?answer, "rejoin: no answer"),
            }
        }
        reached
    }

    /// Control leader: takes node `id` back if it was marked down, is at the address it
    /// was, and this leader can reach it (a node that can reach the cluster but not be
    /// reached would only be marked down again).
    pub(super) async fn readmit(&self, id: NodeId, addr: String) -> PeerResponse {
        let leads = self
            .control_raft()
            .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader);
        let Some(state) = self.state().filter(|_| leads) else {
            return PeerResponse::NotLeader {
                leader_addr: self.control_leader_addr(),
            };
        };
        let command = ControlCommand::Rejoin {
            id,
            addr: addr.clone(),
        };
        // The pure rule decides; only a change goes through the log.
        let mut preview = state.clone();
        match preview.apply(command.clone()) {
            ControlResponse::Refused { reason } => return PeerResponse::Refused { reason },
            _ if preview.epoch == state.epoch => {
                return PeerResponse::Rejoined { readmitted: false }
            }
            _ => {}
        }
        let reached = matches!(
            ask(&self.peers, &addr, &PeerRequest::Ping, self.ping_limit()).await,
            Ok(PeerResponse::Pong { id: answered }) if answered == id
        );
        if !reached {
            return PeerResponse::Refused {
                reason: format!("the control leader cannot reach {addr}"),
            };
        }
        match self.control_command(command).await {
            PeerResponse::Applied => {
                tracing::info!(node = id, %addr, "node marked down is back; re-placing partitions onto it");
                PeerResponse::Rejoined { readmitted: true }
            }
            other => other,
        }
    }

    /// How long a hosted group has been without a working leader as this node sees it:
    /// no other node known to lead it, or (leading it) no quorum heard within an election
    /// timeout. Zero while it works.
    pub(super) fn leaderless_for(&self, group: &PartitionGroup) -> Duration {
        let working = {
            let m = group.raft.metrics();
            let m = m.borrow();
            match m.state {
                ServerState::Leader => m
                    .millis_since_quorum_ack
                    .is_some_and(|ms| Duration::from_millis(ms) < self.config.election_timeout * 2),
                _ => m.current_leader.is_some_and(|l| l != self.id()),
            }
        };
        let mut since = lock(&self.leaderless_since);
        if working {
            since.remove(&group.id);
            return Duration::ZERO;
        }
        since.entry(group.id).or_insert_with(Instant::now).elapsed()
    }
}

/// Which nodes a ping round finds silent past `down_after`, with `last_seen` (when each
/// last answered) brought up to date. `None` when there were nodes to ping and none
/// answered: then this leader is the one cut off, nobody is to be marked down, and every
/// node's silence counts again from its next round.
pub(super) fn judge_pings(
    results: &[(NodeId, bool)],
    last_seen: &mut HashMap<NodeId, Instant>,
    now: Instant,
    down_after: Duration,
) -> Option<Vec<NodeId>> {
    if !results.is_empty() && !results.iter().any(|(_, ok)| *ok) {
        last_seen.clear();
        return None;
    }
    let mut down = Vec::new();
    for (id, ok) in results {
        let last = last_seen.entry(*id).or_insert(now);
        if *ok {
            *last = now;
        } else if now.saturating_duration_since(*last) > down_after {
            down.push(*id);
        }
    }
    Some(down)
}

/// What a node knows about its own standing.
#[derive(Debug)]
pub(super) struct Standing<'a> {
    /// Its id (0 before it has joined).
    pub me: NodeId,
    /// The cluster state as it has it (possibly old, if it was cut off).
    pub state: &'a ClusterState,
    /// It is leaving gracefully.
    pub leaving: bool,
    /// How long since the control leader last pinged it.
    pub unpinged: Duration,
    /// The cluster's grace period.
    pub down_after: Duration,
}

/// Whether a node should ask to be back: it is marked down in the map it has, or the
/// control leader has not pinged it for longer than the grace period (for a node leading
/// the control group: it has not heard from a quorum for that long), after which the
/// leader has marked it down (or soon will). Asking when it is still active is harmless:
/// the answer changes nothing.
pub(super) fn should_rejoin(s: &Standing<'_>) -> bool {
    if s.me == 0 || s.leaving {
        return false;
    }
    match s.state.nodes.get(&s.me).map(|n| n.state) {
        Some(NodeState::Down) => true,
        Some(NodeState::Leaving) => false,
        // Alone in the cluster nobody pings it, and nobody could mark it down.
        _ => s.unpinged > s.down_after && s.state.active_nodes().iter().any(|id| *id != s.me),
    }
}

/// A hosted replica as the reconcile round sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unlisted {
    /// The map lists this node for the partition.
    pub listed: bool,
    /// The group's membership (as this replica has it) includes this node.
    pub member: bool,
    /// ... as a voter.
    pub voter: bool,
    /// This replica leads the group.
    pub leading: bool,
    /// This node has been out of touch past the grace period (probably marked down).
    pub was_away: bool,
    /// How long the map has not listed it.
    pub unlisted: Duration,
    /// How long the group has had no working leader as this replica sees it.
    pub leaderless: Duration,
}

/// Whether to let go of a replica. A replica the map lists stays. One the map does not
/// list goes when its group has removed it (its leader also says so with `Release`), or
/// when it is a learner left over for [`UNLISTED_GRACE`]. A voter (or leader) stays, since
/// its group may still count on it, unless this node was away past the grace period (and
/// so was probably marked down): its groups went on without it, and a replica that has
/// heard no working leader for [`UNLISTED_GRACE`] is a leftover nobody contacts (its
/// `Release` was lost while the node was cut off).
pub(super) fn release_unlisted(u: Unlisted) -> bool {
    if u.listed {
        return false;
    }
    let stale = u.was_away && u.unlisted > UNLISTED_GRACE && u.leaderless > UNLISTED_GRACE;
    if u.leading {
        return stale;
    }
    if !u.member {
        return true;
    }
    if !u.voter {
        return u.unlisted > UNLISTED_GRACE;
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(down: &[NodeId]) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(ControlCommand::Init {
            cluster_id: 7,
            partitions: 4,
            replicas: 3,
            addr: "a:1".into(),
        });
        s.apply(ControlCommand::Join { addr: "b:1".into() });
        s.apply(ControlCommand::Join { addr: "c:1".into() });
        for id in down {
            s.apply(ControlCommand::MarkDown { id: *id });
        }
        s
    }

    fn standing(state: &ClusterState, me: NodeId, unpinged_s: u64) -> Standing<'_> {
        Standing {
            me,
            state,
            leaving: false,
            unpinged: Duration::from_secs(unpinged_s),
            down_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_node_asks_to_be_back_once_unpinged_past_the_grace_or_marked_down() {
        let healthy = cluster(&[]);
        assert!(!should_rejoin(&standing(&healthy, 3, 2)));
        assert!(should_rejoin(&standing(&healthy, 3, 11)));
        // Marked down in the map it has: at once.
        let down = cluster(&[3]);
        assert!(should_rejoin(&standing(&down, 3, 0)));
        // Never before joining, never while leaving, never as a node that left.
        assert!(!should_rejoin(&standing(&healthy, 0, 60)));
        let leaving = Standing {
            leaving: true,
            ..standing(&down, 3, 60)
        };
        assert!(!should_rejoin(&leaving));
        let mut left = cluster(&[]);
        left.apply(ControlCommand::Leave { id: 3 });
        assert!(!should_rejoin(&standing(&left, 3, 60)));
        // Alone, nobody pings it.
        let mut alone = ClusterState::default();
        alone.apply(ControlCommand::Init {
            cluster_id: 7,
            partitions: 4,
            replicas: 3,
            addr: "a:1".into(),
        });
        assert!(!should_rejoin(&standing(&alone, 1, 60)));
    }

    #[test]
    fn a_node_silent_past_the_grace_is_marked_down_unless_nobody_answers() {
        let grace = Duration::from_secs(3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut seen = HashMap::new();
        assert_eq!(
            judge_pings(&[(2, true), (3, false)], &mut seen, at(0), grace),
            Some(vec![])
        );
        // Silent within the grace: nothing yet; past it: marked down.
        assert_eq!(
            judge_pings(&[(2, true), (3, false)], &mut seen, at(3), grace),
            Some(vec![])
        );
        assert_eq!(
            judge_pings(&[(2, true), (3, false)], &mut seen, at(4), grace),
            Some(vec![3])
        );
        // Nobody answers: this leader is cut off, nobody is marked down, and the silences
        // count afresh once answers come back.
        assert_eq!(
            judge_pings(&[(2, false), (3, false)], &mut seen, at(10), grace),
            None
        );
        assert_eq!(
            judge_pings(&[(2, true), (3, false)], &mut seen, at(11), grace),
            Some(vec![])
        );
        assert_eq!(
            judge_pings(&[(2, true), (3, false)], &mut seen, at(15), grace),
            Some(vec![3])
        );
        // Alone, there is nobody to hear from and nobody to mark down.
        assert_eq!(judge_pings(&[], &mut seen, at(20), grace), Some(vec![]));
    }

    fn replica() -> Unlisted {
        Unlisted {
            listed: false,
            member: true,
            voter: true,
            leading: false,
            was_away: false,
            unlisted: UNLISTED_GRACE * 2,
            leaderless: UNLISTED_GRACE * 2,
        }
    }

    #[test]
    fn listed_replicas_and_needed_voters_stay() {
        let listed = Unlisted {
            listed: true,
            was_away: true,
            ..replica()
        };
        assert!(!release_unlisted(listed));
        // A voter of a stuck group on a node that was never away: the group may need it.
        assert!(!release_unlisted(replica()));
        assert!(!release_unlisted(Unlisted {
            leading: true,
            ..replica()
        }));
    }

    #[test]
    fn removed_members_and_old_learners_go() {
        assert!(release_unlisted(Unlisted {
            member: false,
            voter: false,
            unlisted: Duration::ZERO,
            ..replica()
        }));
        let learner = Unlisted {
            voter: false,
            ..replica()
        };
        assert!(release_unlisted(learner));
        assert!(!release_unlisted(Unlisted {
            unlisted: UNLISTED_GRACE / 2,
            ..learner
        }));
    }

    #[test]
    fn leftovers_of_a_node_that_was_away_go_once_nobody_leads_them() {
        let leftover = Unlisted {
            was_away: true,
            ..replica()
        };
        assert!(release_unlisted(leftover));
        assert!(release_unlisted(Unlisted {
            leading: true,
            ..leftover
        }));
        // A group that works (a leader is heard) still counts on it: it stays until that
        // leader removes it.
        assert!(!release_unlisted(Unlisted {
            leaderless: Duration::ZERO,
            ..leftover
        }));
        assert!(!release_unlisted(Unlisted {
            unlisted: UNLISTED_GRACE / 2,
            ..leftover
        }));
    }
}
