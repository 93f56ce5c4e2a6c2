//! Tests of [`Partition`] as a replicated state machine: the lock hand-off to queued
//! waiters inside the apply that frees the lock, their wake-ups from `Tick`, the waiter
//! commands (`CancelWait`, `AdoptWaiters`), `Touch`, expirations, and determinism
//! (two replicas, and a replica restored from a snapshot, give the same outcomes).

use grid_proto::{Millis, ObjKey, ObjectInfo, Op, Reply, Timeout};
use proptest::prelude::*;

use super::{Command, Expiration, NodeId, Outcome, Partition, PartitionConfig, WaiterId};
use crate::store::StoreConfig;

fn obj(key: &str) -> ObjKey {
    ObjKey::new("ns", key)
}

fn w(owner: NodeId, seq: u64) -> WaiterId {
    WaiterId { owner, seq }
}

fn partition() -> Partition {
    Partition::new(PartitionConfig::default())
}

fn create(key: &str, value: &[u8], timeout: Timeout) -> Op {
    Op::Create {
        obj: obj(key),
        value: value.to_vec(),
        timeout,
        uninitialized: false,
    }
}

/// A read-and-lock that waits up to `wait_ms`.
fn lock(key: &str, wait_ms: Millis, take_over_after_ms: Option<Millis>) -> Op {
    Op::ReadAndLock {
        obj: obj(key),
        cached_version: None,
        lease_ms: None,
        wait_ms,
        take_over_after_ms,
    }
}

fn unlock(key: &str, lock_id: u64) -> Op {
    Op::Unlock {
        obj: obj(key),
        lock_id,
    }
}

fn read(key: &str) -> Op {
    Op::Read {
        obj: obj(key),
        cached_version: None,
    }
}

fn apply_op(p: &mut Partition, now: Millis, op: Op, waiter: Option<WaiterId>) -> Outcome {
    p.apply(&Command::Op { op, waiter }, now)
}

/// Applies an operation (no waiter id) that must be answered at once.
fn ready(p: &mut Partition, now: Millis, op: Op) -> Reply {
    let out = apply_op(p, now, op.clone(), None);
    out.reply.unwrap_or_else(|| panic!("{op:?} was parked"))
}

/// Applies a read-and-lock that must join the object's queue under `waiter`, answering
/// nobody else.
fn park(p: &mut Partition, now: Millis, op: Op, waiter: WaiterId) {
    let out = apply_op(p, now, op.clone(), Some(waiter));
    assert_eq!(out, Outcome::default(), "{op:?} was not simply parked");
}

fn tick(p: &mut Partition, now: Millis) -> Outcome {
    p.apply(&Command::Tick, now)
}

fn info(reply: &Reply) -> ObjectInfo {
    match reply {
        Reply::Retrieved { info, .. } | Reply::NotModified { info } => *info,
        other => panic!("expected a lock grant, got {other:?}"),
    }
}

/// The lock id a read-and-lock was granted.
fn granted(reply: &Reply) -> u64 {
    info(reply).lock_id.unwrap()
}

/// The single answer of an outcome, which must go to `waiter`.
fn answer_to(out: &Outcome, waiter: WaiterId) -> Reply {
    match out.answers.as_slice() {
        [(to, reply)] if *to == waiter => reply.clone(),
        other => panic!("expected one answer to {waiter:?}, got {other:?}"),
    }
}

/// A partition holding object `k`, locked at 0 with `lease_ms`; returns the lock id.
fn locked_object(lease_ms: Option<Millis>) -> (Partition, u64) {
    let mut p = partition();
    ready(&mut p, 0, create("k", b"v", Timeout::None));
    let op = Op::ReadAndLock {
        obj: obj("k"),
        cached_version: None,
        lease_ms,
        wait_ms: 0,
        take_over_after_ms: None,
    };
    let id = granted(&ready(&mut p, 0, op));
    (p, id)
}

