//! Unit and property tests of the placement planner.
//!
//! What is asserted, with `N` live nodes, `r = min(R, N)`, `T = P * r`:
//! - sets: `P` entries, each `r` distinct live nodes;
//! - replicas: every node (holding any or not) holds between `floor(0.9 * T/N)` and
//!   `ceil(1.1 * T/N)` (the 10% band), and also the tighter `floor(T/N)..=ceil(T/N)`
//!   that the planner promises;
//! - leaders: every node leads between `floor(0.9 * P/N)` and `ceil(1.1 * P/N)` (which
//!   contains `floor(P/N)..=ceil(P/N)`), and also the tighter `floor(P/N)..=ceil(P/N)`;
//! - movement: adding a node moves at most `ceil(1.25 * T_after / N_after)` replicas;
//!   removing one at most `ceil(1.25 * replicas it held)`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Non-contiguous, unordered-looking ids so nothing relies on dense ids.
fn node_id(i: u64) -> NodeId {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

fn cluster(n: u64) -> BTreeSet<NodeId> {
    (0..n).map(node_id).collect()
}

fn count_of(counts: &BTreeMap<NodeId, usize>, node: NodeId) -> usize {
    counts.get(&node).copied().unwrap_or(0)
}

/// Checks set shape, the replica band and the leader band (see the module doc).
fn check(assignment: &[ReplicaSet], partitions: u32, replicas: usize, nodes: &BTreeSet<NodeId>) {
    let n = nodes.len();
    let r = replicas.min(n);
    assert_eq!(assignment.len(), partitions as usize);
    for (p, set) in assignment.iter().enumerate() {
        assert_eq!(set.len(), r, "partition {p} has {set:?}");
        let distinct: BTreeSet<_> = set.iter().collect();
        assert_eq!(
            distinct.len(),
            set.len(),
            "partition {p} repeats a node: {set:?}"
        );
        assert!(
            set.iter().all(|node| nodes.contains(node)),
            "partition {p}: {set:?}"
        );
    }
    if n == 0 {
        return;
    }
    let total = partitions as usize * r;
    let check_band = |what: &str, counts: BTreeMap<NodeId, usize>, amount: usize| {
        let mean = amount as f64 / n as f64;
        let (loose_lo, loose_hi) = ((mean * 0.9).floor() as usize, (mean * 1.1).ceil() as usize);
        let (lo, hi) = (amount / n, amount.div_ceil(n));
        for &node in nodes {
            let c = count_of(&counts, node);
            assert!(
                c >= loose_lo && c <= loose_hi,
                "{what} of {node}: {c}, mean {mean}"
            );
            assert!(
                c >= lo && c <= hi,
                "{what} of {node}: {c} outside {lo}..={hi}"
            );
        }
    };
    check_band("replicas", replica_counts(assignment), total);
    check_band("leaders", leader_counts(assignment), partitions as usize);
}

/// Upper bound on replicas moved by one membership change (see the module doc).
fn move_bound(ideal: f64) -> usize {
    (ideal * 1.25).ceil() as usize
}

/// Movement numbers for one cluster size.
#[derive(Debug, Default)]
struct Row {
    replica_min: usize,
    replica_max: usize,
    leader_min: usize,
    leader_max: usize,
    add_moved: usize,
    add_ideal: f64,
    add_leaders_moved: usize,
    remove_moved_max: usize,
    remove_ideal_at_max: usize,
    /// Largest leader moves over all single removals, and the leaders the node had.
    remove_leaders_moved_max: usize,
    remove_leaders_held_at_max: usize,
}

/// Plans a fresh cluster of `n` nodes, then adds one node and removes each node in turn,
/// asserting every target on the way.
fn measure(n: u64, partitions: u32, replicas: usize) -> Row {
    let nodes = cluster(n);
    let fresh = plan(partitions, replicas, &nodes, None);
    check(&fresh, partitions, replicas, &nodes);
    let counts = replica_counts(&fresh);
    let leaders = leader_counts(&fresh);
    let mut row = Row {
        replica_min: nodes.iter().map(|&x| count_of(&counts, x)).min().unwrap(),
        replica_max: nodes.iter().map(|&x| count_of(&counts, x)).max().unwrap(),
        leader_min: nodes.iter().map(|&x| count_of(&leaders, x)).min().unwrap(),
        leader_max: nodes.iter().map(|&x| count_of(&leaders, x)).max().unwrap(),
        ..Row::default()
    };

    let mut grown = nodes.clone();
    grown.insert(node_id(n));
    let after = plan(partitions, replicas, &grown, Some(&fresh));
    check(&after, partitions, replicas, &grown);
    let total_after = partitions as usize * replicas.min(grown.len());
    row.add_ideal = total_after as f64 / grown.len() as f64;
    row.add_moved = moved_replicas(&fresh, &after);
    row.add_leaders_moved = moved_leaders(&fresh, &after);
    assert!(
        row.add_moved <= move_bound(row.add_ideal),
        "add to {n}: {row:?}"
    );

    for &gone in &nodes {
        let mut shrunk = nodes.clone();
        shrunk.remove(&gone);
        let after = plan(partitions, replicas, &shrunk, Some(&fresh));
        check(&after, partitions, replicas, &shrunk);
        let ideal = count_of(&counts, gone);
        let moved = moved_replicas(&fresh, &after);
        assert!(
            moved <= move_bound(ideal as f64),
            "remove {gone} of {n}: {moved} > {ideal}"
        );
        if moved >= row.remove_moved_max {
            row.remove_moved_max = moved;
            row.remove_ideal_at_max = ideal;
        }
        let leaders_moved = moved_leaders(&fresh, &after);
        if leaders_moved >= row.remove_leaders_moved_max {
            row.remove_leaders_moved_max = leaders_moved;
            row.remove_leaders_held_at_max = count_of(&leaders, gone);
        }
    }
    row
}

#[test]
fn targets_hold_on_3_5_8_16_nodes_with_r3() {
    println!(
        "  N    P | replicas | leaders | add: moved/ideal, leaders moved/(P/(N+1)) | \
         remove (worst): moved/held, leaders moved/held"
    );
    for n in [3, 5, 8, 16] {
        for partitions in [64, 128, 256] {
            let row = measure(n, partitions, 3);
            println!(
                "{n:>3} {partitions:>4} | {:>3}..{:<3} | {:>2}..{:<3} | {:>4}/{:<5.1} {:>3}/{:<5.1} | \
                 {:>4}/{:<4} {:>3}/{:<3}",
                row.replica_min,
                row.replica_max,
                row.leader_min,
                row.leader_max,
                row.add_moved,
                row.add_ideal,
                row.add_leaders_moved,
                f64::from(partitions) / (n + 1) as f64,
                row.remove_moved_max,
                row.remove_ideal_at_max,
                row.remove_leaders_moved_max,
                row.remove_leaders_held_at_max,
            );
        }
    }
}

#[test]
fn targets_hold_with_one_and_two_replicas() {
    for replicas in [1, 2] {
        for n in [1, 2, 3, 5, 8, 16] {
            for partitions in [1, 7, 64, 128, 256] {
                measure(n, partitions, replicas);
            }
        }
    }
}

#[test]
fn fewer_nodes_than_replicas_gives_every_partition_every_node() {
    for n in [1, 2] {
        let nodes = cluster(n);
        let assignment = plan(64, 3, &nodes, None);
        check(&assignment, 64, 3, &nodes);
        assert!(assignment.iter().all(|set| set.len() == n as usize));
    }
    // Growing from 2 to 3 nodes with R = 3 adds the new node everywhere, and nothing else.
    let two = plan(64, 3, &cluster(2), None);
    let three = plan(64, 3, &cluster(3), Some(&two));
    check(&three, 64, 3, &cluster(3));
    assert_eq!(moved_replicas(&two, &three), 64);
    // Shrinking back moves nothing: every partition keeps its two surviving replicas.
    let back = plan(64, 3, &cluster(2), Some(&three));
    assert_eq!(moved_replicas(&three, &back), 0);
}

#[test]
fn dense_removal_repairs_the_fill_with_free_chains() {
    // Found by the property test: P = 8, R = 4, nodes 9 -> 10 -> 9 -> 8. Each node holds
    // half the partitions, and the greedy fill left a hole on a node that blocked the only
    // balanced matching; a chain of free moves keeps the removal at its share.
    let mut nodes = cluster(9);
    let mut current = plan(8, 4, &nodes, None);
    nodes.insert(node_id(9));
    current = plan(8, 4, &nodes, Some(&current));
    for index in [6, 7] {
        let gone = *nodes.iter().nth(index).unwrap();
        let held = count_of(&replica_counts(&current), gone);
        nodes.remove(&gone);
        let next = plan(8, 4, &nodes, Some(&current));
        check(&next, 8, 4, &nodes);
        let moved = moved_replicas(&current, &next);
        assert!(
            moved <= move_bound(held as f64),
            "moved {moved}, held {held}"
        );
        current = next;
    }
}

#[test]
fn same_inputs_give_the_same_plan() {
    let nodes = cluster(8);
    let first = plan(256, 3, &nodes, None);
    assert_eq!(first, plan(256, 3, &nodes, None));
    let mut grown = nodes.clone();
    grown.insert(node_id(99));
    assert_eq!(
        plan(256, 3, &grown, Some(&first)),
        plan(256, 3, &grown, Some(&first))
    );
    // Pinned values: the hash is stable across builds, so the plan is too.
    assert_eq!(first, plan(256, 3, &cluster(8), Some(&[])));
}

#[test]
fn replanning_a_balanced_plan_changes_nothing() {
    for n in [3, 5, 8, 16] {
        let nodes = cluster(n);
        let first = plan(128, 3, &nodes, None);
        assert_eq!(plan(128, 3, &nodes, Some(&first)), first);
    }
}

#[test]
fn fresh_plan_mostly_follows_rendezvous_ranking() {
    // The consistent-hashing flavour: most replicas sit on one of the partition's top-r
    // rendezvous nodes; balance decides the rest.
    for n in [5u64, 8, 16] {
        let nodes = cluster(n);
        let assignment = plan(256, 3, &nodes, None);
        let on_top: usize = assignment
            .iter()
            .enumerate()
            .map(|(p, set)| {
                let mut ranked: Vec<NodeId> = nodes.iter().copied().collect();
                ranked.sort_by_key(|&x| std::cmp::Reverse(score(p, x)));
                set.iter().filter(|x| ranked[..3].contains(x)).count()
            })
            .sum();
        let share = on_top as f64 / (256.0 * 3.0);
        println!(
            "N={n}: {:.0}% of replicas on a top-3 rendezvous node",
            share * 100.0
        );
        assert!(share > 0.7, "N={n}: only {share}");
    }
}

#[test]
fn previous_naming_gone_nodes_and_duplicates_is_repaired() {
    let nodes = cluster(4);
    let ids: Vec<NodeId> = nodes.iter().copied().collect();
    let stranger = node_id(1000);
    let previous: Vec<ReplicaSet> = (0..32)
        .map(|p| vec![stranger, ids[p % 4], ids[p % 4], ids[(p + 1) % 4], stranger])
        .collect();
    let after = plan(32, 3, &nodes, Some(&previous));
    check(&after, 32, 3, &nodes);
    // The surviving pair of each partition stays.
    for (p, set) in after.iter().enumerate() {
        assert!(set.contains(&ids[p % 4]) && set.contains(&ids[(p + 1) % 4]));
    }
}

#[test]
fn growing_the_partition_count_keeps_old_partitions() {
    let nodes = cluster(5);
    let small = plan(64, 3, &nodes, None);
    let big = plan(128, 3, &nodes, Some(&small));
    check(&big, 128, 3, &nodes);
    let kept = small
        .iter()
        .zip(&big)
        .map(|(a, b)| b.iter().filter(|x| a.contains(x)).count());
    // Balancing may shift a few, but the old partitions mostly stay put.
    assert!(kept.sum::<usize>() >= 64 * 3 * 8 / 10);
}

#[test]
fn empty_inputs() {
    assert!(plan(0, 3, &cluster(4), None).is_empty());
    assert_eq!(
        plan(4, 3, &BTreeSet::new(), None),
        vec![Vec::<NodeId>::new(); 4]
    );
    assert_eq!(plan(4, 0, &cluster(3), None), vec![Vec::<NodeId>::new(); 4]);
}

#[test]
fn statistics_count_what_they_say() {
    let before: Vec<ReplicaSet> = vec![vec![1, 2, 3], vec![2, 3, 4]];
    let after: Vec<ReplicaSet> = vec![vec![2, 1, 5], vec![2, 3, 4], vec![1]];
    assert_eq!(moved_replicas(&before, &after), 2);
    assert_eq!(moved_leaders(&before, &after), 2);
    assert_eq!(
        replica_counts(&after),
        BTreeMap::from([(1, 2), (2, 2), (3, 1), (4, 1), (5, 1)])
    );
    assert_eq!(leader_counts(&after), BTreeMap::from([(1, 1), (2, 2)]));
}

#[test]
#[ignore = "timing; run with --release -- --ignored"]
fn plan_for_512_partitions_on_16_nodes_is_fast() {
    let nodes = cluster(16);
    let start = std::time::Instant::now();
    let fresh = plan(512, 3, &nodes, None);
    let fresh_time = start.elapsed();
    let mut grown = nodes.clone();
    grown.insert(node_id(16));
    let start = std::time::Instant::now();
    let added = plan(512, 3, &grown, Some(&fresh));
    let add_time = start.elapsed();
    let start = std::time::Instant::now();
    let _removed = plan(512, 3, &nodes, Some(&added));
    let remove_time = start.elapsed();
    println!("fresh {fresh_time:?}, add {add_time:?}, remove {remove_time:?}");
    assert!(fresh_time.max(add_time).max(remove_time) < std::time::Duration::from_millis(10));
}

/// One membership change: add a new node, or remove the existing one at `index % N`.
#[derive(Debug, Clone)]
enum Change {
    Add,
    Remove(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![Just(Change::Add), any::<usize>().prop_map(Change::Remove)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_membership_changes_keep_invariants(
        partitions in 1u32..=256,
        replicas in 1usize..=4,
        start in 1u64..=20,
        changes in proptest::collection::vec(change(), 1..12),
    ) {
        let mut nodes = cluster(start);
        let mut next_id = start;
        let mut current = plan(partitions, replicas, &nodes, None);
        check(&current, partitions, replicas, &nodes);
        for change in changes {
            let n_before = nodes.len();
            let mut ideal = None;
            match change {
                Change::Add if n_before < 20 => {
                    nodes.insert(node_id(next_id));
                    next_id += 1;
                    let total = partitions as usize * replicas.min(nodes.len());
                    ideal = Some(total as f64 / nodes.len() as f64);
                }
                Change::Remove(i) if n_before > 1 => {
                    let gone = *nodes.iter().nth(i % n_before).unwrap();
                    nodes.remove(&gone);
                    ideal = Some(count_of(&replica_counts(&current), gone) as f64);
                }
                _ => {}
            }
            let next = plan(partitions, replicas, &nodes, Some(&current));
            check(&next, partitions, replicas, &nodes);
            if let (Some(ideal), true) = (ideal, n_before >= 3) {
                let moved = moved_replicas(&current, &next);
                prop_assert!(
                    moved <= move_bound(ideal),
                    "{n_before} -> {} nodes: moved {moved}, ideal {ideal}",
                    nodes.len()
                );
            }
            current = next;
        }
    }
}
