//! The node's memory limit: measure the value bytes of every hosted replica and, past the
//! limit, ask the groups this node leads to evict their least recently used objects.
//!
//! Every replica of a partition holds the same objects, so a node frees memory on its
//! followers' partitions only through their leaders (on other nodes, which measure and
//! evict the same way). Each node therefore evicts, from the groups it leads, its share
//! of the excess: `excess x led / hosted`. With balanced leaders, the evictions of all
//! nodes together bring every node back under the limit, to [`LOW_WATER`] of it.

use std::sync::atomic::Ordering;

use super::ClusterNode;
use crate::cluster::raft_types::GroupId;

/// After eviction, aim for this fraction of the limit, so eviction does not run on every
/// write near the limit.
const LOW_WATER: f64 = 0.9;

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

impl ClusterNode {
    /// Value bytes held over every hosted replica, as measured last (every reconcile
    /// round).
    pub fn memory_used(&self) -> u64 {
        self.memory_used.load(Ordering::Relaxed)
    }

    /// The node's memory limit.
    pub fn memory_limit(&self) -> MemoryLimit {
        self.config.memory
    }

    /// Measures memory and, past the limit with eviction on, asks the led groups to evict.
    pub(super) fn enforce_memory(&self) {
        let mut hosted = 0;
        let mut led = Vec::new();
        let groups = self.all_groups();
        for g in &groups {
            let bytes = g.with_partition(|p| p.stats().value_bytes).unwrap_or(0);
            hosted += bytes;
            if g.is_leader() {
                led.push((g.id, bytes));
            }
        }
        self.memory_used.store(hosted, Ordering::Relaxed);
        let MemoryLimit {
            max: Some(limit),
            evict: true,
        } = self.config.memory
        else {
            return;
        };
        for (id, bytes) in eviction_plan(hosted, limit, &led) {
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
