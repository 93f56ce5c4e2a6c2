//! Membership: bootstrapping or joining the cluster, leaving it gracefully, answering
//! other nodes' messages, and (on the control leader) keeping the control group's voters.

use super::plan::plan_control;
use super::{
    ask, bounded, lock, ClusterError, ClusterNode, CONTROL_VOTERS, JOIN_DEADLINE,
    MEMBERSHIP_CHANGE_LIMIT,
};
use crate::cluster::control::{ClusterState, ControlCommand, ControlResponse};
use crate::cluster::peer::{
    decode_request, encode_responses, PeerRequest, PeerResponse, RaftRpc, MAX_BATCH_ITEMS,
};
use crate::cluster::raft_types::{GroupCommand, GroupResponse, NodeId, CONTROL_GROUP};
use crate::cluster::state_machine::Machine;
use futures_util::future::join_all;
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl ClusterNode {
    /// Comes back as the member its data directory says it is, or else bootstraps a new
    /// cluster or joins an existing one (and, with a data directory, keeps who it is).
    pub async fn start(&self) -> Result<(), ClusterError> {
        if self.resume().await? {
            return Ok(());
        }
        self.bootstrap_or_join().await?;
        self.keep_identity()
    }

    async fn bootstrap_or_join(&self) -> Result<(), ClusterError> {
        if self.config.join.is_empty() {
            self.bootstrap().await
        } else {
            let id = self.join(&self.config.join).await?;
            self.joined(id).await
        }
    }

    /// Starts as member `id`, just admitted: its control group replica, empty.
    pub(super) async fn joined(&self, id: NodeId) -> Result<(), ClusterError> {
        self.me.store(id, Ordering::Relaxed);
        let (raft, sm) = self
            .new_raft(CONTROL_GROUP, Machine::Control(ClusterState::default()))
            .await?;
        let _ = self.control.set((raft, sm));
        *lock(&self.last_pinged) = Instant::now();
        tracing::info!(id, "joined the cluster");
        Ok(())
    }

    pub(super) async fn bootstrap(&self) -> Result<(), ClusterError> {
        self.me.store(1, Ordering::Relaxed);
        let raft_err = |e: String| ClusterError::Raft(e);
        let (raft, sm) = self
            .new_raft(CONTROL_GROUP, Machine::Control(ClusterState::default()))
            .await?;
        raft.initialize(self.self_member())
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        raft.wait(Some(JOIN_DEADLINE))
            .state(ServerState::Leader, "control group leader")
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let cluster_id = grid_proto::secret::random_id();
        self.peers.set_cluster(cluster_id);
        let init = ControlCommand::Init {
            cluster_id,
            partitions: self.config.partitions,
            replicas: self.config.replicas,
            addr: self.config.advertise.clone(),
        };
        raft.client_write(GroupCommand::Control(init))
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let _ = self.control.set((raft, sm));
        for p in 0..self.config.partitions {
            let group = self.host_group(p).await?;
            group
                .raft
                .initialize(self.self_member())
                .await
                .map_err(|e| raft_err(e.to_string()))?;
        }
        tracing::info!(
            partitions = self.config.partitions,
            "bootstrapped a new cluster"
        );
        Ok(())
    }

    /// Asks `seeds` (and the leaders they name) to admit this node as a new member.
    pub(super) async fn join(&self, seeds: &[String]) -> Result<NodeId, ClusterError> {
        let started = Instant::now();
        let mut queue: Vec<String> = seeds.to_vec();
        let mut reason = String::from("no member answered");
        while started.elapsed() < JOIN_DEADLINE {
            let Some(seed) = queue.first().cloned() else {
                queue = seeds.to_vec();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            queue.remove(0);
            let request = PeerRequest::Join {
                addr: self.config.advertise.clone(),
            };
            match ask(&self.peers, &seed, &request, Duration::from_secs(10)).await {
                Ok(PeerResponse::Joined { id, cluster }) => {
                    self.peers.set_cluster(cluster);
                    return Ok(id);
                }
                Ok(PeerResponse::NotLeader {
                    leader_addr: Some(addr),
                }) => queue.insert(0, addr),
                Ok(PeerResponse::Refused { reason }) => {
                    return Err(ClusterError::Join {
                        seeds: seeds.to_vec(),
                        reason,
                    })
                }
                Ok(other) => reason = format!("{seed} answered {other:?}"),
                Err(e) => reason = e,
            }
        }
        Err(ClusterError::Join {
            seeds: seeds.to_vec(),
            reason,
        })
    }

    /// True when other active nodes could take over this node's replicas.
    pub fn can_leave(&self) -> bool {
        self.state().is_some_and(|s| {
            let active = s.active_nodes();
            active.contains(&self.id()) && active.len() > 1
        })
    }

    /// Leaves the cluster gracefully: asks the control leader to re-place this node's
    /// partitions, then waits (up to `deadline`) until no group is hosted here any more,
    /// which means their replicas and leadership have moved to other nodes.
    pub async fn leave(&self, deadline: Duration) -> Result<(), ClusterError> {
        let started = Instant::now();
        // From now on this node is on its way out: it never asks to be back.
        self.leaving.store(true, Ordering::Relaxed);
        let fail = |reason: String| ClusterError::Leave { reason };
        let mut target: Option<String> = None;
        loop {
            if started.elapsed() > deadline {
                return Err(fail(
                    "the control leader did not accept the leave in time".into(),
                ));
            }
            let answer = match &target {
                None => {
                    self.control_command(ControlCommand::Leave { id: self.id() })
                        .await
                }
                Some(addr) => ask(
                    &self.peers,
                    addr,
                    &PeerRequest::Leave { id: self.id() },
                    Duration::from_secs(5),
                )
                .await
                .unwrap_or(PeerResponse::NotLeader { leader_addr: None }),
            };
            match answer {
                PeerResponse::Applied => break,
                PeerResponse::Refused { reason } => return Err(fail(reason)),
                PeerResponse::NotLeader { leader_addr } => {
                    target = leader_addr.or_else(|| self.control_leader_addr());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return Err(fail(format!("unexpected answer {other:?}"))),
            }
        }
        tracing::info!("leaving: moving replicas and leadership away");
        loop {
            // Registered before the count is read, so no release in between is missed.
            let released = self.released.notified();
            let hosted = self.report().hosted;
            if hosted == 0 {
                return Ok(());
            }
            let left = deadline.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, released).await.is_err() {
                return Err(fail(format!("{hosted} partitions still hosted here")));
            }
        }
    }

    /// Answers a peer message: each of its requests, concurrently, in order.
    pub async fn handle_peer(&self, payload: &[u8]) -> PeerAnswer {
        let envelope = decode_request(payload).map(|envelope| {
            let joining = envelope
                .requests
                .iter()
                .all(|r| matches!(r, PeerRequest::Join { .. }));
            let mine = self.peers.cluster();
            let ours = joining || (mine != 0 && envelope.cluster == mine);
            (ours, envelope.requests)
        });
        let requests = match envelope {
            Err(e) => {
                if self.say("unreadable peer message", 0) {
                    tracing::warn!(error = %e, "a peer message could not be read");
                }
                return PeerAnswer::refused(e.to_string());
            }
            Ok((_, requests)) if requests.is_empty() || requests.len() > MAX_BATCH_ITEMS => {
                return PeerAnswer::refused(format!(
                    "a peer message carries 1 to {MAX_BATCH_ITEMS} requests, not {}",
                    requests.len()
                ));
            }
            // Another cluster (or a node that has not joined yet) is not answered: a
            // process restarted at a member's address must not pose as it.
            Ok((false, requests)) => {
                let answers: Vec<_> = requests.iter().map(|_| PeerResponse::NoSuchGroup).collect();
                return PeerAnswer::of(&answers);
            }
            Ok((true, requests)) => requests,
        };
        let answers = join_all(requests.into_iter().map(|r| self.answer(r))).await;
        PeerAnswer::of(&answers)
    }

    /// Answers one request of a peer message.
    async fn answer(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::Ping => {
                *lock(&self.last_pinged) = Instant::now();
                self.set_isolated(false);
                PeerResponse::Pong { id: self.id() }
            }
            PeerRequest::Rejoin { id, addr } => self.readmit(id, addr).await,
            PeerRequest::Hosts { group, to } => {
                if to == self.id() && self.group(group).is_some() {
                    PeerResponse::Applied
                } else {
                    PeerResponse::NoSuchGroup
                }
            }
            PeerRequest::Join { addr } => self.control_command(ControlCommand::Join { addr }).await,
            PeerRequest::Leave { id } => self.control_command(ControlCommand::Leave { id }).await,
            PeerRequest::Release { group, to } => {
                let listed = self
                    .state()
                    .and_then(|s| s.assignment.get(group as usize).map(|r| r.contains(&to)))
                    .unwrap_or(true);
                if to == self.id() && !listed {
                    self.release_group(group).await;
                }
                PeerResponse::Applied
            }
            PeerRequest::Elect { group, to } => {
                match self.group(group).filter(|_| to == self.id()) {
                    Some(g) => match g.raft.trigger().elect().await {
                        Ok(()) => PeerResponse::Applied,
                        Err(e) => PeerResponse::Refused {
                            reason: e.to_string(),
                        },
                    },
                    None => PeerResponse::NoSuchGroup,
                }
            }
            PeerRequest::Raft { group, to, rpc } => {
                let raft = if group == CONTROL_GROUP {
                    self.control_raft().cloned()
                } else {
                    self.group(group).map(|g| {
                        if to == self.id() {
                            match &rpc {
                                RaftRpc::Append(_) => g.append_heard(),
                                RaftRpc::Vote(v) => g.vote_asked(v.vote.leader_id().term),
                                RaftRpc::Snapshot(_) => {}
                            }
                        }
                        g.raft.clone()
                    })
                };
                // Answer only as the member the message is meant for.
                match raft.filter(|_| to == self.id()) {
                    None => PeerResponse::NoSuchGroup,
                    Some(raft) => match rpc {
                        RaftRpc::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
                        RaftRpc::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
                        RaftRpc::Snapshot(r) => {
                            PeerResponse::Snapshot(raft.install_snapshot(r).await)
                        }
                    },
                }
            }
        }
    }

    pub(super) fn control_leader_addr(&self) -> Option<String> {
        let leader = self.control_raft()?.metrics().borrow().current_leader?;
        self.state()?.addr_of(leader).map(str::to_string)
    }

    /// Runs a control command here if this node leads the control group.
    pub(super) async fn control_command(&self, command: ControlCommand) -> PeerResponse {
        let Some(raft) = self.control_raft() else {
            return PeerResponse::NotLeader { leader_addr: None };
        };
        let write = tokio::time::timeout(
            MEMBERSHIP_CHANGE_LIMIT,
            raft.client_write(GroupCommand::Control(command)),
        );
        let Ok(written) = write.await else {
            return PeerResponse::Refused {
                reason: format!(
                    "the control group did not commit within {MEMBERSHIP_CHANGE_LIMIT:?}"
                ),
            };
        };
        match written {
            Ok(resp) => match resp.data {
                GroupResponse::Control(ControlResponse::Joined { id, .. }) => {
                    PeerResponse::Joined {
                        id,
                        cluster: self.peers.cluster(),
                    }
                }
                GroupResponse::Control(ControlResponse::Applied { .. }) => PeerResponse::Applied,
                GroupResponse::Control(ControlResponse::Refused { reason }) => {
                    PeerResponse::Refused { reason }
                }
                other => PeerResponse::Refused {
                    reason: format!("unexpected control response {other:?}"),
                },
            },
            Err(e) => match e.forward_to_leader() {
                Some(f) => PeerResponse::NotLeader {
                    leader_addr: f
                        .leader_node
                        .as_ref()
                        .map(|n| n.addr.clone())
                        .or_else(|| self.control_leader_addr()),
                },
                None => PeerResponse::Refused {
                    reason: e.to_string(),
                },
            },
        }
    }

    /// Control leader: every active node is a member; up to five are voters; down nodes go.
    pub(super) async fn manage_control_members(&self, state: &ClusterState) {
        let Some(raft) = self.control_raft() else {
            return;
        };
        let membership = raft.metrics().borrow().membership_config.clone();
        let members: BTreeSet<NodeId> =
            membership.membership().nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        let active = state.active_nodes();
        let Some(plan) = plan_control(self.id(), &active, &members, &voters, CONTROL_VOTERS) else {
            return;
        };
        let result: Result<(), String> = async {
            for id in plan.learners {
                if self.say("adding node to the control group", id) {
                    tracing::info!(node = id, "adding node to the control group");
                }
                if let Some(addr) = state.addr_of(id) {
                    bounded(
                        "add control learner",
                        raft.add_learner(id, BasicNode::new(addr), false),
                    )
                    .await?;
                }
            }
            if let Some(want) = plan.voters {
                tracing::info!(?want, ?voters, "changing control voters");
                bounded("change control voters", raft.change_membership(want, false)).await?;
            }
            if !plan.remove.is_empty() {
                let remove = raft.change_membership(ChangeMembers::RemoveNodes(plan.remove), false);
                bounded("remove control members", remove).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if self.say("control membership change deferred", 0) {
                tracing::info!(error = %e, "control membership change deferred");
            } else {
                tracing::debug!(error = %e, "control membership change deferred");
            }
        }
    }
}

/// The encoded answer to a peer message, and how many requests it answers.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The answers, encoded.
    pub payload: Vec<u8>,
    /// How many.
    pub requests: usize,
}

impl PeerAnswer {
    fn of(answers: &[PeerResponse]) -> Self {
        Self {
            payload: encode_responses(answers),
            requests: answers.len(),
        }
    }

    /// The answer to a message that cannot be read or breaks a bound: one refusal.
    fn refused(reason: String) -> Self {
        Self::of(&[PeerResponse::Refused { reason }])
    }
}
