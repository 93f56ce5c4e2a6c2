//! Unit tests of [`Store`]: one test per rule of the module docs, driven by explicit clock
//! readings (no sleeping).

use std::collections::BTreeSet;

use grid_proto::{Millis, ObjKey, ObjectInfo, Op, Reply, Timeout};

use super::state::{Store, StoreConfig, StoreEvent, StoreStats};

const NONE: Timeout = Timeout::None;

fn sliding(ms: Millis) -> Timeout {
    Timeout::Sliding { ms }
}

fn absolute(ms: Millis) -> Timeout {
    Timeout::Absolute { ms }
}

fn obj(key: &str) -> ObjKey {
    ObjKey::new("ns", key)
}

fn store() -> Store {
    Store::new(StoreConfig::default())
}

/// Short call sites: `s.at(now, op)` is the reply, `s.ev(now, op)` reply and events.
trait At {
    fn at(&mut self, now: Millis, op: Op) -> Reply;
    fn ev(&mut self, now: Millis, op: Op) -> (Reply, Vec<StoreEvent>);
}

impl At for Store {
    fn at(&mut self, now: Millis, op: Op) -> Reply {
        self.apply(&op, now).reply
    }

    fn ev(&mut self, now: Millis, op: Op) -> (Reply, Vec<StoreEvent>) {
        let applied = self.apply(&op, now);
        (applied.reply, applied.events)
    }
}

fn create(key: &str, value: &[u8], timeout: Timeout) -> Op {
    Op::Create {
        obj: obj(key),
        value: value.to_vec(),
        timeout,
        uninitialized: false,
    }
}

fn put(key: &str, value: &[u8], lock_id: Option<u64>) -> Op {
    Op::Put {
        obj: obj(key),
        value: value.to_vec(),
        timeout: NONE,
        lock_id,
    }
}

fn update(key: &str, value: &[u8], expected: Option<u64>, lock_id: Option<u64>) -> Op {
    Op::Update {
        obj: obj(key),
        value: value.to_vec(),
        timeout: None,
        expected_version: expected,
        lock_id,
        unlock: false,
    }
}

fn read(key: &str, cached_version: Option<u64>) -> Op {
    Op::Read {
        obj: obj(key),
        cached_version,
    }
}

fn lock_with(key: &str, lease_ms: Option<Millis>, take_over_after_ms: Option<Millis>) -> Op {
    Op::ReadAndLock {
        obj: obj(key),
        cached_version: None,
        lease_ms,
        wait_ms: 0,
        take_over_after_ms,
    }
}

fn lock(key: &str) -> Op {
    lock_with(key, None, None)
}

fn unlock(key: &str, lock_id: u64) -> Op {
    let obj = obj(key);
    Op::Unlock { obj, lock_id }
}

fn refresh(key: &str, lock_id: u64) -> Op {
    let obj = obj(key);
    Op::RefreshLock { obj, lock_id }
}

fn remove(key: &str, lock_id: Option<u64>) -> Op {
    let obj = obj(key);
    Op::Remove { obj, lock_id }
}

fn reset(key: &str, timeout: Option<Timeout>) -> Op {
    let obj = obj(key);
    Op::ResetTimeout { obj, timeout }
}

fn info(reply: &Reply) -> ObjectInfo {
    match reply {
        Reply::Retrieved { info, .. } | Reply::NotModified { info } => *info,
        other => panic!("expected a read, got {other:?}"),
    }
}

