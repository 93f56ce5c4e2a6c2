//! Small pieces the runtime shares: peer calls and membership changes bounded in time, the
//! periodic-loop helper, and two lookups.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

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

/// Runs `round` every `period` until `shutdown`; a slow round delays the next one.
pub(crate) async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = round() => {}
                }
            }
        }
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

/// A random id, from the standard library's per-process random hash keys and the clock.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish().max(1)
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
