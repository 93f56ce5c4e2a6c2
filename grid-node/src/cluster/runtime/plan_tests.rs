use super::*;

const ME: NodeId = 1;
const LONG: Duration = Duration::from_secs(3600);

fn node() -> NodeView {
    NodeView {
        me: ME,
        was_away: false,
        leads_control: false,
        control_busy: false,
        hand_over_room: 8,
    }
}

fn ids(list: &[NodeId]) -> BTreeSet<NodeId> {
    list.iter().copied().collect()
}

/// Partition `p` placed on `target` (the first preferred), hosted here as `replica`.
fn part(p: GroupId, target: &[NodeId], replica: Option<ReplicaView>) -> PartitionView {
    PartitionView {
        partition: p,
        target: ids(target),
        preferred: target.first().copied(),
        replica,
    }
}

/// A settled replica: a voter among `voters`, leading or not.
fn replica(voters: &[NodeId], leading: bool) -> ReplicaView {
    ReplicaView {
        voters: ids(voters),
        member: voters.contains(&ME),
        leading,
        unlisted: Duration::ZERO,
        leaderless: Duration::ZERO,
        busy: false,
        hand_over_cooling: false,
        preferred_caught_up: true,
    }
}

#[test]
fn each_rule_gives_its_step() {
    let moving = ReplicaView {
        unlisted: Duration::ZERO,
        ..replica(&[1, 2, 3], true)
    };
    let learner_left_over = ReplicaView {
        member: true,
        voters: ids(&[2, 3, 4]),
        unlisted: LONG,
        ..replica(&[2, 3, 4], false)
    };
    let table: Vec<(&str, PartitionView, Vec<Step>)> = vec![
        (
            "listed, not hosted: host",
            part(0, &[1, 2, 3], None),
            vec![Step::Host(0)],
        ),
        (
            "not listed, not hosted: nothing",
            part(0, &[2, 3, 4], None),
            vec![],
        ),
        (
            "hosted, not listed, removed from the group: release",
            part(0, &[2, 3, 4], Some(replica(&[2, 3, 4], false))),
            vec![Step::Release(0)],
        ),
        (
            "a learner the map dropped long ago: release",
            part(0, &[2, 3, 4], Some(learner_left_over)),
            vec![Step::Release(0)],
        ),
        (
            "a voter the map dropped, group still counts on it: keep",
            part(
                0,
                &[2, 3, 4],
                Some(ReplicaView {
                    unlisted: LONG,
                    ..replica(&[1, 2, 3], false)
                }),
            ),
            vec![],
        ),
        (
            "leading, voters differ from the map: move",
            part(0, &[1, 2, 4], Some(moving)),
            vec![Step::Move {
                partition: 0,
                voters: ids(&[1, 2, 3]),
                target: ids(&[1, 2, 4]),
            }],
        ),
        (
            "leading without being a voter: no move",
            part(
                0,
                &[1, 2, 4],
                Some(ReplicaView {
                    voters: ids(&[2, 3, 4]),
                    ..replica(&[2, 3, 4], true)
                }),
            ),
            vec![],
        ),
        (
            "leading, settled, another node preferred: hand over",
            part(0, &[2, 1, 3], Some(replica(&[1, 2, 3], true))),
            vec![Step::HandOver {
                partition: 0,
                to: 2,
            }],
        ),
        (
            "leading, settled, preferred itself: nothing",
            part(0, &[1, 2, 3], Some(replica(&[1, 2, 3], true))),
            vec![],
        ),
        (
            "preferred leader behind: wait",
            part(
                0,
                &[2, 1, 3],
                Some(ReplicaView {
                    preferred_caught_up: false,
                    ..replica(&[1, 2, 3], true)
                }),
            ),
            vec![],
        ),
        (
            "hand-over cooling down: wait",
            part(
                0,
                &[2, 1, 3],
                Some(ReplicaView {
                    hand_over_cooling: true,
                    ..replica(&[1, 2, 3], true)
                }),
            ),
            vec![],
        ),
        (
            "a change under way: nothing more",
            part(
                0,
                &[1, 2, 4],
                Some(ReplicaView {
                    busy: true,
                    ..replica(&[1, 2, 3], true)
                }),
            ),
            vec![],
        ),
        (
            "following: nothing",
            part(0, &[2, 1, 3], Some(replica(&[1, 2, 3], false))),
            vec![],
        ),
    ];
    for (rule, view, want) in table {
        assert_eq!(plan(node(), &[view]), want, "{rule}");
    }
}

#[test]
fn hand_overs_stop_at_the_room_left() {
    let views: Vec<PartitionView> = (0..5)
        .map(|p| part(p, &[2, 1, 3], Some(replica(&[1, 2, 3], true))))
        .collect();
    let steps = plan(
        NodeView {
            hand_over_room: 2,
            ..node()
        },
        &views,
    );
    assert_eq!(
        steps,
        vec![
            Step::HandOver {
                partition: 0,
                to: 2
            },
            Step::HandOver {
                partition: 1,
                to: 2
            },
        ]
    );
}

#[test]
fn the_control_leader_manages_members_unless_that_is_under_way() {
    let leader = NodeView {
        leads_control: true,
        ..node()
    };
    assert_eq!(plan(leader, &[]), vec![Step::ManageControl]);
    let busy = NodeView {
        control_busy: true,
        ..leader
    };
    assert_eq!(plan(busy, &[]), vec![]);
    assert_eq!(plan(node(), &[]), vec![]);
}

#[test]
fn a_node_back_from_away_lets_go_of_stale_unlisted_voters() {
    let stale = ReplicaView {
        unlisted: LONG,
        leaderless: LONG,
        ..replica(&[1, 2, 3], false)
    };
    let away = NodeView {
        was_away: true,
        ..node()
    };
    let view = part(0, &[2, 3, 4], Some(stale));
    assert_eq!(
        plan(away, std::slice::from_ref(&view)),
        vec![Step::Release(0)]
    );
    assert_eq!(plan(node(), &[view]), vec![]);
}

#[test]
fn the_control_group_follows_the_active_nodes() {
    let plan = |active: &[NodeId], members: &[NodeId], voters: &[NodeId]| {
        plan_control(ME, &ids(active), &ids(members), &ids(voters), 5)
    };
    // A new node joins: a learner, then a voter (fewer than five so far).
    assert_eq!(
        plan(&[1, 2, 3, 4], &[1, 2, 3], &[1, 2, 3]),
        Some(ControlPlan {
            learners: vec![4],
            voters: Some(ids(&[1, 2, 3, 4])),
            remove: ids(&[]),
        })
    );
    // Five voters already: the sixth node stays a learner.
    assert_eq!(
        plan(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 5]),
        Some(ControlPlan::default())
    );
    // A voter is down: the spare node takes its place, and it leaves the group.
    assert_eq!(
        plan(&[1, 2, 3, 4, 6], &[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 5]),
        Some(ControlPlan {
            learners: vec![],
            voters: Some(ids(&[1, 2, 3, 4, 6])),
            remove: ids(&[5]),
        })
    );
    // Settled: nothing to do.
    assert_eq!(
        plan(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]),
        Some(ControlPlan::default())
    );
    // A leader that voted itself out leaves it to its successor.
    assert_eq!(plan(&[2, 3, 4], &[1, 2, 3, 4], &[2, 3, 4]), None);
}