#[test]
fn waiters_get_the_lock_in_arrival_order_each_in_the_apply_that_frees_it() {
    let (mut p, holder) = locked_object(None);
    let (first, second, third) = (w(1, 1), w(1, 2), w(2, 1));
    park(&mut p, 10, lock("k", 60_000, None), first);
    park(&mut p, 20, lock("k", 60_000, None), second);
    park(&mut p, 30, lock("k", 60_000, None), third);
    assert_eq!(p.waiting(), 3);

    let out = apply_op(&mut p, 100, unlock("k", holder), None);
    assert_eq!(out.reply, Some(Reply::Unlocked));
    let got = answer_to(&out, first);
    let id1 = granted(&got);
    assert!(id1 > holder);
    assert_eq!(info(&got).lock_age_ms, 0);
    assert_eq!(p.waiting(), 2);

    let out = apply_op(&mut p, 200, unlock("k", id1), None);
    assert_eq!(out.reply, Some(Reply::Unlocked));
    let id2 = granted(&answer_to(&out, second));
    assert!(id2 > id1);

    // A set-and-release frees the lock too, and the next waiter reads the new bytes.
    let set_and_release = Op::Update {
        obj: obj("k"),
        value: b"new".to_vec(),
        timeout: None,
        expected_version: None,
        lock_id: Some(id2),
        unlock: true,
    };
    let out = apply_op(&mut p, 300, set_and_release, None);
    assert!(matches!(out.reply, Some(Reply::Updated { .. })), "{out:?}");
    let got = answer_to(&out, third);
    assert!(granted(&got) > id2);
    assert!(matches!(got, Reply::Retrieved { value, .. } if value == b"new"));
    assert_eq!((p.waiting(), p.stats().locked), (0, 1));
}

#[test]
fn a_waiter_whose_wait_ends_is_told_locked_by_tick() {
    let (mut p, holder) = locked_object(None);
    let waiter = w(1, 7);
    park(&mut p, 1000, lock("k", 5000, None), waiter);
    assert_eq!(p.next_deadline(), Some(6000));
    assert_eq!(tick(&mut p, 5999), Outcome::default());
    assert_eq!(p.waiting(), 1);
    let out = tick(&mut p, 6000);
    let told = Reply::Locked {
        lock_id: holder,
        lock_age_ms: 6000,
    };
    assert_eq!(answer_to(&out, waiter), told);
    assert_eq!((out.reply, out.expired.len()), (None, 0));
    assert_eq!(p.waiting(), 0);
    // The holder is unaffected.
    assert_eq!(ready(&mut p, 6001, unlock("k", holder)), Reply::Unlocked);
}

#[test]
fn a_waiter_with_take_over_takes_a_stale_lock_from_tick_at_the_right_time() {
    let (mut p, holder) = locked_object(Some(300_000));
    let waiter = w(3, 1);
    // Parked at a lock age of 1000, it may take over at age 5000, that is at 5000.
    park(&mut p, 1000, lock("k", 60_000, Some(5000)), waiter);
    assert_eq!(p.next_deadline(), Some(5000));
    assert_eq!(tick(&mut p, 4999), Outcome::default());
    let got = answer_to(&tick(&mut p, 5000), waiter);
    let new = granted(&got);
    assert!(new > holder);
    assert_eq!(info(&got).lock_age_ms, 0);
    assert_eq!(p.waiting(), 0);
    assert_eq!(ready(&mut p, 5001, unlock("k", holder)), Reply::LockLost);
    assert_eq!(ready(&mut p, 5002, unlock("k", new)), Reply::Unlocked);
}

#[test]
fn a_cancelled_waiter_never_gets_the_lock() {
    let (mut p, holder) = locked_object(None);
    let (gone, live, gone_too) = (w(1, 1), w(1, 2), w(1, 3));
    park(&mut p, 10, lock("k", 60_000, None), gone);
    park(&mut p, 20, lock("k", 60_000, None), live);
    park(&mut p, 30, lock("k", 60_000, None), gone_too);
    for waiter in [gone, gone_too] {
        let out = p.apply(&Command::CancelWait { waiter }, 40);
        assert_eq!(out, Outcome::default());
    }
    // Cancelling an unknown waiter does nothing.
    assert_eq!(
        p.apply(&Command::CancelWait { waiter: w(9, 9) }, 41),
        Outcome::default()
    );
    assert_eq!(p.waiting(), 1);

    let out = apply_op(&mut p, 100, unlock("k", holder), None);
    let id = granted(&answer_to(&out, live));
    assert_eq!(info(&ready(&mut p, 101, read("k"))).lock_id, Some(id));

    // With nobody left, the next release leaves the lock free.
    let out = apply_op(&mut p, 200, unlock("k", id), None);
    assert_eq!((out.reply, out.answers), (Some(Reply::Unlocked), vec![]));
    assert_eq!((p.waiting(), p.stats().locked), (0, 0));

    // A cancelled waiter is not told Locked when its wait would have ended either.
    let mine = granted(&ready(&mut p, 300, lock("k", 0, None)));
    park(&mut p, 400, lock("k", 1000, None), w(1, 4));
    p.apply(&Command::CancelWait { waiter: w(1, 4) }, 500);
    assert_eq!(p.next_deadline(), Some(300 + 90_000));
    assert_eq!(tick(&mut p, 1400), Outcome::default());
    assert_eq!(info(&ready(&mut p, 1401, read("k"))).lock_id, Some(mine));
}