fn value(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Retrieved { value, .. } => value.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

fn version(reply: &Reply) -> u64 {
    match reply {
        Reply::Added { version } | Reply::Updated { version } => *version,
        other => panic!("expected a write, got {other:?}"),
    }
}

/// The lock id a successful read-and-lock handed out.
fn granted(reply: &Reply) -> u64 {
    info(reply).lock_id.unwrap()
}

fn locked(lock_id: u64, lock_age_ms: Millis) -> Reply {
    Reply::Locked {
        lock_id,
        lock_age_ms,
    }
}

fn expired(key: &str, value: &[u8], version: u64) -> StoreEvent {
    StoreEvent::Expired {
        obj: obj(key),
        value: value.to_vec(),
        version,
    }
}

fn freed(key: &str) -> StoreEvent {
    StoreEvent::LockFreed { obj: obj(key) }
}

fn stats(objects: u64, value_bytes: u64, locked: u64) -> StoreStats {
    StoreStats {
        objects,
        value_bytes,
        locked,
    }
}

#[test]
fn create_adds_once_then_reports_already_exists() {
    let mut s = store();
    let v1 = version(&s.at(0, create("k", b"one", NONE)));
    assert_eq!(s.at(1, create("k", b"two", NONE)), Reply::AlreadyExists);
    let r = s.at(2, read("k", None));
    assert_eq!((value(&r), info(&r).version), (b"one".to_vec(), v1));
    assert_eq!(s.stats(), stats(1, 3, 0));
}

#[test]
fn put_adds_then_updates_with_a_higher_version() {
    let mut s = store();
    let added = s.at(0, put("k", b"one", None));
    assert!(matches!(added, Reply::Added { .. }), "{added:?}");
    let updated = s.at(1, put("k", b"three", None));
    assert!(matches!(updated, Reply::Updated { .. }), "{updated:?}");
    let v2 = version(&updated);
    assert!(v2 > version(&added));
    let r = s.at(2, read("k", None));
    assert_eq!((value(&r), info(&r).version), (b"three".to_vec(), v2));
    assert_eq!(s.stats(), stats(1, 5, 0));
}

#[test]
fn versions_are_never_reused_after_remove_and_recreate() {
    let mut s = store();
    let mut seen = Vec::new();
    for now in [0, 10, 20] {
        seen.push(version(&s.at(now, create("k", b"v", NONE))));
        seen.push(version(&s.at(now + 1, update("k", b"w", None, None))));
        assert_eq!(s.at(now + 2, remove("k", None)), Reply::Removed);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
}

#[test]
fn update_needs_the_object_and_compares_and_sets_the_expected_version() {
    let mut s = store();
    assert_eq!(s.at(0, update("k", b"v", None, None)), Reply::NotFound);
    assert_eq!(s.stats(), stats(0, 0, 0));
    let v1 = version(&s.at(0, create("k", b"one", NONE)));
    let stale = update("k", b"two", Some(v1 + 100), None);
    assert_eq!(s.at(1, stale), Reply::VersionMismatch { current: v1 });
    assert_eq!(value(&s.at(2, read("k", None))), b"one");
    let v2 = version(&s.at(3, update("k", b"two", Some(v1), None)));
    assert!(v2 > v1);
    let lost_race = update("k", b"three", Some(v1), None);
    assert_eq!(s.at(4, lost_race), Reply::VersionMismatch { current: v2 });
    assert_eq!(value(&s.at(5, read("k", None))), b"two");
    s.at(6, remove("k", None));
    assert_eq!(s.at(7, update("k", b"v", None, None)), Reply::NotFound);
}

#[test]
fn read_with_the_current_cached_version_is_not_modified() {
    let mut s = store();
    let v1 = version(&s.at(0, create("k", b"abc", NONE)));
    let full = s.at(1, read("k", None));
    assert_eq!((value(&full), info(&full).version), (b"abc".to_vec(), v1));
    let cached = s.at(2, read("k", Some(v1)));
    assert!(matches!(cached, Reply::NotModified { info } if info.version == v1));
    let v2 = version(&s.at(3, put("k", b"xyz", None)));
    let r = s.at(4, read("k", Some(v1)));
    assert_eq!((value(&r), info(&r).version), (b"xyz".to_vec(), v2));
    assert_eq!(s.at(5, read("absent", None)), Reply::NotFound);
}

#[test]
fn remove_deletes_the_object_and_its_bytes() {
    let mut s = store();
    s.at(0, create("a", b"aaaa", NONE));
    s.at(0, create("b", b"bb", NONE));
    assert_eq!(s.ev(1, remove("a", None)), (Reply::Removed, vec![]));
    assert_eq!(s.at(2, read("a", None)), Reply::NotFound);
    assert_eq!(s.at(3, remove("a", None)), Reply::NotFound);
    assert_eq!(s.stats(), stats(1, 2, 0));
}

#[test]
fn reset_timeout_restarts_both_timers_and_may_change_the_timeout() {
    let mut s = store();
    let va = version(&s.at(0, create("a", b"a", sliding(1000))));
    let vb = version(&s.at(0, create("b", b"b", absolute(1000))));
    assert_eq!(s.at(900, reset("a", None)), Reply::TimeoutReset);
    assert_eq!(s.at(900, reset("b", None)), Reply::TimeoutReset);
    assert_eq!(s.next_deadline(), Some(1900));
    assert_eq!(s.tick(1899), vec![]);
    let new_timeout = reset("a", Some(absolute(5000)));
    assert_eq!(s.at(1899, new_timeout), Reply::TimeoutReset);
    let a = info(&s.at(6000, read("a", None)));
    assert_eq!((a.version, a.timeout), (va, absolute(5000)));
    assert_eq!(s.tick(6898), vec![expired("b", b"b", vb)]);
    assert_eq!(s.tick(6899), vec![expired("a", b"a", va)]);
    assert_eq!(s.at(7000, reset("a", None)), Reply::NotFound);
}

#[test]
fn sliding_timeout_is_extended_by_reads() {
    let mut s = store();
    let v = version(&s.at(0, create("k", b"v", sliding(1000))));
    for now in [999, 1998, 2997] {
        assert_eq!(value(&s.at(now, read("k", None))), b"v");
    }
    assert_eq!(s.tick(3996), vec![]);
    assert_eq!(s.tick(3997), vec![expired("k", b"v", v)]);
}

#[test]
fn absolute_timeout_ignores_reads_but_restarts_on_writes() {
    let mut s = store();
    let vr = version(&s.at(0, create("read", b"r", absolute(1000))));
    s.at(0, create("written", b"w", absolute(1000)));
    for now in [300, 600, 900] {
        s.at(now, read("read", None));
        s.at(now, read("written", None));
    }
    let lock_id = granted(&s.at(950, lock("read")));
    s.at(960, unlock("read", lock_id));
    let vw = version(&s.at(999, update("written", b"w2", None, None)));
    assert_eq!(s.tick(1000), vec![expired("read", b"r", vr)]);
    assert_eq!(s.tick(1998), vec![]);
    assert_eq!(s.tick(1999), vec![expired("written", b"w2", vw)]);
}

#[test]
fn tick_expires_due_objects_in_deadline_order_with_final_bytes_and_version() {
    let mut s = store();
    // Key order differs from deadline order on purpose.
    s.at(0, create("a", b"a1", sliding(300)));
    let vz = version(&s.at(0, create("z", b"z1", absolute(100))));
    s.at(0, create("m", b"m1", sliding(200)));
    s.at(0, create("keep", b"k", NONE));
    let vm = version(&s.at(50, update("m", b"m2", None, None)));
    // A put replaces the timeout: "a" no longer expires.
    s.at(60, put("a", b"a2", None));
    assert_eq!(s.next_deadline(), Some(100));
    assert_eq!(s.tick(99), vec![]);
    let want = vec![expired("z", b"z1", vz), expired("m", b"m2", vm)];
    assert_eq!(s.tick(10_000), want);
    assert_eq!(s.stats(), stats(2, 3, 0));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn an_object_past_its_deadline_is_gone_for_every_operation_without_tick() {
    let ops = [
        read("k", None),
        lock("k"),
        update("k", b"new", None, None),
        remove("k", None),
        reset("k", None),
        unlock("k", 1),
        refresh("k", 1),
    ];
    for op in ops {
        let mut s = store();
        let v = version(&s.at(0, create("k", b"old", sliding(1000))));
        assert_eq!(value(&s.at(500, read("k", None))), b"old");
        let (reply, events) = s.ev(1500, op.clone());
        assert_eq!(reply, Reply::NotFound, "{op:?}");
        assert_eq!(events, vec![expired("k", b"old", v)], "{op:?}");
        assert_eq!(s.stats(), stats(0, 0, 0));
        assert_eq!(s.tick(1500), vec![], "expired once only");
    }
    // A write that adds finds the slot empty.
    let mut s = store();
    let v = version(&s.at(0, create("k", b"old", absolute(10))));
    let (reply, events) = s.ev(10, create("k", b"new", NONE));
    assert!(matches!(reply, Reply::Added { version } if version > v));
    assert_eq!(events, vec![expired("k", b"old", v)]);
}

#[test]
fn read_and_lock_returns_the_new_lock_id_in_the_info() {
    let mut s = store();
    let v = version(&s.at(0, create("k", b"v", NONE)));
    let r = s.at(10, lock("k"));
    let id = granted(&r);
    assert!(id > v, "lock ids and versions share one counter");
    let i = info(&r);
    let facts = (
        i.version,
        i.lock_id,
        i.lock_age_ms,
        i.uninitialized,
        i.timeout,
    );
    assert_eq!(
        (value(&r), facts),
        (b"v".to_vec(), (v, Some(id), 0, false, NONE))
    );
    let later = info(&s.at(25, read("k", None)));
    assert_eq!((later.lock_id, later.lock_age_ms), (Some(id), 15));
    assert_eq!(s.lock_of(&obj("k"), 25), Some((id, 15)));
    assert_eq!(s.stats(), stats(1, 1, 1));
    // With a current cached version the lock comes without the bytes.
    let vc = version(&s.at(30, create("c", b"c", NONE)));
    let mut cached = lock("c");
    if let Op::ReadAndLock { cached_version, .. } = &mut cached {
        *cached_version = Some(vc);
    }
    let r = s.at(31, cached);
    assert!(matches!(r, Reply::NotModified { info } if info.lock_id == Some(vc + 1)));
    assert_eq!(s.at(32, lock("absent")), Reply::NotFound);
}

#[test]
fn a_second_read_and_lock_is_told_the_holder_and_lock_age() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let id = granted(&s.at(1000, lock("k")));
    assert_eq!(s.at(4500, lock("k")), locked(id, 3500));
    assert_eq!(s.lock_of(&obj("k"), 4500), Some((id, 3500)));
}

#[test]
fn lock_ids_of_an_object_strictly_increase() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let mut ids = Vec::new();
    for now in [0, 10, 20, 30, 40] {
        let id = granted(&s.at(now, lock("k")));
        ids.push(id);
        s.at(now + 1, put("other", b"x", None));
        assert_eq!(s.at(now + 2, unlock("k", id)), Reply::Unlocked);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn update_with_unlock_writes_and_releases_the_lock() {
    let mut s = store();
    s.at(0, create("k", b"old", NONE));
    let id = granted(&s.at(1, lock("k")));
    let mut set_and_release = update("k", b"new", None, Some(id));
    if let Op::Update { unlock, .. } = &mut set_and_release {
        *unlock = true;
    }
    let (reply, events) = s.ev(2, set_and_release);
    let v = version(&reply);
    assert_eq!(events, vec![freed("k")]);
    let r = info(&s.at(3, read("k", None)));
    assert_eq!((r.version, r.lock_id), (v, None));
    assert_eq!(s.stats(), stats(1, 3, 0));
    assert_eq!(s.at(4, unlock("k", id)), Reply::LockLost);
    assert!(granted(&s.at(5, lock("k"))) > v);
}

#[test]
fn unlock_needs_the_current_lock_id() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let id = granted(&s.at(1, lock("k")));
    assert_eq!(s.ev(2, unlock("k", id + 1)), (Reply::LockLost, vec![]));
    assert_eq!(s.lock_of(&obj("k"), 2), Some((id, 1)));
    let right = s.ev(3, unlock("k", id));
    assert_eq!(right, (Reply::Unlocked, vec![freed("k")]));
    assert_eq!(s.at(4, unlock("k", id)), Reply::LockLost);
    assert_eq!(s.at(5, unlock("absent", id)), Reply::NotFound);
    assert_eq!(s.stats(), stats(1, 1, 0));
}

#[test]
fn writes_and_removes_of_a_locked_object_without_a_lock_id_are_locked() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let id = granted(&s.at(100, lock("k")));
    assert_eq!(s.at(600, put("k", b"x", None)), locked(id, 500));
    assert_eq!(s.at(600, update("k", b"x", None, None)), locked(id, 500));
    assert_eq!(s.at(600, remove("k", None)), locked(id, 500));
    assert_eq!(value(&s.at(600, read("k", None))), b"v");
    // The holder may write, and keeps the lock.
    let by_holder = s.at(700, put("k", b"x", Some(id)));
    assert!(matches!(by_holder, Reply::Updated { .. }));
    assert_eq!(s.lock_of(&obj("k"), 700), Some((id, 600)));
    let removed = s.ev(800, remove("k", Some(id)));
    assert_eq!(removed, (Reply::Removed, vec![freed("k")]));
    assert_eq!(s.stats(), stats(0, 0, 0));
}

#[test]
fn a_stale_lock_id_is_lock_lost() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let old = granted(&s.at(1, lock("k")));
    s.at(2, unlock("k", old));
    let current = granted(&s.at(3, lock("k")));
    assert_eq!(s.at(4, put("k", b"x", Some(old))), Reply::LockLost);
    assert_eq!(s.at(4, update("k", b"x", None, Some(old))), Reply::LockLost);
    assert_eq!(s.at(4, remove("k", Some(old))), Reply::LockLost);
    assert_eq!(s.at(4, refresh("k", old)), Reply::LockLost);
    assert_eq!(s.at(4, unlock("k", old)), Reply::LockLost);
    assert_eq!(s.lock_of(&obj("k"), 4), Some((current, 1)));
    // A lock id on an object nobody locks is stale too.
    s.at(5, unlock("k", current));
    assert_eq!(s.at(6, put("k", b"x", Some(current))), Reply::LockLost);
    assert_eq!(value(&s.at(7, read("k", None))), b"v");
}

