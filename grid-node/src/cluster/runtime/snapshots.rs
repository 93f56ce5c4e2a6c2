//! When each group builds a snapshot. A snapshot lets openraft purge the entries it
//! covers (all but `--raft-snapshot-logs` x 2), so the log never keeps a value beside the
//! applied one for long. openraft's own policy snapshots every N entries whatever the
//! followers do; here a leader holds its snapshot back while a follower still needs
//! entries that the purge after it would drop: a learner that has just installed a
//! snapshot would otherwise find the log purged past it again under a heavy write rate,
//! and need snapshot after snapshot. The hold is bounded, so a follower that is gone
//! (not yet removed) costs a bounded log.
//!
//! With a data directory a snapshot is written out whole, so it also waits until the
//! log is worth it: its values reach half the state's (at least `--raft-snapshot-bytes`),
//! or [`DISK_LOG_ENTRIES`] entries have gone by. A restart then replays at most that much.
//!
//! ```text
//! every round, per hosted group:  entries since the snapshot >= N ?
//!     (data dir: and log values >= max(state / 2, B), or entries >= DISK_LOG_ENTRIES)
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

/// With a data directory: entries after which a snapshot is written whatever their size.
const DISK_LOG_ENTRIES: u64 = 100_000;

/// The sizes a group's snapshot on disk weighs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sizes {
    /// Value bytes in the log.
    pub log_bytes: u64,
    /// Value bytes in the state.
    pub state_bytes: u64,
    /// The least log value bytes worth a snapshot (`--raft-snapshot-bytes`).
    pub least: u64,
}

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

/// Whether a group that writes its snapshots to disk should build one now.
pub(super) fn disk_snapshot_due(facts: &LogFacts, sizes: Sizes, every: u64, keep: u64) -> bool {
    let worth = sizes.log_bytes >= (sizes.state_bytes / 2).max(sizes.least)
        || since_snapshot(facts) >= DISK_LOG_ENTRIES;
    worth && snapshot_due(facts, every, keep)
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
        // The control group's log carries no values: by entries alone.
        let rafts = groups
            .iter()
            .map(|g| (&g.raft, Some(g)))
            .chain(self.control_raft().map(|raft| (raft, None)));
        for (raft, group) in rafts {
            let facts = facts_of(raft);
            let due = match &self.config.data {
                None => snapshot_due(&facts, every, keep),
                // Sizes are looked at only when snapshots are written out.
                Some(data) => {
                    let sizes = Sizes {
                        log_bytes: group.map_or(0, |g| g.log_bytes()),
                        state_bytes: group
                            .and_then(|g| g.with_partition(|p| p.stats().value_bytes))
                            .unwrap_or(0),
                        least: self.config.snapshot_bytes,
                    };
                    disk_snapshot_due(&facts, sizes, every, keep)
                        && data.room_for_snapshot(sizes.state_bytes.saturating_mul(2))
                }
            };
            if due {
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
    fn on_disk_a_snapshot_waits_until_the_log_is_worth_writing_out() {
        let f = facts(100, Some(10), &[]);
        let sizes = |log_mib: u64, state_mib: u64| Sizes {
            log_bytes: log_mib << 20,
            state_bytes: state_mib << 20,
            least: 16 << 20,
        };
        assert!(snapshot_due(&f, 64, 128));
        assert!(
            !disk_snapshot_due(&f, sizes(15, 0), 64, 128),
            "under 16 MiB"
        );
        assert!(disk_snapshot_due(&f, sizes(16, 0), 64, 128));
        assert!(
            !disk_snapshot_due(&f, sizes(40, 100), 64, 128),
            "under half the state"
        );
        assert!(disk_snapshot_due(&f, sizes(50, 100), 64, 128));
        let many = facts(100_010, Some(10), &[]);
        assert!(
            disk_snapshot_due(&many, sizes(0, 100), 64, 128),
            "entries alone"
        );
        let few = facts(40, Some(10), &[]);
        assert!(
            !disk_snapshot_due(&few, sizes(50, 0), 64, 128),
            "N still applies"
        );
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
