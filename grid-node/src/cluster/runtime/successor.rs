//! Fast failover. A node whose process is gone (kill -9, a crash) closes its sockets, so
//! its peers see their connection to it close, and a new connection is refused at once.
//! Raft alone would wait for its election timer, which in openraft 0.9 runs the leader
//! lease plus the election timeout after the last heartbeat (3 to 4 s by default). Here a
//! node that finds a peer's port refusing starts an election in every group that peer
//! led, as soon as the other voters can grant it: once the leader lease they keep from
//! the last append or heartbeat has run out. That moment is nearly the same on every
//! survivor (the leader sent them its heartbeats together), whenever each found the peer
//! gone, so the survivors stand one after the other in the map's order, [`STAGGER`]
//! apart, timed from the last append each heard; the next stands only if the group still
//! has no leader (the one before may have lost because another voter's log was longer).
//!
//! The first successor loses when the other survivor's log is longer (the leader's last
//! appends reached one follower only), and its candidacy then holds its term: the next
//! successor standing in that same term would be refused by it, and the group would
//! wait for a timer (half a second to a second more). So a successor stands in the term
//! after the highest one a candidate asked its vote in, which that candidate grants (a
//! candidate keeps no lease).
//!
//! ```text
//! every round: closed peer connection ─▶ connect refused ⇒ gone
//!              groups it still leads, where this node is the rank-th voter after it in
//!              the map's order, and the last append came ≥ lease + rank x stagger ago
//!                  ⇒ an election, in a term above any candidate's it has seen
//! ```
//!
//! Standing only once nothing came from the leader for a lease means the old leader's
//! lease reads, which count on this node's acknowledgements, have lapsed (a refused
//! connect proves nothing about the other direction); beyond that, an election never
//! breaks Raft's guarantees, it can only cost the group a term. A peer that is merely cut
//! off refuses nothing (the connection times out) and is left to Raft's timers; so is a
//! group whose successor is the one that is gone too.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::ClusterNode;
use crate::cluster::raft_types::{GroupId, NodeId};
use crate::workers::Round;

/// How often closed peer connections are looked at.
pub(super) const SUCCESSOR_EVERY: Duration = Duration::from_millis(50);
/// How long a probe of a closed peer's port may take (a refusal is immediate on a live
/// host; anything slower is not proof the process is gone).
const PROBE_LIMIT: Duration = Duration::from_millis(200);
/// Added to the leader lease before electing, for clock-rate differences between nodes.
const LEASE_MARGIN: Duration = Duration::from_millis(50);
/// How long a peer that answered a probe is left alone while its connection stays
/// closed (one that answers is alive; this bounds the probes it gets).
const PROBE_BACKOFF: Duration = Duration::from_secs(1);
/// Between the elections of successive successors: one election's round trips.
const STAGGER: Duration = Duration::from_millis(150);
/// Most elections started at once to reach a term above a candidate's.
const MAX_TERMS_AHEAD: u64 = 3;

/// Peers found gone, and the groups this node is done with for each.
#[derive(Debug, Default)]
pub(super) struct Successions {
    gone: HashMap<String, (NodeId, BTreeSet<GroupId>)>,
    /// When each closed connection's peer was last probed and found answering.
    answered: HashMap<String, Instant>,
}

/// How many elections to start in a row so that the last one's term is above `seen`,
/// the highest term a candidate asked for (each election takes the next term): one,
/// or enough to pass that candidate, at most [`MAX_TERMS_AHEAD`].
fn elections_needed(current_term: u64, seen: u64) -> u64 {
    seen.saturating_add(1)
        .saturating_sub(current_term)
        .clamp(1, MAX_TERMS_AHEAD)
}

/// Where `me` comes among the voters that may succeed `gone` in a group: the group's
/// voters in the map's order (`preferred`, then any voter the map does not list, by id),
/// without the gone leader. `None` if `me` does not vote.
pub(super) fn succession_rank(
    me: NodeId,
    gone: NodeId,
    preferred: &[NodeId],
    voters: &BTreeSet<NodeId>,
) -> Option<usize> {
    let listed = preferred.iter().filter(|n| voters.contains(n));
    let unlisted = voters.iter().filter(|n| !preferred.contains(n));
    listed
        .chain(unlisted)
        .filter(|n| **n != gone)
        .position(|n| *n == me)
}

