//! Tests of the events a partition owes clients: expirations and low-memory evictions go
//! to the replicated outbox, `AckEvents` removes them, snapshots carry them, and eviction
//! picks the least recently used unlocked objects the same way on every replica.

use grid_proto::{EventCause, Millis, ObjKey, Op, Reply, Timeout};

use super::{Command, Partition, PartitionConfig};

fn obj(key: &str) -> ObjKey {
    ObjKey::new("ns", key)
}

fn run(p: &mut Partition, now: Millis, op: Op) -> Reply {
    let out = p.apply(&Command::Op { op, waiter: None }, now);
    out.reply.unwrap_or_else(|| panic!("parked"))
}

fn put(p: &mut Partition, now: Millis, key: &str, len: usize, timeout: Timeout) {
    let op = Op::Put {
        obj: obj(key),
        value: vec![7; len],
        timeout,
        lock_id: None,
    };
    assert!(matches!(run(p, now, op), Reply::Added { .. }));
}

fn read(p: &mut Partition, now: Millis, key: &str) {
    let op = Op::Read {
        obj: obj(key),
        cached_version: None,
    };
    assert!(matches!(run(p, now, op), Reply::Retrieved { .. }));
}

/// `(seq, cause, key)` of each waiting event.
fn outbox(p: &Partition) -> Vec<(u64, EventCause, String)> {
    p.outbox()
        .iter()
        .map(|(seq, e)| {
            (
                seq,
                e.cause,
                String::from_utf8_lossy(&e.obj.key).into_owned(),
            )
        })
        .collect()
}

#[test]
fn expirations_wait_in_the_outbox_until_acknowledged() {
    let mut p = Partition::new(PartitionConfig::default());
    put(&mut p, 0, "a", 3, Timeout::Sliding { ms: 100 });
    put(&mut p, 0, "b", 3, Timeout::Absolute { ms: 200 });
    p.apply(&Command::Tick, 250);
    assert_eq!(
        outbox(&p),
        vec![
            (1, EventCause::Expired, "a".into()),
            (2, EventCause::Expired, "b".into())
        ]
    );
    let (_, first) = p.outbox().iter().next().unwrap();
    assert_eq!((first.value.clone(), first.at), (vec![7; 3], 250));
    p.apply(&Command::AckEvents { seqs: vec![1] }, 260);
    assert_eq!(outbox(&p), vec![(2, EventCause::Expired, "b".into())]);
    let restored = Partition::restore(PartitionConfig::default(), &p.snapshot()).expect("restores");
    assert_eq!(outbox(&restored), outbox(&p), "snapshots carry the outbox");
}

#[test]
fn eviction_takes_the_least_recently_used_unlocked_objects_first() {
    let mut p = Partition::new(PartitionConfig::default());
    for (i, key) in ["old", "locked", "mid", "new"].iter().enumerate() {
        put(&mut p, i as Millis * 10, key, 100, Timeout::None);
    }
    let lock = Op::ReadAndLock {
        obj: obj("locked"),
        cached_version: None,
        lease_ms: None,
        wait_ms: 0,
        take_over_after_ms: None,
    };
    assert!(matches!(run(&mut p, 50, lock), Reply::Retrieved { .. }));
    // "old" is read last, so "mid" is now the least recently used unlocked object.
    read(&mut p, 60, "old");
    let out = p.apply(&Command::Evict { bytes: 150 }, 70);
    assert_eq!(out.evicted, 2);
    assert_eq!(
        outbox(&p),
        vec![
            (1, EventCause::LowMemory, "mid".into()),
            (2, EventCause::LowMemory, "new".into())
        ]
    );
    assert_eq!(
        p.stats().objects,
        2,
        "the locked and the recently read stay"
    );
    let out = p.apply(&Command::Evict { bytes: 1_000 }, 80);
    assert_eq!(out.evicted, 1, "never the locked one");
}

#[test]
fn replicas_evict_the_same_objects() {
    let mut a = Partition::new(PartitionConfig::default());
    for i in 0..50 {
        // Equal access times: ties are broken by key, the same on every replica.
        put(
            &mut a,
            (i % 5) as Millis,
            &format!("k{i}"),
            10,
            Timeout::None,
        );
    }
    let mut b = Partition::restore(PartitionConfig::default(), &a.snapshot()).unwrap();
    a.apply(&Command::Evict { bytes: 200 }, 100);
    b.apply(&Command::Evict { bytes: 200 }, 100);
    assert_eq!(outbox(&a), outbox(&b));
    assert_eq!(a.snapshot(), b.snapshot());
}
