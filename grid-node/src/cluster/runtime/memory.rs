//! The node's memory limit: measure the value bytes of every hosted replica and, past the
//! limit, ask the groups this node leads to evict their least recently used objects.
//!
//! Every replica of a partition holds the same objects, so a node frees memory on its
//! followers' partitions only through their leaders (on other nodes, which measure and
//! evict the same way). Each node therefore evicts, from the groups it leads, its share
//! of the excess: `excess x led / hosted`. With balanced leaders, the evictions of all
//! nodes together bring every node back under the limit, to [`LOW_WATER`] of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, ClusterNode};
use crate::cluster::raft_types::GroupId;

/// After eviction, aim for this fraction of the limit, so eviction does not run on every
/// write near the limit.
const LOW_WATER: f64 = 0.9;
/// Share of the limit the Raft logs of all hosted groups may hold before the largest are
/// compacted (snapshot, then purge).
const LOG_SHARE: f64 = 0.25;
/// Longest a compaction waits for its snapshot.
const COMPACT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Least time between two compactions of one group.
const COMPACT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a node does with its memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Value bytes the node may hold over its hosted replicas; `None`: no limit.
    pub max: Option<u64>,
    /// Past the limit, evict (true) or refuse writes (false).
    pub evict: bool,
}

/// Bytes each led group should evict: nothing under the limit, else the node's share of
/// the excess (down to the low-water mark), split over the led groups by their size.
pub fn eviction_plan(hosted: u64, limit: u64, led: &[(GroupId, u64)]) -> Vec<(GroupId, u64)> {
    if hosted <= limit || hosted == 0 {
        return Vec::new();
    }
    let target = (limit as f64 * LOW_WATER) as u64;
    let excess = hosted - target;
    let led_total: u64 = led.iter().map(|(_, b)| b).sum();
    if led_total == 0 {
        return Vec::new();
    }
    let share = excess as f64 * led_total as f64 / hosted as f64;
    led.iter()
        .filter(|(_, bytes)| *bytes > 0)
        .map(|(g, bytes)| (*g, (share * *bytes as f64 / led_total as f64).ceil() as u64))
        .filter(|(_, bytes)| *bytes > 0)
        .collect()
}

/// Groups whose logs hold more value bytes than [`LOG_SHARE`] of the limit allows, all
/// logs together; the largest first, until the rest fit.
pub fn logs_to_compact(limit: u64, logs: &[(GroupId, u64)]) -> Vec<GroupId> {
    let budget = (limit as f64 * LOG_SHARE) as u64;
    let mut total: u64 = logs.iter().map(|(_, b)| b).sum();
    let mut by_size: Vec<&(GroupId, u64)> = logs.iter().filter(|(_, b)| *b > 0).collect();
    by_size.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    let mut chosen = Vec::new();
    for (id, bytes) in by_size {
        if total <= budget {
            break;
        }
        chosen.push(*id);
        total -= bytes;
    }
    chosen
}

impl ClusterNode {
    /// Compacts one group's log in the background, one compaction per group at a time.
    fn compact_in_background(self: &Arc<Self>, id: GroupId) {
        if !lock(&self.compacting).insert(id) {
            return;
        }
        let node = Arc::clone(self);
        let task = async move {
            if let Some(group) = node.group(id) {
                group.compact_log(COMPACT_LIMIT).await;
                // One compaction per group per pause, however fast writes refill the log.
                tokio::time::sleep(COMPACT_PAUSE).await;
            }
            lock(&node.compacting).remove(&id);
        };
        // Owned by the node's task set, which shutdown aborts.
        if let Ok(mut tasks) = self.tasks.try_lock() {
            tasks.spawn(task);
        } else {
            lock(&self.compacting).remove(&id);
        }
    }

    /// Value bytes held over every hosted replica (objects, events, log entries), as
    /// measured last (every reconcile round).
    pub fn memory_used(&self) -> u64 {
        self.memory_used.load(Ordering::Relaxed)
    }

    /// The node's memory limit.
    pub fn memory_limit(&self) -> MemoryLimit {
        self.config.memory
    }

    /// Measures memory (every value byte held: objects, events owed to clients, Raft log
    /// entries not yet purged), compacts logs that hold too much of it, and, past the
    /// limit with eviction on, asks the led groups to evict.
    pub(super) fn enforce_memory(self: &Arc<Self>) {
        let mut hosted = 0;
        let mut led = Vec::new();
        let mut logs = Vec::new();
        let groups = self.all_groups();
        for g in &groups {
            let (objects, outbox) = g
                .with_partition(|p| (p.stats().value_bytes, p.outbox_bytes()))
                .unwrap_or((0, 0));
            let log = g.log_bytes();
            hosted += objects + outbox + log;
            logs.push((g.id, log));
            if g.is_leader() {
                led.push((g.id, objects));
            }
        }
        self.memory_used.store(hosted, Ordering::Relaxed);
        if let Some(limit) = self.config.memory.max {
            for id in logs_to_compact(limit, &logs) {
                self.compact_in_background(id);
            }
        }
        let MemoryLimit {
            max: Some(limit),
            evict: true,
        } = self.config.memory
        else {
            return;
        };
        // Log entries count up to their share of the limit: past it, compaction frees
        // them, and evicting live objects for them would not.
        let log_total: u64 = logs.iter().map(|(_, b)| b).sum();
        let log_counted = log_total.min((limit as f64 * LOG_SHARE) as u64);
        let counted = hosted - log_total + log_counted;
        for (id, bytes) in eviction_plan(counted, limit, &led) {
            if let Some(g) = groups.iter().find(|g| g.id == id) {
                g.request_eviction(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::eviction_plan;

    #[test]
    fn the_largest_logs_are_compacted_until_the_rest_fit() {
        use super::logs_to_compact;
        // Budget: a quarter of 1000.
        assert!(logs_to_compact(1000, &[(1, 100), (2, 150)]).is_empty());
        assert_eq!(
            logs_to_compact(1000, &[(1, 100), (2, 300), (3, 50)]),
            vec![2]
        );
        assert_eq!(
            logs_to_compact(1000, &[(1, 200), (2, 300), (3, 250)]),
            vec![2, 3]
        );
        assert!(logs_to_compact(1000, &[(1, 0)]).is_empty());
    }

    #[test]
    fn nothing_under_the_limit() {
        assert!(eviction_plan(1000, 1000, &[(0, 500)]).is_empty());
    }

    #[test]
    fn a_node_leading_everything_evicts_the_whole_excess() {
        // Down to 90 % of 1000 from 1200: 300 bytes.
        assert_eq!(eviction_plan(1200, 1000, &[(0, 1200)]), vec![(0, 300)]);
    }

    #[test]
    fn a_node_leading_a_third_evicts_a_third_split_by_group_size() {
        let plan = eviction_plan(1200, 1000, &[(1, 100), (2, 300)]);
        // Share: 300 x 400 / 1200 = 100, split 1:3.
        assert_eq!(plan, vec![(1, 25), (2, 75)]);
    }

    #[test]
    fn empty_groups_and_no_leadership_evict_nothing() {
        assert!(eviction_plan(1200, 1000, &[]).is_empty());
        assert_eq!(
            eviction_plan(1200, 1000, &[(1, 0), (2, 1200)]),
            vec![(2, 300)]
        );
    }
}
