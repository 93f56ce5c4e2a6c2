//! Small pieces the runtime shares: peer calls and membership changes bounded in time,
//! and a lookup.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::peer::{PeerRequest, PeerResponse, Peers};
use crate::cluster::raft_types::{GroupRaft, NodeId};

/// Longest a peer is given to answer a cluster request (not a Raft RPC), connecting
/// included.
pub(crate) const PEER_CALL_LIMIT: Duration = Duration::from_secs(2);

/// Asks a peer, with the whole exchange (waiting for the connection, connecting, sending,
/// the answer) bounded by `limit`: a peer that stopped answering holds no caller longer.
pub(crate) async fn ask(
    peers: &Peers,
    addr: &str,
    request: &PeerRequest,
    limit: Duration,
) -> Result<PeerResponse, String> {
    match tokio::time::timeout(limit, peers.call(addr, request, limit)).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{addr}: no answer within {limit:?}")),
    }
}

/// The voters of a group's current membership, as this node sees it.
pub(crate) fn voters_of(raft: &GroupRaft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// Every member (voter or learner) of a group's current membership with its address, as
/// this node sees it.
pub(crate) fn members_of(raft: &GroupRaft) -> BTreeMap<NodeId, String> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect()
}

/// Longest a membership change may take before it is retried on a later round.
pub(crate) const MEMBERSHIP_CHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Awaits a membership call, giving up after [`MEMBERSHIP_CHANGE_LIMIT`].
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(MEMBERSHIP_CHANGE_LIMIT, call).await {
        Ok(result) => result.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {MEMBERSHIP_CHANGE_LIMIT:?}"
        )),
    }
}