#[test]
fn adopt_waiters_keeps_only_the_new_leaders_waiters() {
    let (mut p, holder) = locked_object(None);
    for (i, waiter) in [w(1, 1), w(2, 1), w(1, 2), w(2, 2)].into_iter().enumerate() {
        park(&mut p, 10 + i as Millis, lock("k", 5000, None), waiter);
    }
    let out = p.apply(
        &Command::AdoptWaiters {
            owner: 2,
            min_seq: 0,
        },
        20,
    );
    assert_eq!(out, Outcome::default());
    assert_eq!(p.waiting(), 2);

    let out = apply_op(&mut p, 30, unlock("k", holder), None);
    let id = granted(&answer_to(&out, w(2, 1)));
    let out = apply_op(&mut p, 40, unlock("k", id), None);
    let id = granted(&answer_to(&out, w(2, 2)));
    assert_eq!(p.waiting(), 0);
    // The dropped waiters are never told anything, not even when their wait ends.
    assert_eq!(p.next_deadline(), Some(40 + 90_000));
    assert_eq!(tick(&mut p, 10_000), Outcome::default());
    assert_eq!(ready(&mut p, 10_001, unlock("k", id)), Reply::Unlocked);
}

#[test]
fn adopt_waiters_drops_the_leaders_own_waiters_from_before_it_lost_leadership() {
    let (mut p, holder) = locked_object(None);
    for (i, waiter) in [w(1, 1), w(1, 2), w(1, 3)].into_iter().enumerate() {
        park(&mut p, 10 + i as Millis, lock("k", 5000, None), waiter);
    }
    p.apply(
        &Command::AdoptWaiters {
            owner: 1,
            min_seq: 3,
        },
        20,
    );
    assert_eq!(p.waiting(), 1);
    let out = apply_op(&mut p, 30, unlock("k", holder), None);
    granted(&answer_to(&out, w(1, 3)));
}

#[test]
fn a_newcomer_cannot_barge_past_queued_waiters() {
    let (mut p, holder) = locked_object(None);
    let (queued, newcomer, late) = (w(1, 1), w(2, 1), w(1, 2));
    park(&mut p, 10, lock("k", 200_000, None), queued);
    // Still held: a newcomer that waits joins the back of the queue.
    park(&mut p, 20, lock("k", 200_000, None), newcomer);
    let out = apply_op(&mut p, 30, unlock("k", holder), None);
    let first = granted(&answer_to(&out, queued));

    // That lease lapses at 90_030 with no Tick: the queued waiter gets the lock in the
    // newcomer's apply, and the newcomer, which waits, queues behind it.
    let out = apply_op(&mut p, 90_030, lock("k", 200_000, None), Some(late));
    assert_eq!(out.reply, None);
    let second = granted(&answer_to(&out, newcomer));
    assert!(second > first);
    assert_eq!(p.waiting(), 1);
    assert_eq!(tick(&mut p, 90_031), Outcome::default());

    // The next lease lapses at 180_030: a newcomer that will not wait must not take the
    // lock from under the queue either.
    let out = apply_op(&mut p, 180_030, lock("k", 0, None), Some(w(3, 1)));
    let third = granted(&answer_to(&out, late));
    let told = Reply::Locked {
        lock_id: third,
        lock_age_ms: 0,
    };
    assert_eq!(out.reply, Some(told));
    assert_eq!(p.waiting(), 0);

    // While the lock is held and others wait, a newcomer without a wait is told Locked.
    park(&mut p, 180_040, lock("k", 60_000, None), w(1, 3));
    let told = Reply::Locked {
        lock_id: third,
        lock_age_ms: 20,
    };
    assert_eq!(ready(&mut p, 180_050, lock("k", 0, None)), told);
    assert_eq!(p.waiting(), 1);
}

