//! Placement planner: which nodes hold each partition's replicas, and which of them is
//! the preferred Raft leader. Pure and deterministic: same inputs, same plan.
//!
//! Algorithm (`r = min(R, N)` replicas per partition, `T = P * r` replicas in all):
//!
//! 1. **Keep.** Start from `previous`, dropping nodes that are gone (and duplicates, and
//!    slots beyond `r`). A fresh cluster starts with every slot empty.
//! 2. **Fill** each empty slot with a bounded-load rendezvous pick: among nodes not yet in
//!    the set, prefer those under `floor(T/N)`, then those under `ceil(T/N)`, and within a
//!    tier the highest `xxh3(partition, node)` score. A fresh cluster is thus placed by
//!    rendezvous hashing capped at the balanced load.
//! 3. **Rebalance** to exact per-node targets in `{floor(T/N), ceil(T/N)}` (the nodes that
//!    already hold most get the ceiling). First, shortest chains of free moves (BFS): a
//!    replica placed in step 2 moves on at no cost, which repairs fills that blocked each
//!    other. Then each node still short takes replicas straight from nodes above target,
//!    a follower before a leader, then by rendezvous score. Each such move is forced by
//!    the targets, so an add moves about `T/N` replicas and a removal what the node held.
//! 4. **Leaders.** Keep each surviving previous leader; an orphaned partition takes the
//!    member that leads fewest. Then, first shedding excess over `ceil(P/N)` and then
//!    filling shortfalls under `floor(P/N)`, leadership is handed over directly or along
//!    the cheapest chain (0-1 BFS; re-handing a partition whose leader already changed is
//!    free) until every node leads `floor(P/N)` or `ceil(P/N)` partitions. With replica
//!    counts balanced this band is always reachable (Hall's condition holds for both
//!    bounds, since `ceil(P*r/N) <= r*ceil(P/N)` and `floor(P*r/N) >= r*floor(P/N)`).
//!
//! Cost: fill `O(P*r*N)`; each free chain one BFS of at most `O(P*r*N)` (few are needed
//! after a tiered fill); direct moves one scan of `P*r` per short node; leaders `O(P*r)` per direct pass plus one BFS
//! per leftover unit. P = 512, N = 16, R = 3 plans in under 1 ms (release).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use xxhash_rust::xxh3::xxh3_64;

/// A node's identity in the cluster.
pub type NodeId = u64;

/// One partition's replicas; index 0 is the preferred leader. Distinct nodes.
pub type ReplicaSet = Vec<NodeId>;

/// Computes the assignment of `partitions` partitions with `replicas` replicas each over
/// `nodes` (the live, non-leaving nodes), starting from `previous` (the current
/// assignment, possibly naming nodes no longer in `nodes`) so that as little as possible
/// moves. `previous` empty or `None` means a fresh cluster.
///
/// Guarantees, with `N = nodes.len()`, `r = min(replicas, N)` and `T = partitions * r`:
/// - the result has exactly `partitions` entries, each of `r` distinct members of `nodes`;
/// - every node holds `floor(T/N)` or `ceil(T/N)` replicas;
/// - every node leads (is first in) `floor(P/N)` or `ceil(P/N)` partitions;
/// - replicas and leaders from `previous` stay where these bounds allow.
///
/// If `previous` has fewer entries than `partitions`, the extra partitions are placed as
/// in a fresh cluster; entries beyond `partitions` are ignored. With no nodes every
/// replica set is empty.
pub fn plan(
    partitions: u32,
    replicas: usize,
    nodes: &BTreeSet<NodeId>,
    previous: Option<&[ReplicaSet]>,
) -> Vec<ReplicaSet> {
    let previous = previous.unwrap_or(&[]);
    let mut planner = Planner::new(partitions, replicas, nodes, previous);
    planner.fill();
    planner.rebalance();
    planner.balance_leaders();
    planner.into_assignment()
}

/// Number of replicas each node holds. Nodes holding none are absent.
pub fn replica_counts(assignment: &[ReplicaSet]) -> BTreeMap<NodeId, usize> {
    let mut counts = BTreeMap::new();
    for &node in assignment.iter().flatten() {
        *counts.entry(node).or_insert(0) += 1;
    }
    counts
}

/// Number of partitions each node leads (holds at index 0). Nodes leading none are absent.
pub fn leader_counts(assignment: &[ReplicaSet]) -> BTreeMap<NodeId, usize> {
    let mut counts = BTreeMap::new();
    for &node in assignment.iter().filter_map(|set| set.first()) {
        *counts.entry(node).or_insert(0) += 1;
    }
    counts
}

