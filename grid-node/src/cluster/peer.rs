//! Node-to-node traffic: Raft RPCs of every group and cluster requests (join, ping),
//! over one pipelined connection per peer. Messages are serde types in the versioned
//! [`PEER`] format (log entries travel in them, so it covers those too), carried in the
//! wire protocol's `Peer` request, so peers use the same port and framing as clients; a
//! peer connection opens with the cluster-secret handshake ([`grid_proto::peer_auth`])
//! instead of a hello, and only such a connection may send `Peer` requests. One `Peer`
//! request carries a batch of messages: the appends (heartbeats included) of every group
//! queued for a peer leave together ([`outbox`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::sync::lock;

use grid_client::conn::{Connection, Dial};
use grid_client::ClientError;
use grid_proto::{Reply, Request};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::filter::{Action, Filters, MessageKind};
use super::raft_types::{GroupId, Member, NodeId, TypeConfig};
use crate::format::{FormatError, PEER};

mod outbox;

use outbox::Outbox;

/// How a node names itself to a peer, for logs only: the peer role comes from proving
/// the cluster secret.
pub const PEER_CLIENT_NAME: &str = concat!("grid-node/", env!("CARGO_PKG_VERSION"));

/// A Raft RPC for one group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log replication and heartbeats.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Elections.
    Vote(VoteRequest<NodeId>),
    /// A snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// A message from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A Raft RPC for `group`, addressed to node `to`.
    Raft {
        /// The group.
        group: GroupId,
        /// The member it is meant for. A process that restarted at the same address is a
        /// different, empty member and must not answer for its predecessor.
        to: NodeId,
        /// The RPC.
        rpc: RaftRpc,
    },
    /// A new node asks to join the cluster.
    Join {
        /// Its address.
        addr: String,
    },
    /// Liveness probe from the control leader.
    Ping,
    /// Leadership hand-over: node `to` should start an election for `group` now.
    Elect {
        /// The group.
        group: GroupId,
        /// The member that should stand.
        to: NodeId,
    },
    /// The group's leader removed member `to`: it may stop hosting its replica.
    Release {
        /// The group.
        group: GroupId,
        /// The removed member.
        to: NodeId,
    },
    /// A node leaves gracefully: move its replicas away.
    Leave {
        /// The node.
        id: NodeId,
    },
    /// A node that was cut off asks to be back (it was, or may have been, marked down).
    Rejoin {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: String,
    },
    /// Does node `to` host `group`? Asked before adding it as a learner, so the leader
    /// never replicates to a node that has not learnt of the group yet.
    Hosts {
        /// The group.
        group: GroupId,
        /// The node asked.
        to: NodeId,
    },
}

/// Most messages one peer message may carry ([`outbox`] coalesces up to this many).
pub const MAX_BATCH_ITEMS: usize = 256;

/// A peer message as sent: one or more requests (a batch, answered in order), stamped
/// with the sender's cluster id, so a process that restarted at a member's address (and
/// bootstrapped a new cluster, or has not joined yet) never answers for that member.
#[derive(Debug, Deserialize)]
pub struct PeerEnvelope {
    /// The sender's cluster id (0 before it has one; only `Join` is accepted then).
    pub cluster: u64,
    /// The requests, at least one and at most [`MAX_BATCH_ITEMS`].
    pub requests: Vec<PeerRequest>,
}

