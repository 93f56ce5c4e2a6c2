//! When each group builds a snapshot. A snapshot lets openraft purge the entries it
//! covers (all but `--raft-snapshot-logs` x 2), so the log never keeps a value beside the
//! applied one for long. openraft's own policy snapshots every N entries whatever the
//! followers do; here a leader holds its snapshot back while a follower still needs
//! entries that the purge after it would drop: a learner that has just installed a
//! snapshot would otherwise find the log purged past it again under a heavy write rate,
//! and need snapshot after snapshot. The hold is bounded, so a follower that is gone
//! (not yet removed) costs a bounded log.
//!
//! ```text
//! every round, per hosted group:  entries since the snapshot >= N ?
//!     follower ─▶ snapshot
//!     leader   ─▶ snapshot, unless a follower's match + keep < applied and the log is
//!                 short of N x HOLD_FACTOR
//! ```

use std::time::Duration;

use crate::cluster::raft_types::GroupRaft;

use super::ClusterNode;

/// How often each group's log is looked at.
pub(super) const SNAPSHOTS_EVERY: Duration = Duration::from_millis(100);
/// How many snapshot periods a leader holds its snapshot back for a lagging follower.
const HOLD_FACTOR: u64 = 32;

/// What the decision looks at, from a group's Raft metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogFacts {
    /// Index of the last applied entry.
    pub applied: Option<u64>,
    /// Index of the last entry the current snapshot covers.
    pub snapshot: Option<u64>,
    /// Leader only: the last entry each member is known to hold (`None`: nothing yet).
    pub matched: Vec<Option<u64>>,
}

/// Entries applied since the snapshot.
fn since_snapshot(facts: &LogFacts) -> u64 {
    let next = |index: Option<u64>| index.map_or(0, |i| i + 1);
    next(facts.applied).saturating_sub(next(facts.snapshot))
}

/// Whether a group should build a snapshot now. `every` is `--raft-snapshot-logs`;
/// `keep`, the entries openraft keeps after a snapshot.
pub(super) fn snapshot_due(facts: &LogFacts, every: u64, keep: u64) -> bool {
    let since = since_snapshot(facts);
    if since < every {
        return false;
    }
    let Some(applied) = facts.applied else {
        return false;
    };
    // The purge after a snapshot at `applied` keeps entries from `applied + 1 - keep` on; a
    // member that has matched `m` needs `m + 1` onwards.
    let lagging = facts
        .matched
        .iter()
        .any(|m| m.is_none_or(|m| m + keep < applied));
    !lagging || since >= every.saturating_mul(HOLD_FACTOR)
}

fn facts_of(raft: &GroupRaft) -> LogFacts {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    LogFacts {
        applied: m.last_applied.map(|l| l.index),
        snapshot: m.snapshot.map(|l| l.index),
        matched: m
            .replication
            .as_ref()
            .map(|r| r.values().map(|l| l.map(|l| l.index)).collect())
            .unwrap_or_default(),
    }
}

impl ClusterNode {
    /// One round: every hosted group, and the control group, builds a snapshot if due.
    pub(super) async fn snapshot_round(&self) {
        let every = self.config.snapshot_logs;
        let keep = self.raft_config.max_in_snapshot_log_to_keep;
        let groups = self.all_groups();
        let rafts = groups.iter().map(|g| &g.raft).chain(self.control_raft());
        for raft in rafts {
            if snapshot_due(&facts_of(raft), every, keep) {
                let _ = raft.trigger().snapshot().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(applied: u64, snapshot: Option<u64>, matched: &[Option<u64>]) -> LogFacts {
        LogFacts {
            applied: Some(applied),
            snapshot,
            matched: matched.to_vec(),
        }
    }

    #[test]
    fn a_follower_snapshots_every_n_entries() {
        assert!(!snapshot_due(&facts(62, None, &[]), 64, 128), "63 entries");
        assert!(snapshot_due(&facts(63, None, &[]), 64, 128), "64 entries");
        assert!(
            !snapshot_due(&facts(127, Some(64), &[]), 64, 128),
            "63 since"
        );
        assert!(
            snapshot_due(&facts(128, Some(64), &[]), 64, 128),
            "64 since"
        );
        let nothing = LogFacts {
            applied: None,
            snapshot: None,
            matched: Vec::new(),
        };
        assert!(!snapshot_due(&nothing, 64, 128));
    }

    #[test]
    fn a_leader_holds_its_snapshot_for_a_follower_the_purge_would_leave_behind() {
        let caught_up = [Some(1_000), Some(998)];
        assert!(snapshot_due(&facts(1_000, Some(900), &caught_up), 64, 128));
        // 1000 - 128 = 872: a member at 872 still finds 873 on; one at 871 would not.
        assert!(snapshot_due(
            &facts(1_000, Some(900), &[Some(1_000), Some(872)]),
            64,
            128
        ));
        let behind = [Some(1_000), Some(871)];
        assert!(!snapshot_due(&facts(1_000, Some(900), &behind), 64, 128));
        let empty = [Some(1_000), None];
        assert!(!snapshot_due(&facts(1_000, Some(900), &empty), 64, 128));
        // Held for at most HOLD_FACTOR periods: 32 x 64 = 2048 entries since the snapshot.
        let behind = [Some(5_000), Some(871)];
        assert!(!snapshot_due(&facts(5_000, Some(2_953), &behind), 64, 128));
        assert!(snapshot_due(&facts(5_000, Some(2_952), &behind), 64, 128));
    }
}