#[test]
fn a_read_and_lock_without_a_waiter_id_cannot_wait() {
    let (mut p, holder) = locked_object(None);
    let told = Reply::Locked {
        lock_id: holder,
        lock_age_ms: 500,
    };
    assert_eq!(ready(&mut p, 500, lock("k", 60_000, None)), told);
    assert_eq!(p.waiting(), 0);
    // Nor behind a queue.
    park(&mut p, 600, lock("k", 60_000, None), w(1, 1));
    assert!(matches!(
        ready(&mut p, 700, lock("k", 60_000, None)),
        Reply::Locked { .. }
    ));
    assert_eq!(p.waiting(), 1);
}

#[test]
fn a_full_queue_answers_unavailable() {
    let config = PartitionConfig {
        max_waiters_per_object: 2,
        ..PartitionConfig::default()
    };
    let mut p = Partition::new(config);
    ready(&mut p, 0, create("k", b"v", Timeout::None));
    ready(&mut p, 0, create("other", b"v", Timeout::None));
    granted(&ready(&mut p, 0, lock("k", 0, None)));
    granted(&ready(&mut p, 0, lock("other", 0, None)));
    park(&mut p, 1, lock("k", 60_000, None), w(1, 1));
    park(&mut p, 2, lock("k", 60_000, None), w(1, 2));
    let out = apply_op(&mut p, 3, lock("k", 60_000, None), Some(w(1, 3)));
    assert!(
        matches!(
            out.reply,
            Some(Reply::Unavailable {
                code: grid_proto::Unavailability::Busy,
                ..
            })
        ),
        "{out:?}"
    );
    assert_eq!(p.waiting(), 2);
    // The limit is per object.
    park(&mut p, 4, lock("other", 60_000, None), w(1, 4));
    assert_eq!(p.waiting(), 3);
}

#[test]
fn expiry_of_a_locked_object_tells_its_waiters_not_found() {
    let mut p = partition();
    let created = ready(
        &mut p,
        0,
        create("k", b"v", Timeout::Sliding { ms: 10_000 }),
    );
    let Reply::Added { version } = created else {
        panic!("{created:?}")
    };
    granted(&ready(&mut p, 0, lock("k", 0, None)));
    // A lock attempt is an access, queued behind others or not: the object expires at
    // 10_000 after the last one, 20_000.
    let (a, b) = (w(1, 1), w(2, 1));
    park(&mut p, 100, lock("k", 60_000, None), a);
    park(&mut p, 10_000, lock("k", 60_000, None), b);
    assert_eq!(tick(&mut p, 19_999), Outcome::default());
    let out = tick(&mut p, 20_000);
    let want = Expiration {
        obj: obj("k"),
        version,
    };
    assert_eq!(out.expired, vec![want]);
    assert_eq!(
        out.answers,
        vec![(a, Reply::NotFound), (b, Reply::NotFound)]
    );
    assert_eq!(
        (p.waiting(), p.stats().objects, p.stats().locked),
        (0, 0, 0)
    );
}

#[test]
fn tick_and_op_outcomes_report_expirations() {
    let mut p = partition();
    let version = |reply: Reply| match reply {
        Reply::Added { version } => version,
        other => panic!("{other:?}"),
    };
    let vb = version(ready(
        &mut p,
        0,
        create("b", b"bb", Timeout::Absolute { ms: 100 }),
    ));
    let va = version(ready(
        &mut p,
        0,
        create("a", b"aa", Timeout::Sliding { ms: 200 }),
    ));
    let vc = version(ready(
        &mut p,
        0,
        create("c", b"cc", Timeout::Sliding { ms: 300 }),
    ));
    assert_eq!(tick(&mut p, 99), Outcome::default());
    let record = |key: &str, version| Expiration {
        obj: obj(key),
        version,
    };
    let want = vec![record("b", vb), record("a", va)];
    assert_eq!(tick(&mut p, 250).expired, want);
    // An operation that finds its object past the deadline reports the expiry too.
    let out = apply_op(&mut p, 300, read("c"), None);
    assert_eq!(out.reply, Some(Reply::NotFound));
    assert_eq!(out.expired, vec![record("c", vc)]);
    assert_eq!(tick(&mut p, 10_000), Outcome::default());
    assert_eq!(p.stats().objects, 0);
}