/// Replicas `(partition, node)` present in `after` but not in `before`: the copies that
/// have to be streamed to a node. Partitions missing from `before` count in full.
pub fn moved_replicas(before: &[ReplicaSet], after: &[ReplicaSet]) -> usize {
    after
        .iter()
        .enumerate()
        .map(|(p, set)| {
            let old = before.get(p).map(Vec::as_slice).unwrap_or(&[]);
            set.iter().filter(|node| !old.contains(node)).count()
        })
        .sum()
}

/// Number of partitions whose leader (index 0) differs between `before` and `after`.
pub fn moved_leaders(before: &[ReplicaSet], after: &[ReplicaSet]) -> usize {
    after
        .iter()
        .enumerate()
        .filter(|(p, set)| before.get(*p).and_then(|old| old.first()) != set.first())
        .count()
}

/// Rendezvous score of `node` for `partition`; stable across builds and platforms.
fn score(partition: usize, node: NodeId) -> u64 {
    let mut bytes = [0u8; 12];
    // Partition counts fit in u32 (the public API takes `u32`).
    bytes[..4].copy_from_slice(&(partition as u32).to_le_bytes());
    bytes[4..].copy_from_slice(&node.to_le_bytes());
    xxh3_64(&bytes)
}

/// Working state; nodes are referred to by their index in the sorted `nodes`.
struct Planner<'a> {
    /// Live nodes, ascending.
    nodes: Vec<NodeId>,
    /// Index of each live node in `nodes`.
    index: BTreeMap<NodeId, usize>,
    /// Replicas per partition, `min(R, N)`.
    r: usize,
    /// The previous assignment (any nodes), for move costs and leader stability.
    previous: &'a [ReplicaSet],
    /// Per partition, its slots (node indices); empty until filled.
    sets: Vec<Vec<usize>>,
    /// Replicas held per node index.
    counts: Vec<usize>,
    /// Balanced load band `[lo, hi]` for replicas.
    lo: usize,
    hi: usize,
    /// Leader (node index) per partition, set by `balance_leaders`.
    leaders: Vec<usize>,
}

impl<'a> Planner<'a> {
    fn new(
        partitions: u32,
        replicas: usize,
        nodes: &BTreeSet<NodeId>,
        previous: &'a [ReplicaSet],
    ) -> Self {
        let nodes: Vec<NodeId> = nodes.iter().copied().collect();
        let n = nodes.len();
        let r = replicas.min(n);
        let index: BTreeMap<NodeId, usize> =
            nodes.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut counts = vec![0; n];
        let sets: Vec<Vec<usize>> = (0..partitions as usize)
            .map(|p| {
                let mut set = Vec::with_capacity(r);
                for node in previous.get(p).into_iter().flatten() {
                    if let Some(&i) = index.get(node) {
                        if set.len() < r && !set.contains(&i) {
                            set.push(i);
                            counts[i] += 1;
                        }
                    }
                }
                set
            })
            .collect();
        let total = sets.len() * r;
        let (lo, hi) = match total.checked_div(n) {
            Some(lo) => (lo, total.div_ceil(n)),
            None => (0, 0),
        };
        Self {
            nodes,
            index,
            r,
            previous,
            sets,
            counts,
            lo,
            hi,
            leaders: Vec::new(),
        }
    }

    /// True if `node` (an index) was a replica of `partition` in `previous`.
    fn was_replica(&self, partition: usize, node: usize) -> bool {
        self.previous
            .get(partition)
            .is_some_and(|set| set.contains(&self.nodes[node]))
    }

    /// Step 2: bounded-load rendezvous for every empty slot.
    fn fill(&mut self) {
        for p in 0..self.sets.len() {
            while self.sets[p].len() < self.r {
                let set = &self.sets[p];
                let best = (0..self.nodes.len())
                    .filter(|i| !set.contains(i))
                    .min_by_key(|&i| {
                        let tier = usize::from(self.counts[i] >= self.lo)
                            + usize::from(self.counts[i] >= self.hi);
                        (tier, std::cmp::Reverse(score(p, self.nodes[i])))
                    });
                // r <= N, so a set short of r always has a node outside it.
                let Some(best) = best else { break };
                self.sets[p].push(best);
                self.counts[best] += 1;
            }
        }
    }