#[test]
fn put_on_an_absent_object_with_a_lock_id_is_lock_lost() {
    let mut s = store();
    assert_eq!(s.at(0, put("k", b"v", Some(7))), Reply::LockLost);
    s.at(1, create("k", b"v", NONE));
    let id = granted(&s.at(2, lock("k")));
    s.at(3, remove("k", Some(id)));
    assert_eq!(s.at(4, put("k", b"v", Some(id))), Reply::LockLost);
    assert_eq!(
        (s.at(5, read("k", None)), s.stats()),
        (Reply::NotFound, stats(0, 0, 0))
    );
}

#[test]
fn refresh_lock_extends_the_lease_but_the_lock_keeps_ageing() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let id = granted(&s.at(0, lock("k")));
    assert_eq!(s.next_deadline(), Some(90_000));
    assert_eq!(s.at(60_000, refresh("k", id)), Reply::LockRefreshed);
    assert_eq!(s.next_deadline(), Some(150_000));
    assert_eq!(s.at(100_000, lock("k")), locked(id, 100_000));
    assert_eq!(s.tick(149_999), vec![]);
    assert_eq!(s.lock_of(&obj("k"), 149_999), Some((id, 149_999)));
    assert_eq!(s.tick(150_000), vec![freed("k")]);
    assert_eq!(s.at(150_001, refresh("k", id)), Reply::LockLost);
    assert_eq!(s.at(150_001, refresh("absent", id)), Reply::NotFound);
}