async fn refuses(addr: &str) -> bool {
    match tokio::time::timeout(PROBE_LIMIT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

impl ClusterNode {
    /// One round of fast failover (see the module's comment).
    pub(super) async fn succeed_gone_leaders(&self) -> Round {
        let me = self.id();
        let closed = self.peers.closed_addrs();
        let ids: HashMap<String, NodeId> = self
            .with_state(|s| {
                s.nodes
                    .iter()
                    .map(|(id, n)| (n.addr.clone(), *id))
                    .collect()
            })
            .unwrap_or_default();
        {
            // Forget peers whose connection works again (or that left the map).
            let mut s = self.successions.lock().await;
            s.gone
                .retain(|addr, _| !self.peers.is_open(addr) && ids.contains_key(addr));
            s.answered
                .retain(|addr, at| closed.contains(addr) && at.elapsed() < PROBE_BACKOFF);
        }
        for addr in &closed {
            let skip = {
                let s = self.successions.lock().await;
                s.gone.contains_key(addr) || s.answered.contains_key(addr)
            };
            let Some(&id) = ids.get(addr) else { continue };
            if skip || id == me {
                continue;
            }
            if !refuses(addr).await {
                let mut s = self.successions.lock().await;
                s.answered.insert(addr.clone(), Instant::now());
                continue;
            }
            let addr = addr.clone();
            tracing::info!(peer = id, %addr, "peer's port refuses connections: its process is gone");
            self.successions
                .lock()
                .await
                .gone
                .insert(addr, (id, BTreeSet::new()));
        }
        let lease = self.leader_lease() + LEASE_MARGIN;
        let mut successions = self.successions.lock().await;
        for (gone, done) in successions.gone.values_mut() {
            for g in self.all_groups() {
                let metrics = g.raft.metrics().borrow().clone();
                if done.contains(&g.id)
                    || metrics.current_leader != Some(*gone)
                    || g.heard_within(lease)
                {
                    continue;
                }
                let voters: BTreeSet<NodeId> =
                    metrics.membership_config.membership().voter_ids().collect();
                let preferred = self
                    .with_state(|s| s.assignment.get(g.id as usize).cloned())
                    .flatten()
                    .unwrap_or_default();
                let Some(rank) = succession_rank(me, *gone, &preferred, &voters) else {
                    done.insert(g.id);
                    continue;
                };
                if g.heard_within(lease + STAGGER * rank as u32) {
                    continue;
                }
                let elections = elections_needed(metrics.current_term, g.vote_term_seen());
                tracing::info!(
                    group = g.id,
                    leader = *gone,
                    rank,
                    term = metrics.current_term + elections,
                    "standing for election: the leader is gone"
                );
                for _ in 0..elections {
                    let _ = g.raft.trigger().elect().await;
                }
                done.insert(g.id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_successor_stands_above_the_candidate_it_refused() {
        // No candidate seen, or only older ones: the next term.
        assert_eq!(elections_needed(5, 0), 1);
        assert_eq!(elections_needed(5, 5), 1);
        // A candidate of term 6 holds it: stand in 7.
        assert_eq!(elections_needed(5, 6), 2);
        // Bounded, whatever a peer sent.
        assert_eq!(elections_needed(5, u64::MAX), MAX_TERMS_AHEAD);
    }

    #[test]
    fn survivors_stand_in_map_order_after_the_gone_leader() {
        let voters = set(&[1, 2, 3]);
        assert_eq!(succession_rank(2, 1, &[1, 2, 3], &voters), Some(0));
        assert_eq!(succession_rank(3, 1, &[1, 2, 3], &voters), Some(1));
        // The map's order, not the ids'.
        assert_eq!(succession_rank(3, 1, &[1, 3, 2], &voters), Some(0));
        assert_eq!(succession_rank(2, 1, &[1, 3, 2], &voters), Some(1));
        // The gone node need not be first.
        assert_eq!(succession_rank(1, 3, &[3, 1, 2], &voters), Some(0));
        // A node that does not vote never stands.
        assert_eq!(succession_rank(4, 1, &[1, 2, 3], &voters), None);
    }

    #[test]
    fn listed_nodes_that_do_not_vote_are_skipped_and_unlisted_voters_come_last() {
        // 2 is listed but not a voter (still a learner); 4, a voter the map no longer
        // lists, comes after the listed voters.
        let voters = set(&[1, 3, 4]);
        assert_eq!(succession_rank(3, 1, &[1, 2, 3], &voters), Some(0));
        assert_eq!(succession_rank(2, 1, &[1, 2, 3], &voters), None);
        assert_eq!(succession_rank(4, 1, &[1, 2, 3], &voters), Some(1));
        // Every surviving voter has its own rank, whatever the order.
        for preferred in [[1, 2, 3], [3, 2, 1], [2, 1, 3]] {
            let mut ranks: Vec<usize> = [3, 4]
                .iter()
                .filter_map(|me| succession_rank(*me, 1, &preferred, &voters))
                .collect();
            ranks.sort_unstable();
            assert_eq!(ranks, vec![0, 1], "map order {preferred:?}");
        }
    }
}