fn touch(accesses: &[(&str, Millis)]) -> Command {
    Command::Touch {
        accesses: accesses.iter().map(|(key, at)| (obj(key), *at)).collect(),
    }
}

#[test]
fn touch_slides_the_expiry_of_objects_live_at_the_access_only() {
    let mut p = partition();
    ready(&mut p, 0, create("k", b"v", Timeout::Sliding { ms: 1000 }));
    ready(&mut p, 0, create("due", b"v", Timeout::Sliding { ms: 500 }));
    ready(
        &mut p,
        0,
        create("late", b"v", Timeout::Sliding { ms: 500 }),
    );
    assert_eq!(
        p.apply(&touch(&[("k", 600), ("absent", 600)]), 600),
        Outcome::default()
    );
    assert_eq!(p.stats().objects, 3);
    // "due" was past its deadline when read: the access neither revives nor expires it.
    assert_eq!(p.apply(&touch(&[("due", 700)]), 700), Outcome::default());
    assert_eq!(p.next_deadline(), Some(500));
    // "late" was read at 400, still live; the access counts from then, even applied late.
    assert_eq!(p.apply(&touch(&[("late", 400)]), 700), Outcome::default());
    // An access stamped after `now` counts as at `now`.
    assert_eq!(p.apply(&touch(&[("k", 5000)]), 700), Outcome::default());
    let out = tick(&mut p, 700);
    assert_eq!(out.expired.len(), 1);
    assert_eq!(out.expired[0].obj, obj("due"));
    assert_eq!(p.next_deadline(), Some(900));
    assert_eq!(tick(&mut p, 900).expired[0].obj, obj("late"));
    // "k" was last touched at 700, so it lives until 1700.
    assert_eq!(tick(&mut p, 1699), Outcome::default());
    assert_eq!(tick(&mut p, 1700).expired[0].obj, obj("k"));
    assert_eq!(p.stats().objects, 0);
}

/// A partition with locks, waiters of two owners, and an object about to expire.
fn busy_partition(config: PartitionConfig) -> Partition {
    let mut p = Partition::new(config);
    ready(&mut p, 0, create("k", b"v", Timeout::None));
    ready(&mut p, 0, create("s", b"s", Timeout::Sliding { ms: 5000 }));
    granted(&ready(&mut p, 0, lock("k", 0, None)));
    park(&mut p, 10, lock("k", 3000, None), w(1, 1));
    park(&mut p, 20, lock("k", 60_000, Some(2000)), w(2, 1));
    park(&mut p, 30, lock("k", 60_000, None), w(1, 2));
    p
}

fn further_commands() -> Vec<(Millis, Command)> {
    let op = |op| Command::Op { op, waiter: None };
    vec![
        (100, op(lock("s", 0, None))),
        (1000, touch(&[("s", 900)])),
        (1500, Command::CancelWait { waiter: w(1, 2) }),
        (2000, Command::Tick),
        (
            2500,
            Command::Op {
                op: lock("k", 60_000, None),
                waiter: Some(w(2, 2)),
            },
        ),
        (3010, Command::Tick),
        (3020, op(unlock("k", 3))),
        (4000, op(unlock("s", 4))),
        (
            10_000,
            Command::AdoptWaiters {
                owner: 1,
                min_seq: 0,
            },
        ),
        (10_000, Command::Tick),
        (100_000, Command::Tick),
    ]
}