#[test]
fn a_lock_frees_itself_after_its_lease_on_the_next_operation_or_tick() {
    assert_eq!(StoreConfig::default().default_lease_ms, 90_000);
    let mut s = store();
    s.at(0, create("a", b"a", NONE));
    s.at(0, create("b", b"b", NONE));
    let id = granted(&s.at(1000, lock("a")));
    granted(&s.at(1000, lock_with("b", Some(30_000), None)));
    assert_eq!((s.stats().locked, s.next_deadline()), (2, Some(31_000)));
    // Lazily: the next operation on the object finds the lease over.
    let (still, events) = s.ev(90_999, read("a", None));
    assert_eq!((info(&still).lock_id, events), (Some(id), vec![]));
    let (lapsed, events) = s.ev(91_000, read("a", None));
    assert_eq!((info(&lapsed).lock_id, events), (None, vec![freed("a")]));
    assert_eq!(s.at(91_001, put("a", b"x", Some(id))), Reply::LockLost);
    // By tick: "b" was never touched after its lease ended.
    let age = s.lock_of(&obj("b"), 91_001).map(|(_, age)| age);
    assert_eq!(age, Some(90_001));
    assert_eq!(s.tick(91_001), vec![freed("b")]);
    assert_eq!(s.tick(200_000), vec![], "freed once only");
    assert_eq!((s.stats(), s.next_deadline()), (stats(2, 2, 0), None));
}