    /// Step 3: move replicas until every node is at its target, `lo` or `hi`.
    fn rebalance(&mut self) {
        let n = self.nodes.len();
        if n == 0 {
            return;
        }
        let total: usize = self.counts.iter().sum();
        let at_hi = total - self.lo * n;
        // The nodes holding most keep the ceiling: that needs the fewest moves.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(self.counts[i]), i));
        let mut target = vec![self.lo; n];
        for &i in order.iter().take(at_hi) {
            target[i] = self.hi;
        }
        // Chains that only move replicas placed by this plan (or hand one back to a node
        // that had it) cost nothing; they repair fills that landed on the wrong node.
        while let Some(path) = self.free_path(&target) {
            for (p, slot, from, to) in path {
                self.sets[p][slot] = to;
                self.counts[from] -= 1;
                self.counts[to] += 1;
            }
        }
        // Every move left costs one replica copy, and a direct one always exists.
        for u in 0..n {
            if self.counts[u] >= target[u] {
                continue;
            }
            // One scan finds every candidate for `u`: moves into `u` never invalidate a
            // candidate of another partition, and a donor above its target holds more
            // replicas than `u` below its own, so it shares some partition without `u`.
            let mut candidates = Vec::new();
            for (p, set) in self.sets.iter().enumerate() {
                if set.contains(&u) {
                    continue;
                }
                for (slot, &d) in set.iter().enumerate() {
                    if self.counts[d] > target[d] {
                        // Cost in moved replicas: +1 if `u` is new here, -1 if `d` was.
                        let cost =
                            i64::from(!self.was_replica(p, u)) - i64::from(!self.was_replica(p, d));
                        let key = (
                            cost,
                            self.led_before(p, d),
                            std::cmp::Reverse(score(p, self.nodes[u])),
                        );
                        candidates.push((key, p, slot, d));
                    }
                }
            }
            candidates.sort_unstable();
            for (_, p, slot, d) in candidates {
                if self.counts[u] >= target[u] {
                    break;
                }
                if self.counts[d] > target[d]
                    && self.sets[p][slot] == d
                    && !self.sets[p].contains(&u)
                {
                    self.sets[p][slot] = u;
                    self.counts[d] -= 1;
                    self.counts[u] += 1;
                }
            }
        }
    }

