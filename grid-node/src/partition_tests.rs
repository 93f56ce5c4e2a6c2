//! Tests of [`Partition`]: the lock hand-off to queued waiters, their wake-ups from
//! `tick`, and expirations. The waiters' channels are read with `try_recv`: everything
//! happens inside `execute` and `tick`, so no runtime is needed.

use grid_proto::{Millis, ObjKey, ObjectInfo, Op, Reply, Timeout};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::oneshot::Receiver;

use super::{Execution, Expiration, Partition, PartitionConfig};

fn obj(key: &str) -> ObjKey {
    ObjKey::new("ns", key)
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

/// Runs an operation that must be answered at once.
fn ready(p: &mut Partition, now: Millis, op: Op) -> Reply {
    match p.execute(&op, now, &mut Vec::new()) {
        Execution::Ready(reply) => reply,
        Execution::Waiting(_) => panic!("{op:?} was parked"),
    }
}

/// Runs a read-and-lock that must join the object's queue.
fn parked(p: &mut Partition, now: Millis, op: Op) -> Receiver<Reply> {
    match p.execute(&op, now, &mut Vec::new()) {
        Execution::Waiting(rx) => rx,
        Execution::Ready(reply) => panic!("{op:?} was answered at once: {reply:?}"),
    }
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

fn still_waiting(rx: &mut Receiver<Reply>) -> bool {
    matches!(rx.try_recv(), Err(TryRecvError::Empty))
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
fn waiters_get_the_lock_in_arrival_order_each_the_moment_it_frees() {
    let (mut p, holder) = locked_object(None);
    let mut first = parked(&mut p, 10, lock("k", 60_000, None));
    let mut second = parked(&mut p, 20, lock("k", 60_000, None));
    let mut third = parked(&mut p, 30, lock("k", 60_000, None));
    assert_eq!(p.waiting(), 3);
    assert!(still_waiting(&mut first) && still_waiting(&mut second) && still_waiting(&mut third));

    assert_eq!(ready(&mut p, 100, unlock("k", holder)), Reply::Unlocked);
    let got = first.try_recv().unwrap();
    let id1 = granted(&got);
    assert!(id1 > holder);
    assert_eq!(info(&got).lock_age_ms, 0);
    assert!(still_waiting(&mut second) && still_waiting(&mut third));
    assert_eq!(p.waiting(), 2);

    assert_eq!(ready(&mut p, 200, unlock("k", id1)), Reply::Unlocked);
    let id2 = granted(&second.try_recv().unwrap());
    assert!(id2 > id1);
    assert!(still_waiting(&mut third));

    // A set-and-release frees the lock too, and the next waiter reads the new bytes.
    let set_and_release = Op::Update {
        obj: obj("k"),
        value: b"new".to_vec(),
        timeout: None,
        expected_version: None,
        lock_id: Some(id2),
        unlock: true,
    };
    assert!(matches!(
        ready(&mut p, 300, set_and_release),
        Reply::Updated { .. }
    ));
    let got = third.try_recv().unwrap();
    assert!(granted(&got) > id2);
    assert!(matches!(got, Reply::Retrieved { value, .. } if value == b"new"));
    assert_eq!((p.waiting(), p.stats().locked), (0, 1));
}

#[test]
fn a_waiter_whose_wait_ends_is_told_locked_by_tick() {
    let (mut p, holder) = locked_object(None);
    let mut rx = parked(&mut p, 1000, lock("k", 5000, None));
    assert_eq!(p.next_deadline(), Some(6000));
    assert!(p.tick(5999).is_empty());
    assert!(still_waiting(&mut rx));
    assert!(p.tick(6000).is_empty());
    let told = Reply::Locked {
        lock_id: holder,
        lock_age_ms: 6000,
    };
    assert_eq!(rx.try_recv().unwrap(), told);
    assert_eq!(p.waiting(), 0);
    // The holder is unaffected.
    assert_eq!(ready(&mut p, 6001, unlock("k", holder)), Reply::Unlocked);
}

#[test]
fn a_waiter_with_take_over_takes_a_stale_lock_from_tick_at_the_right_time() {
    let (mut p, holder) = locked_object(Some(300_000));
    // Parked at a lock age of 1000, it may take over at age 5000, that is at 5000.
    let mut rx = parked(&mut p, 1000, lock("k", 60_000, Some(5000)));
    assert_eq!(p.next_deadline(), Some(5000));
    p.tick(4999);
    assert!(still_waiting(&mut rx));
    p.tick(5000);
    let got = rx.try_recv().unwrap();
    let new = granted(&got);
    assert!(new > holder);
    assert_eq!(info(&got).lock_age_ms, 0);
    assert_eq!(ready(&mut p, 5001, unlock("k", holder)), Reply::LockLost);
    assert_eq!(ready(&mut p, 5002, unlock("k", new)), Reply::Unlocked);
}

#[test]
fn a_waiter_that_went_away_is_skipped() {
    let (mut p, holder) = locked_object(None);
    let gone = parked(&mut p, 10, lock("k", 60_000, None));
    let mut live = parked(&mut p, 20, lock("k", 60_000, None));
    let gone_too = parked(&mut p, 30, lock("k", 60_000, None));
    drop((gone, gone_too));

    ready(&mut p, 100, unlock("k", holder));
    let id = granted(&live.try_recv().unwrap());
    assert_eq!(info(&ready(&mut p, 101, read("k"))).lock_id, Some(id));

    // With only a ghost left, the next release leaves the lock free.
    ready(&mut p, 200, unlock("k", id));
    assert_eq!(p.waiting(), 0);
    assert_eq!(p.stats().locked, 0);
    assert_eq!(info(&ready(&mut p, 201, read("k"))).lock_id, None);

    // A ghost whose wait ends is dropped from the queue by tick without effect.
    let mine = granted(&ready(&mut p, 300, lock("k", 0, None)));
    drop(parked(&mut p, 400, lock("k", 1000, None)));
    assert!(p.tick(1400).is_empty());
    assert_eq!(p.waiting(), 0);
    assert_eq!(info(&ready(&mut p, 1401, read("k"))).lock_id, Some(mine));
}

#[test]
fn a_newcomer_cannot_barge_past_queued_waiters() {
    let (mut p, holder) = locked_object(None);
    let mut queued = parked(&mut p, 10, lock("k", 200_000, None));
    // Still held: a newcomer that waits joins the back of the queue.
    let mut newcomer = parked(&mut p, 20, lock("k", 200_000, None));
    ready(&mut p, 30, unlock("k", holder));
    let first = granted(&queued.try_recv().unwrap());
    assert!(still_waiting(&mut newcomer));

    // That lease lapses at 90_030 with nobody calling tick: the queued waiter gets the
    // lock, and a newcomer that waits queues behind it.
    let mut late = parked(&mut p, 90_030, lock("k", 200_000, None));
    let second = granted(&newcomer.try_recv().unwrap());
    assert!(second > first);
    assert!(still_waiting(&mut late));
    p.tick(90_031);
    // The next lease lapses at 180_030: a newcomer that will not wait must not take the
    // lock from under the queue either.
    let no_wait = ready(&mut p, 180_030, lock("k", 0, None));
    let third = granted(&late.try_recv().unwrap());
    let told = Reply::Locked {
        lock_id: third,
        lock_age_ms: 0,
    };
    assert_eq!(no_wait, told);
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
    let _first = parked(&mut p, 1, lock("k", 60_000, None));
    let _second = parked(&mut p, 2, lock("k", 60_000, None));
    let full = ready(&mut p, 3, lock("k", 60_000, None));
    assert!(matches!(full, Reply::Unavailable { .. }), "{full:?}");
    assert_eq!(p.waiting(), 2);
    // The limit is per object.
    let _other = parked(&mut p, 4, lock("other", 60_000, None));
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
    // The lock attempt is an access: the object now expires at 10_100.
    let mut a = parked(&mut p, 100, lock("k", 60_000, None));
    let mut b = parked(&mut p, 100, lock("k", 60_000, None));
    assert!(p.tick(10_099).is_empty());
    let expired = p.tick(10_100);
    let want = Expiration {
        obj: obj("k"),
        value: b"v".to_vec(),
        version,
    };
    assert_eq!(expired, vec![want]);
    assert_eq!(a.try_recv().unwrap(), Reply::NotFound);
    assert_eq!(b.try_recv().unwrap(), Reply::NotFound);
    assert_eq!(
        (p.waiting(), p.stats().objects, p.stats().locked),
        (0, 0, 0)
    );
}

#[test]
fn tick_and_execute_report_expirations() {
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
    assert!(p.tick(99).is_empty());
    let record = |key: &str, value: &[u8], version| Expiration {
        obj: obj(key),
        value: value.to_vec(),
        version,
    };
    let want = vec![record("b", b"bb", vb), record("a", b"aa", va)];
    assert_eq!(p.tick(250), want);
    // An operation that finds its object past the deadline reports the expiry too.
    let mut expired = Vec::new();
    let reply = p.execute(&read("c"), 300, &mut expired);
    assert!(matches!(reply, Execution::Ready(Reply::NotFound)));
    assert_eq!(expired, vec![record("c", b"cc", vc)]);
    assert!(p.tick(10_000).is_empty());
    assert_eq!(p.stats().objects, 0);
}