#[test]
fn read_and_lock_takes_over_a_lock_held_long_enough() {
    let mut s = store();
    s.at(0, create("k", b"v", NONE));
    let old = granted(&s.at(0, lock_with("k", Some(300_000), None)));
    let too_soon = s.at(59_999, lock_with("k", None, Some(60_000)));
    assert_eq!(too_soon, locked(old, 59_999));
    let taken = s.at(60_000, lock_with("k", None, Some(60_000)));
    let new = granted(&taken);
    assert!(new > old);
    assert_eq!(info(&taken).lock_age_ms, 0);
    assert_eq!(s.lock_of(&obj("k"), 60_000), Some((new, 0)));
    assert_eq!(s.at(60_001, put("k", b"x", Some(old))), Reply::LockLost);
    assert_eq!(s.at(60_001, unlock("k", old)), Reply::LockLost);
    assert_eq!(s.at(60_002, unlock("k", new)), Reply::Unlocked);
    assert_eq!(s.stats().locked, 0);
}

#[test]
fn the_uninitialized_mark_is_reported_once_by_the_first_read_and_lock() {
    let mut s = store();
    let mut create_uninitialized = create("k", b"", sliding(20 * 60_000));
    if let Op::Create { uninitialized, .. } = &mut create_uninitialized {
        *uninitialized = true;
    }
    s.at(0, create_uninitialized);
    assert!(info(&s.at(1, read("k", None))).uninitialized);
    let first = s.at(2, lock("k"));
    let id = granted(&first);
    assert!(info(&first).uninitialized);
    assert_eq!(s.at(3, lock("k")), locked(id, 1));
    s.at(4, unlock("k", id));
    assert!(!info(&s.at(5, lock("k"))).uninitialized);
    assert!(!info(&s.at(6, read("k", None))).uninitialized);
}