/// The sending side of [`PeerEnvelope`]: the same encoding, borrowing the requests.
#[derive(Serialize)]
struct PeerEnvelopeRef<'a> {
    cluster: u64,
    requests: &'a [PeerRequest],
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Answer to `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The group is not hosted here (yet, or any more).
    NoSuchGroup,
    /// Joined under `id`.
    Joined {
        /// The new node's id.
        id: NodeId,
        /// The cluster's id.
        cluster: u64,
    },
    /// The control command was applied.
    Applied,
    /// Ask the control leader instead.
    NotLeader {
        /// Its address, when known.
        leader_addr: Option<String>,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
    /// Answer to `Ping`.
    Pong {
        /// The answering node's id (0 before it has joined).
        id: NodeId,
    },
    /// Answer to `Rejoin`: the node is active.
    Rejoined {
        /// True when it was down and is back now; false when it was active already.
        readmitted: bool,
    },
}

/// A peer could not be asked.
#[derive(Debug, Clone, Error)]
pub enum PeerError {
    /// No connection could be opened.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The request failed on an open connection (timeout, reset, bad answer).
    #[error("peer {addr}: {reason}")]
    Failed {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Encodes a message of one request as a node sends it: stamped with its cluster id.
pub fn encode_request(cluster: u64, request: &PeerRequest) -> Vec<u8> {
    encode_requests(cluster, std::slice::from_ref(request))
}

/// Encodes a message of several requests, answered in order.
pub fn encode_requests(cluster: u64, requests: &[PeerRequest]) -> Vec<u8> {
    PEER.encode(&PeerEnvelopeRef { cluster, requests })
}

/// Reads a message as [`encode_requests`] wrote it.
pub fn decode_request(payload: &[u8]) -> Result<PeerEnvelope, FormatError> {
    PEER.decode(payload)
}

/// Encodes the answers to a message, one per request, in order.
pub fn encode_responses(responses: &[PeerResponse]) -> Vec<u8> {
    PEER.encode(responses)
}

/// Reads answers as [`encode_responses`] wrote them.
pub fn decode_responses(payload: &[u8]) -> Result<Vec<PeerResponse>, FormatError> {
    PEER.decode(payload)
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// The connections to peers, one per address, and the sending of messages over them.
#[derive(Debug)]
struct Link {
    dial: Dial,
    slots: Mutex<HashMap<String, Slot>>,
    /// This node's cluster id, stamped on every message (0 until known).
    cluster: AtomicU64,
}

impl Link {
    async fn connection(&self, addr: &str) -> Result<Arc<Connection>, PeerError> {
        let slot = Arc::clone(lock(&self.slots).entry(addr.to_string()).or_default());
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let conn =
            Connection::open(addr, &self.dial)
                .await
                .map_err(|e| PeerError::Unreachable {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        let conn = Arc::new(conn);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends `requests` as one message and waits up to `timeout` for their answers.
    async fn call(
        &self,
        addr: &str,
        requests: &[PeerRequest],
        timeout: Duration,
    ) -> Result<Vec<PeerResponse>, PeerError> {
        let failed = |reason: String| PeerError::Failed {
            addr: addr.to_string(),
            reason,
        };
        let conn = self.connection(addr).await?;
        let payload = encode_requests(self.cluster.load(Ordering::Relaxed), requests);
        let reply = conn
            .call(&Request::Peer { payload }, timeout)
            .await
            .map_err(|e| match e {
                ClientError::Connect { reason, .. } => PeerError::Unreachable {
                    addr: addr.to_string(),
                    reason,
                },
                other => failed(other.to_string()),
            })?;
        match reply {
            Reply::Peer { payload } => {
                decode_responses(&payload).map_err(|e| failed(e.to_string()))
            }
            other => Err(failed(format!("unexpected reply {other:?}"))),
        }
    }
}

/// One connection per peer address, shared by every group on this node, and one
/// [`outbox`] per peer that coalesces the groups' appends.
#[derive(Debug)]
pub struct Peers {
    link: Arc<Link>,
    outboxes: Mutex<HashMap<String, Arc<Outbox>>>,
    /// Fault injection: what happens to messages by peer and kind (tests only).
    filters: Mutex<Filters>,
}

impl Peers {
    /// A pool whose connections open as `dial` says (the cluster secret, TLS).
    pub fn new(dial: Dial) -> Self {
        Self {
            link: Arc::new(Link {
                dial,
                slots: Mutex::new(HashMap::new()),
                cluster: AtomicU64::new(0),
            }),
            outboxes: Mutex::default(),
            filters: Mutex::default(),
        }
    }

    /// Sets the cluster id stamped on requests.
    pub fn set_cluster(&self, cluster: u64) {
        self.link.cluster.store(cluster, Ordering::Relaxed);
    }

    /// The cluster id, 0 until known.
    pub fn cluster(&self) -> u64 {
        self.link.cluster.load(Ordering::Relaxed)
    }

    /// Fault injection: from now on, messages go through `filters` (replacing the
    /// previous ones; empty filters heal).
    pub fn set_filters(&self, filters: Filters) {
        *lock(&self.filters) = filters;
    }

    /// Peers whose connection was open and has closed (the peer hung up or died), and is
    /// not being reopened right now.
    pub fn closed_addrs(&self) -> Vec<String> {
        lock(&self.link.slots)
            .iter()
            .filter(|(_, slot)| {
                slot.try_lock()
                    .is_ok_and(|conn| conn.as_ref().is_some_and(|c| c.is_closed()))
            })
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// Whether the connection to `addr` is open now.
    pub fn is_open(&self, addr: &str) -> bool {
        lock(&self.link.slots).get(addr).is_some_and(|slot| {
            slot.try_lock()
                .is_ok_and(|conn| conn.as_ref().is_some_and(|c| !c.is_closed()))
        })
    }

    /// Applies the fault-injection filters to a message for `addr`: it is dropped (an
    /// error), delayed, or goes on.
    async fn filter(&self, addr: &str, request: &PeerRequest) -> Result<(), PeerError> {
        let decided = lock(&self.filters).decide(addr, MessageKind::of(request));
        match decided {
            Some(Action::Drop) => Err(PeerError::Unreachable {
                addr: addr.to_string(),
                reason: "dropped by a fault-injection filter".into(),
            }),
            Some(Action::Delay(by)) => {
                tokio::time::sleep(by).await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Sends one message on its own and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        self.filter(addr, request).await?;
        let answers = self
            .link
            .call(addr, std::slice::from_ref(request), timeout)
            .await?;
        only_answer(addr, answers)
    }

    /// Sends a message, in a batch with others for the same peer when it is a Raft
    /// append (or heartbeat), and waits up to `timeout` for the answer.
    pub async fn send(
        &self,
        addr: &str,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        if !outbox::coalesces(&request) {
            return self.call(addr, &request, timeout).await;
        }
        self.filter(addr, &request).await?;
        let outbox = Arc::clone(
            lock(&self.outboxes)
                .entry(addr.to_string())
                .or_insert_with(|| {
                    Arc::new(Outbox::start(Arc::clone(&self.link), addr.to_string()))
                }),
        );
        outbox.call(addr, request, timeout).await
    }
}

/// The one answer to a message of one request.
fn only_answer(addr: &str, answers: Vec<PeerResponse>) -> Result<PeerResponse, PeerError> {
    let count = answers.len();
    match <[PeerResponse; 1]>::try_from(answers) {
        Ok([answer]) => Ok(answer),
        Err(_) => Err(PeerError::Failed {
            addr: addr.to_string(),
            reason: format!("{count} answers to one request"),
        }),
    }
}

/// Makes [`GroupLink`]s for one group.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    /// The node's peer pool.
    pub peers: Arc<Peers>,
    /// The group.
    pub group: GroupId,
}

/// The way from one group member to another.
#[derive(Debug)]
pub struct GroupLink {
    peers: Arc<Peers>,
    group: GroupId,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupLink;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> GroupLink {
        GroupLink {
            peers: Arc::clone(&self.peers),
            group: self.group,
            target,
            addr: node.addr.clone(),
        }
    }
}

fn unreachable_err<E: std::error::Error>(reason: String) -> RPCError<NodeId, Member, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
}

impl GroupLink {
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<NodeId, Member, E>> {
        let request = PeerRequest::Raft {
            group: self.group,
            to: self.target,
            rpc,
        };
        match self
            .peers
            .send(&self.addr, request, option.hard_ttl())
            .await
        {
            Ok(PeerResponse::NoSuchGroup) => Err(unreachable_err(format!(
                "group {} not hosted on node {}",
                self.group, self.target
            ))),
            Ok(response) => Ok(response),
            Err(PeerError::Unreachable { reason, .. }) => Err(unreachable_err(reason)),
            Err(e @ PeerError::Failed { .. }) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, got: &PeerResponse) -> RPCError<NodeId, Member, E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "unexpected peer answer {got:?}"
        ))))
    }
}

impl RaftNetwork<TypeConfig> for GroupLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(RaftRpc::Append(rpc), &option).await? {
            PeerResponse::Append(Ok(r)) => Ok(r),
            PeerResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(RaftRpc::Snapshot(rpc), &option).await? {
            PeerResponse::Snapshot(Ok(r)) => Ok(r),
            PeerResponse::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(RaftRpc::Vote(rpc), &option).await? {
            PeerResponse::Vote(Ok(r)) => Ok(r),
            PeerResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }
}