#[test]
fn a_restored_snapshot_carries_on_exactly_like_the_original() {
    let config = PartitionConfig::default();
    let mut original = busy_partition(config);
    let mut restored = Partition::restore(config, &original.snapshot()).unwrap();
    assert_eq!(restored.waiting(), 3);
    assert_eq!(restored.stats(), original.stats());
    assert_eq!(restored.next_deadline(), original.next_deadline());
    let mut answered = 0;
    for (now, command) in further_commands() {
        let out = original.apply(&command, now);
        assert_eq!(restored.apply(&command, now), out, "{command:?} at {now}");
        answered += out.answers.len();
    }
    // The waiters did come into play.
    assert!(answered >= 2, "{answered}");
    assert_eq!(restored.stats(), original.stats());
}

fn arb_op() -> impl Strategy<Value = Op> {
    let key = || prop::sample::select(vec!["a", "b"]);
    let timeouts = vec![
        Timeout::None,
        Timeout::Sliding { ms: 600 },
        Timeout::Absolute { ms: 1500 },
    ];
    let ids = || 1..30u64;
    let lock = (
        key(),
        prop::sample::select(vec![0, 200, 1000]),
        prop::option::of(Just(250)),
        prop::option::of(Just(400)),
    );
    prop_oneof![
        2 => (key(), prop::sample::select(timeouts)).prop_map(|(k, t)| create(k, b"v", t)),
        5 => lock.prop_map(|(k, wait_ms, lease_ms, take_over_after_ms)| Op::ReadAndLock {
            obj: obj(k),
            cached_version: None,
            lease_ms,
            wait_ms,
            take_over_after_ms,
        }),
        2 => (key(), ids()).prop_map(|(k, id)| unlock(k, id)),
        1 => (key(), ids()).prop_map(|(k, id)| Op::Update {
            obj: obj(k),
            value: id.to_le_bytes().to_vec(),
            timeout: None,
            expected_version: None,
            lock_id: Some(id),
            unlock: true,
        }),
        1 => (key(), prop::option::of(ids())).prop_map(|(k, lock_id)| Op::Remove {
            obj: obj(k),
            lock_id,
        }),
        1 => key().prop_map(read),
    ]
}

/// Commands over two objects, with waiter ids that repeat so `CancelWait` finds some.
fn arb_command() -> impl Strategy<Value = Command> {
    let waiter = (1..3u64, 0..6u64).prop_map(|(owner, seq)| w(owner, seq));
    let accesses = prop::collection::vec(
        (prop::sample::select(vec!["a", "b", "c"]), 0..5000u64),
        0..3,
    );
    prop_oneof![
        8 => (arb_op(), prop::option::weighted(0.85, waiter.clone()))
            .prop_map(|(op, waiter)| Command::Op { op, waiter }),
        2 => Just(Command::Tick),
        1 => accesses.prop_map(|accesses| touch(&accesses)),
        1 => waiter.prop_map(|waiter| Command::CancelWait { waiter }),
        1 => (1..3u64, 0..3u64).prop_map(|(owner, min_seq)| Command::AdoptWaiters { owner, min_seq }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(128)
    })]

    /// Two replicas fed the same commands agree on every outcome; so does a third one
    /// restored mid-way from the first one's snapshot.
    #[test]
    fn replicas_and_restored_snapshots_give_identical_outcomes(
        steps in prop::collection::vec((0..80u64, arb_command()), 1..120),
        split in any::<prop::sample::Index>(),
    ) {
        let config = PartitionConfig {
            store: StoreConfig {
                default_lease_ms: 300,
            },
            max_waiters_per_object: 3,
        };
        let (mut p, mut q) = (Partition::new(config), Partition::new(config));
        let split = split.index(steps.len());
        let mut restored = None;
        let mut now = 0;
        for (i, (dt, command)) in steps.iter().enumerate() {
            if i == split {
                restored = Some(Partition::restore(config, &p.snapshot()).unwrap());
            }
            now += dt;
            let out = p.apply(command, now);
            prop_assert_eq!(&q.apply(command, now), &out, "{:?} at {}", command, now);
            if let Some(r) = restored.as_mut() {
                prop_assert_eq!(&r.apply(command, now), &out, "restored: {:?} at {}", command, now);
            }
        }
        for r in [&q].into_iter().chain(restored.as_ref()) {
            prop_assert_eq!(r.waiting(), p.waiting());
            prop_assert_eq!(r.stats(), p.stats());
            prop_assert_eq!(r.next_deadline(), p.next_deadline());
        }
    }
}