#[test]
fn expiry_of_a_locked_object_frees_its_lock() {
    let mut s = store();
    let va = version(&s.at(0, create("a", b"a", sliding(1000))));
    let vb = version(&s.at(0, create("b", b"b", absolute(2000))));
    granted(&s.at(0, lock("a")));
    granted(&s.at(0, lock("b")));
    assert_eq!(s.tick(1000), vec![expired("a", b"a", va), freed("a")]);
    let (_, lazily) = s.ev(2000, read("b", None));
    assert_eq!(lazily, vec![expired("b", b"b", vb), freed("b")]);
    assert_eq!((s.stats(), s.next_deadline()), (stats(0, 0, 0), None));
}

#[test]
fn every_operation_that_finds_the_object_slides_its_expiry() {
    // Refused operations too: the object is in use even if this caller may not change it.
    let refused = |id: u64, v: u64| {
        [
            (create("k", b"x", NONE), Reply::AlreadyExists),
            (put("k", b"x", None), locked(id, 900)),
            (
                update("k", b"x", Some(v + 100), Some(id)),
                Reply::VersionMismatch { current: v },
            ),
            (remove("k", Some(id + 100)), Reply::LockLost),
            (unlock("k", id + 100), Reply::LockLost),
            (refresh("k", id + 100), Reply::LockLost),
            (lock("k"), locked(id, 900)),
        ]
    };
    for i in 0..refused(0, 0).len() {
        let mut s = store();
        let v = version(&s.at(0, create("k", b"v", sliding(1000))));
        let id = granted(&s.at(100, lock_with("k", Some(10_000), None)));
        let (op, want) = refused(id, v)[i].clone();
        assert_eq!(s.at(1000, op.clone()), want);
        assert_eq!(s.tick(1999), vec![], "{op:?} did not slide the expiry");
        assert_eq!(s.tick(2000), vec![expired("k", b"v", v), freed("k")]);
    }
}