    /// Shortest chain of free moves from a node above its target to one below, as
    /// `(partition, slot, from, to)` links; `None` if there is none. A move is free if
    /// the replica it moves is not in `previous`, or if it goes back to a previous holder.
    fn free_path(&self, target: &[usize]) -> Option<Vec<(usize, usize, usize, usize)>> {
        let n = self.nodes.len();
        if (0..n).all(|i| self.counts[i] >= target[i]) {
            return None;
        }
        let mut held: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for (p, set) in self.sets.iter().enumerate() {
            for (slot, &a) in set.iter().enumerate() {
                held[a].push((p, slot));
            }
        }
        // parent[v] = (partition, slot, previous node) of the link that reached v.
        let mut parent: Vec<Option<(usize, usize, usize)>> = vec![None; n];
        let mut seen: Vec<bool> = (0..n).map(|i| self.counts[i] > target[i]).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| seen[i]).collect();
        let mut reach = Vec::new();
        while let Some(a) = queue.pop_front() {
            for &(p, slot) in &held[a] {
                reach.clear();
                if self.was_replica(p, a) {
                    let previous = self.previous.get(p).into_iter().flatten();
                    reach.extend(previous.filter_map(|node| self.index.get(node).copied()));
                } else {
                    reach.extend(0..n);
                }
                for &b in &reach {
                    if seen[b] || self.sets[p].contains(&b) {
                        continue;
                    }
                    seen[b] = true;
                    parent[b] = Some((p, slot, a));
                    if self.counts[b] < target[b] {
                        let mut path = Vec::new();
                        let mut v = b;
                        while let Some((p, slot, u)) = parent[v] {
                            path.push((p, slot, u, v));
                            v = u;
                        }
                        return Some(path);
                    }
                    queue.push_back(b);
                }
            }
        }
        None
    }

    /// True if `node` (an index) led `partition` in `previous`. Handing such a partition
    /// over is a leader move; re-handing one whose leader already changed costs nothing.
    fn led_before(&self, partition: usize, node: usize) -> bool {
        self.previous.get(partition).and_then(|set| set.first()) == Some(&self.nodes[node])
    }

    /// Step 4: choose one leader per partition, balanced to `floor(P/N)..=ceil(P/N)`.
    fn balance_leaders(&mut self) {
        let n = self.nodes.len();
        let p_count = self.sets.len();
        if n == 0 || self.r == 0 {
            return;
        }
        let (lo, hi) = (p_count / n, p_count.div_ceil(n));
        const NONE: usize = usize::MAX;
        let mut leaders = vec![NONE; p_count];
        let mut led = vec![0usize; n];
        for (p, set) in self.sets.iter().enumerate() {
            if let Some(&i) = set.iter().find(|&&i| self.led_before(p, i)) {
                leaders[p] = i;
                led[i] += 1;
            }
        }
        for (p, set) in self.sets.iter().enumerate() {
            if leaders[p] == NONE {
                // Among equally loaded members, one that already has the data.
                let best = set.iter().copied().min_by_key(|&i| {
                    (
                        led[i],
                        !self.was_replica(p, i),
                        std::cmp::Reverse(score(p, self.nodes[i])),
                    )
                });
                if let Some(best) = best {
                    leaders[p] = best;
                    led[best] += 1;
                }
            }
        }
        // Two phases, so that no hand-over is later undone: first shed every excess over
        // `hi` onto nodes under `hi`, then fill every shortfall under `lo` from nodes over
        // `lo`. A phase with threshold `t` hands over from nodes above `t` to nodes below.
        for t in [hi, lo] {
            // Direct hand-overs settle most cases; free ones (leader already changed) first.
            for only_free in [true, false] {
                loop {
                    let mut changed = false;
                    for (p, set) in self.sets.iter().enumerate() {
                        let a = leaders[p];
                        if led[a] <= t || only_free && self.led_before(p, a) {
                            continue;
                        }
                        let best = set
                            .iter()
                            .copied()
                            .filter(|&b| led[b] < t)
                            .min_by_key(|&b| (led[b], std::cmp::Reverse(score(p, self.nodes[b]))));
                        if let Some(b) = best {
                            leaders[p] = b;
                            led[a] -= 1;
                            led[b] += 1;
                            changed = true;
                        }
                    }
                    if !changed {
                        break;
                    }
                }
            }
            // What is left needs chains a -> b -> ... -> z, each link a partition whose
            // leader hands over to another of its members; only the ends change counts.
            while let Some(path) = self.augmenting_path(&leaders, &led, t) {
                for (p, from, to) in path {
                    leaders[p] = to;
                    led[from] -= 1;
                    led[to] += 1;
                }
            }
        }
        self.leaders = leaders;
    }

    /// Cheapest chain of leader hand-overs (fewest new leader moves, by 0-1 BFS) from a
    /// node leading more than `t` partitions to one leading fewer, as `(partition, from,
    /// to)` links; `None` if there is none.
    fn augmenting_path(
        &self,
        leaders: &[usize],
        led: &[usize],
        t: usize,
    ) -> Option<Vec<(usize, usize, usize)>> {
        let n = self.nodes.len();
        let mut led_by: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (p, &a) in leaders.iter().enumerate() {
            led_by[a].push(p);
        }
        let mut dist = vec![usize::MAX; n];
        // parent[v] = (partition, previous node) of the link that reached v.
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut queue = VecDeque::new();
        for a in (0..n).filter(|&a| led[a] > t) {
            dist[a] = 0;
            queue.push_back((0, a));
        }
        while let Some((d, a)) = queue.pop_front() {
            if d > dist[a] {
                continue;
            }
            if led[a] < t {
                let mut path = Vec::new();
                let mut v = a;
                while let Some((p, u)) = parent[v] {
                    path.push((p, u, v));
                    v = u;
                }
                return Some(path);
            }
            for &p in &led_by[a] {
                let cost = usize::from(self.led_before(p, a));
                for &b in &self.sets[p] {
                    if d + cost < dist[b] {
                        dist[b] = d + cost;
                        parent[b] = Some((p, a));
                        if cost == 0 {
                            queue.push_front((d, b));
                        } else {
                            queue.push_back((d + cost, b));
                        }
                    }
                }
            }
        }
        // No source, or (unreachable with balanced replica counts, see the module doc) no
        // way to a sink: stop rather than loop.
        None
    }

    /// The plan as node ids, leader first, the rest in slot order.
    fn into_assignment(self) -> Vec<ReplicaSet> {
        self.sets
            .iter()
            .enumerate()
            .map(|(p, set)| {
                let leader = self.leaders.get(p).copied();
                let mut out = Vec::with_capacity(set.len());
                out.extend(leader.map(|i| self.nodes[i]));
                out.extend(
                    set.iter()
                        .filter(|&&i| Some(i) != leader)
                        .map(|&i| self.nodes[i]),
                );
                out
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