#[test]
fn stats_count_objects_bytes_and_locks_through_every_change() {
    let mut s = store();
    assert_eq!(s.stats(), stats(0, 0, 0));
    s.at(0, create("a", b"aaa", sliding(10_000)));
    s.at(0, put("b", b"bbbbb", None));
    assert_eq!(s.stats(), stats(2, 8, 0));
    let id = granted(&s.at(1, lock("a")));
    assert_eq!(s.stats(), stats(2, 8, 1));
    s.at(2, put("b", b"bb", None));
    assert_eq!(s.stats(), stats(2, 5, 1));
    s.at(3, update("a", b"a", None, Some(id)));
    assert_eq!(s.stats(), stats(2, 3, 1));
    assert_eq!(s.at(4, create("b", b"ignored", NONE)), Reply::AlreadyExists);
    assert_eq!(s.at(4, put("a", b"ignored", None)), locked(id, 3));
    assert_eq!(s.stats(), stats(2, 3, 1));
    s.at(5, remove("b", None));
    assert_eq!(s.stats(), stats(1, 1, 1));
    s.tick(20_000);
    assert_eq!(s.stats(), stats(0, 0, 0));
}

#[test]
fn an_item_merge_may_not_grow_a_value_past_the_limit() {
    use grid_proto::items::{Item, ItemChanges};
    use grid_proto::WriteBody;

    let mut s = Store::new(StoreConfig::default());
    let obj = ObjKey::new("ns", b"k".to_vec());
    let set = |name: &str, len: usize| Op::Write {
        obj: obj.clone(),
        body: WriteBody::Items(ItemChanges {
            set: vec![Item {
                name: name.into(),
                value: vec![1; len],
            }],
            ..ItemChanges::default()
        }),
        tags: None,
        timeout: None,
        lock_id: None,
        unlock: false,
        create: true,
        max_bytes: 100,
    };
    assert!(matches!(
        s.apply(&set("a", 40), 0).reply,
        Reply::Added { .. }
    ));
    // Each write is small; the merged value would not be.
    assert!(matches!(
        s.apply(&set("b", 60), 0).reply,
        Reply::TooLarge { limit: 100, .. }
    ));
    assert!(matches!(
        s.apply(&set("a", 10), 0).reply,
        Reply::Updated { .. }
    ));
    assert_eq!(s.stats().objects, 1);
}
