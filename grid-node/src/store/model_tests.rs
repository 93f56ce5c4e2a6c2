//! Model-based test of [`Store`]: random operation sequences run against the store and
//! against a reference model written straight from the documented rules: a `BTreeMap`,
//! linear scans for expiry and leases, no indexes. After every step the replies, the
//! events and the counters must agree.

use std::collections::BTreeMap;

use grid_proto::items::{self, Item, ItemChanges};
use grid_proto::{Millis, ObjKey, ObjectInfo, Op, Reply, Timeout, WriteBody};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::state::{Store, StoreConfig, StoreEvent, StoreStats};

const DEFAULT_LEASE_MS: Millis = 90_000;

/// Few tags, so objects share them.
const TAGS: [&str; 2] = ["t1", "t2"];

/// Few keys, two namespaces, one key name shared across them.
const KEYS: [(&str, &str); 3] = [("a", "x"), ("a", "y"), ("b", "x")];

fn key(index: usize) -> ObjKey {
    let (namespace, key) = KEYS[index % KEYS.len()];
    ObjKey::new(namespace, key)
}

// ---------------------------------------------------------------- the reference model

/// The value a write's body makes of `current`, as documented on `Op::Write`.
fn merged(current: &[u8], body: &WriteBody, max_bytes: u64) -> Result<Vec<u8>, Reply> {
    match body {
        WriteBody::Keep => Ok(current.to_vec()),
        WriteBody::Whole(value) => Ok(value.clone()),
        WriteBody::Items(changes) => {
            let value = items::apply(current, changes).map_err(|e| Reply::BadRequest {
                reason: e.to_string(),
            })?;
            if value.len() as u64 > max_bytes {
                return Err(Reply::TooLarge {
                    size: value.len() as u64,
                    limit: max_bytes,
                });
            }
            Ok(value)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ModelLock {
    id: u64,
    acquired: Millis,
    lease_ms: Millis,
    lease_end: Millis,
}

#[derive(Debug, Clone)]
struct ModelObject {
    value: Vec<u8>,
    version: u64,
    timeout: Timeout,
    last_access: Millis,
    /// Last write or timeout reset: where an absolute timeout starts.
    last_write: Millis,
    lock: Option<ModelLock>,
    uninitialized: bool,
    /// Sorted, without repeats.
    tags: Vec<String>,
}

impl ModelObject {
    fn deadline(&self) -> Option<Millis> {
        match self.timeout {
            Timeout::None => None,
            Timeout::Sliding { ms } => Some(self.last_access.saturating_add(ms)),
            Timeout::Absolute { ms } => Some(self.last_write.saturating_add(ms)),
        }
    }

    fn info(&self, now: Millis) -> ObjectInfo {
        ObjectInfo {
            version: self.version,
            lock_id: self.lock.map(|l| l.id),
            lock_age_ms: self.lock.map_or(0, |l| now - l.acquired),
            uninitialized: self.uninitialized,
            timeout: self.timeout,
        }
    }

    fn read_reply(&self, info: ObjectInfo, cached_version: Option<u64>) -> Reply {
        if cached_version == Some(self.version) {
            Reply::NotModified { info }
        } else {
            Reply::Retrieved {
                value: self.value.clone(),
                info,
            }
        }
    }

    /// May a caller holding `given` write or remove this object?
    fn permits(&self, given: Option<u64>, now: Millis) -> Result<(), Reply> {
        match (self.lock, given) {
            (None, None) => Ok(()),
            (Some(lock), None) => Err(Reply::Locked {
                lock_id: lock.id,
                lock_age_ms: now - lock.acquired,
            }),
            (Some(lock), Some(id)) if lock.id == id => Ok(()),
            (_, Some(_)) => Err(Reply::LockLost),
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    objects: BTreeMap<ObjKey, ModelObject>,
    /// One counter for versions and lock ids.
    counter: u64,
}

impl Model {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            objects: self.objects.len() as u64,
            value_bytes: self.objects.values().map(|o| o.value.len() as u64).sum(),
            locked: self.objects.values().filter(|o| o.lock.is_some()).count() as u64,
        }
    }

    fn next_deadline(&self) -> Option<Millis> {
        let expiries = self.objects.values().filter_map(ModelObject::deadline);
        let leases = self
            .objects
            .values()
            .filter_map(|o| o.lock.map(|l| l.lease_end));
        expiries.chain(leases).min()
    }

    fn lock_of(&self, obj: &ObjKey, now: Millis) -> Option<(u64, Millis)> {
        let lock = self.objects.get(obj)?.lock?;
        Some((lock.id, now - lock.acquired))
    }

    fn expire(&mut self, obj: &ObjKey, events: &mut Vec<StoreEvent>) {
        let Some(gone) = self.objects.remove(obj) else {
            return;
        };
        events.push(StoreEvent::Expired {
            obj: obj.clone(),
            value: gone.value,
            version: gone.version,
        });
        if gone.lock.is_some() {
            events.push(StoreEvent::LockFreed { obj: obj.clone() });
        }
    }

    fn write(&mut self, obj: &ObjKey, value: &[u8], timeout: Option<Timeout>, now: Millis) -> u64 {
        let version = self.next();
        let o = self.objects.get_mut(obj).unwrap();
        o.value = value.to_vec();
        o.version = version;
        o.timeout = timeout.unwrap_or(o.timeout);
        o.last_write = now;
        o.uninitialized = false;
        version
    }

    fn insert(&mut self, obj: &ObjKey, value: &[u8], timeout: Timeout, now: Millis) -> u64 {
        let version = self.next();
        let object = ModelObject {
            value: value.to_vec(),
            version,
            timeout,
            last_access: now,
            last_write: now,
            lock: None,
            uninitialized: false,
            tags: Vec::new(),
        };
        self.objects.insert(obj.clone(), object);
        version
    }

    fn set_tags(&mut self, obj: &ObjKey, tags: &Option<Vec<String>>) {
        if let Some(tags) = tags {
            let mut tags = tags.clone();
            tags.sort();
            tags.dedup();
            self.objects.get_mut(obj).unwrap().tags = tags;
        }
    }

    /// Keys of `namespace` tagged `tag` that are not past their deadline, in order.
    fn tagged(&self, namespace: &str, tag: &str, now: Millis) -> Vec<Vec<u8>> {
        self.objects
            .iter()
            .filter(|(k, o)| k.namespace == namespace && o.tags.iter().any(|t| t == tag))
            .filter(|(_, o)| o.deadline().is_none_or(|d| d > now))
            .map(|(k, _)| k.key.clone())
            .collect()
    }

    fn apply(&mut self, op: &Op, now: Millis) -> (Reply, Vec<StoreEvent>) {
        let obj = op.obj().clone();
        let mut events = Vec::new();
        // Bring the object up to now: past its deadline it is gone; past its lease, unlocked.
        if let Some(o) = self.objects.get_mut(&obj) {
            if o.deadline().is_some_and(|d| d <= now) {
                self.expire(&obj, &mut events);
            } else if o.lock.is_some_and(|l| l.lease_end <= now) {
                o.lock = None;
                events.push(StoreEvent::LockFreed { obj: obj.clone() });
            }
        }
        // Any operation that finds the object is an access (sliding expiry).
        if let Some(o) = self.objects.get_mut(&obj) {
            o.last_access = now;
        }
        let reply = self.decide(op, now, &mut events);
        (reply, events)
    }

    fn decide(&mut self, op: &Op, now: Millis, events: &mut Vec<StoreEvent>) -> Reply {
        let obj = op.obj().clone();
        let Some(o) = self.objects.get(&obj).cloned() else {
            return match op {
                Op::Create {
                    value,
                    timeout,
                    uninitialized,
                    ..
                } => {
                    let version = self.insert(&obj, value, *timeout, now);
                    self.objects.get_mut(&obj).unwrap().uninitialized = *uninitialized;
                    Reply::Added { version }
                }
                Op::Put {
                    lock_id: Some(_), ..
                } => Reply::LockLost,
                Op::Put { value, timeout, .. } => Reply::Added {
                    version: self.insert(&obj, value, *timeout, now),
                },
                Op::Write {
                    lock_id: Some(_), ..
                } => Reply::LockLost,
                Op::Write {
                    body,
                    tags,
                    timeout,
                    create: true,
                    max_bytes,
                    ..
                } => {
                    let value = match merged(&[], body, *max_bytes) {
                        Ok(value) => value,
                        Err(reply) => return reply,
                    };
                    let version = self.insert(&obj, &value, timeout.unwrap_or_default(), now);
                    self.set_tags(&obj, tags);
                    Reply::Added { version }
                }
                _ => Reply::NotFound,
            };
        };
        match op {
            Op::Create { .. } => Reply::AlreadyExists,
            Op::Put {
                value,
                timeout,
                lock_id,
                ..
            } => match o.permits(*lock_id, now) {
                Err(reply) => reply,
                Ok(()) => Reply::Updated {
                    version: self.write(&obj, value, Some(*timeout), now),
                },
            },
            Op::Update {
                value,
                timeout,
                expected_version,
                lock_id,
                unlock,
                ..
            } => {
                if let Err(reply) = o.permits(*lock_id, now) {
                    return reply;
                }
                if expected_version.is_some_and(|v| v != o.version) {
                    return Reply::VersionMismatch { current: o.version };
                }
                let version = self.write(&obj, value, *timeout, now);
                if *unlock && o.lock.is_some() {
                    self.objects.get_mut(&obj).unwrap().lock = None;
                    events.push(StoreEvent::LockFreed { obj });
                }
                Reply::Updated { version }
            }
            Op::Read { cached_version, .. } => o.read_reply(o.info(now), *cached_version),
            Op::ReadAndLock {
                cached_version,
                lease_ms,
                take_over_after_ms,
                ..
            } => {
                if let Some(lock) = o.lock {
                    let age = now - lock.acquired;
                    if take_over_after_ms.is_none_or(|limit| age < limit) {
                        return Reply::Locked {
                            lock_id: lock.id,
                            lock_age_ms: age,
                        };
                    }
                }
                let lease_ms = lease_ms.unwrap_or(DEFAULT_LEASE_MS);
                let lock = ModelLock {
                    id: self.next(),
                    acquired: now,
                    lease_ms,
                    lease_end: now + lease_ms,
                };
                let o = self.objects.get_mut(&obj).unwrap();
                o.lock = Some(lock);
                let reply = o.read_reply(o.info(now), *cached_version);
                o.uninitialized = false;
                reply
            }
            Op::Unlock { lock_id, .. } => {
                if o.lock.map(|l| l.id) != Some(*lock_id) {
                    return Reply::LockLost;
                }
                self.objects.get_mut(&obj).unwrap().lock = None;
                events.push(StoreEvent::LockFreed { obj });
                Reply::Unlocked
            }
            Op::RefreshLock { lock_id, .. } => match o.lock {
                Some(lock) if lock.id == *lock_id => {
                    let lease_end = now + lock.lease_ms;
                    self.objects.get_mut(&obj).unwrap().lock =
                        Some(ModelLock { lease_end, ..lock });
                    Reply::LockRefreshed
                }
                _ => Reply::LockLost,
            },
            Op::Remove { lock_id, .. } => match o.permits(*lock_id, now) {
                Err(reply) => reply,
                Ok(()) => {
                    self.objects.remove(&obj);
                    if o.lock.is_some() {
                        events.push(StoreEvent::LockFreed { obj });
                    }
                    Reply::Removed
                }
            },
            Op::Write {
                body,
                tags,
                timeout,
                lock_id,
                unlock,
                max_bytes,
                ..
            } => {
                if let Err(reply) = o.permits(*lock_id, now) {
                    return reply;
                }
                let value = match merged(&o.value, body, *max_bytes) {
                    Ok(value) => value,
                    Err(reply) => return reply,
                };
                let version = self.write(&obj, &value, *timeout, now);
                self.set_tags(&obj, tags);
                if *unlock && o.lock.is_some() {
                    self.objects.get_mut(&obj).unwrap().lock = None;
                    events.push(StoreEvent::LockFreed { obj });
                }
                Reply::Updated { version }
            }
            Op::RemoveTagged { tag, .. } => {
                if !o.tags.contains(tag) {
                    return Reply::NotFound;
                }
                self.objects.remove(&obj);
                events.push(StoreEvent::Revoked {
                    obj: obj.clone(),
                    value: o.value.clone(),
                    version: o.version,
                });
                if o.lock.is_some() {
                    events.push(StoreEvent::LockFreed { obj });
                }
                Reply::Removed
            }
            Op::ResetTimeout { timeout, .. } => {
                let o = self.objects.get_mut(&obj).unwrap();
                o.timeout = timeout.unwrap_or(o.timeout);
                o.last_write = now;
                Reply::TimeoutReset
            }
        }
    }

    fn tick(&mut self, now: Millis) -> Vec<StoreEvent> {
        let mut due: Vec<(Millis, ObjKey)> = self
            .objects
            .iter()
            .filter_map(|(k, o)| o.deadline().filter(|d| *d <= now).map(|d| (d, k.clone())))
            .collect();
        due.sort();
        let mut events = Vec::new();
        for (_, obj) in due {
            self.expire(&obj, &mut events);
        }
        for (obj, o) in &mut self.objects {
            if o.lock.is_some_and(|l| l.lease_end <= now) {
                o.lock = None;
                events.push(StoreEvent::LockFreed { obj: obj.clone() });
            }
        }
        events
    }
}

// ---------------------------------------------------------------- generated steps

/// One step: move the clock, then run an operation (or `tick` when `op` is `None`).
///
/// Lock ids and versions in a generated `op` are placeholders: a `Some` is replaced, when
/// the step runs, by `lock` or `version` resolved against what was handed out so far.
#[derive(Debug, Clone)]
struct Step {
    advance: Millis,
    op: Option<Op>,
    lock: IdPick,
    version: VersionPick,
}

/// A lock id to present.
#[derive(Debug, Clone)]
enum IdPick {
    /// The object's current lock, if any (else the newest id handed out).
    Current,
    /// One of the last few ids handed out, counting back from the newest.
    Issued(usize),
    /// Any small number: usually never handed out, sometimes a version.
    Raw(u64),
}

/// A version to present as cached or expected.
#[derive(Debug, Clone)]
enum VersionPick {
    Current,
    Raw(u64),
}

fn duration() -> impl Strategy<Value = Millis> {
    prop_oneof![
        1 => Just(0),
        2 => 1..5_000u64,
        2 => Just(60_000),
        2 => Just(90_000),
        3 => 1..250_000u64,
    ]
}

fn timeout() -> impl Strategy<Value = Timeout> {
    prop_oneof![
        2 => Just(Timeout::None),
        1 => duration().prop_map(|ms| Timeout::Sliding { ms }),
        1 => duration().prop_map(|ms| Timeout::Absolute { ms }),
    ]
}

fn obj() -> impl Strategy<Value = ObjKey> {
    (0..KEYS.len()).prop_map(key)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    vec(0..4u8, 0..4)
}

/// A placeholder: whether the field is present, resolved when the step runs.
fn some(probability: f64) -> impl Strategy<Value = Option<u64>> {
    option::weighted(probability, Just(0))
}

fn op() -> impl Strategy<Value = Op> {
    let create = (obj(), value(), timeout(), any::<bool>()).prop_map(|(obj, value, timeout, u)| {
        Op::Create {
            obj,
            value,
            timeout,
            uninitialized: u,
        }
    });
    // Most writes come without a lock id, as from most real clients.
    let put =
        (obj(), value(), timeout(), some(0.4)).prop_map(|(obj, value, timeout, lock_id)| Op::Put {
            obj,
            value,
            timeout,
            lock_id,
        });
    let update = (
        obj(),
        value(),
        option::of(timeout()),
        some(0.3),
        some(0.4),
        any::<bool>(),
    )
        .prop_map(
            |(obj, value, timeout, expected_version, lock_id, unlock)| Op::Update {
                obj,
                value,
                timeout,
                expected_version,
                lock_id,
                unlock,
            },
        );
    let read = (obj(), some(0.5)).prop_map(|(obj, cached_version)| Op::Read {
        obj,
        cached_version,
    });
    let lock = (
        obj(),
        some(0.3),
        option::of(duration()),
        option::of(duration()),
    )
        .prop_map(
            |(obj, cached_version, lease_ms, take_over_after_ms)| Op::ReadAndLock {
                obj,
                cached_version,
                lease_ms,
                wait_ms: 0,
                take_over_after_ms,
            },
        );
    let tags = option::of(vec(
        prop::sample::select(&TAGS[..]).prop_map(String::from),
        0..3,
    ));
    let body = prop_oneof![
        1 => Just(WriteBody::Keep),
        2 => value().prop_map(WriteBody::Whole),
        3 => (any::<bool>(), vec(0..3u8, 0..2), vec((0..3u8, value()), 0..3)).prop_map(
            |(clear, remove, set)| WriteBody::Items(ItemChanges {
                clear,
                remove: remove.into_iter().map(|n| format!("i{n}")).collect(),
                set: set
                    .into_iter()
                    .map(|(n, value)| Item { name: format!("i{n}"), value })
                    .collect(),
            })
        ),
    ];
    let write = (
        obj(),
        body,
        tags,
        option::of(timeout()),
        some(0.4),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![3 => Just(1u64 << 20), 1 => 0..40u64],
    )
        .prop_map(
            |(obj, body, tags, timeout, lock_id, unlock, create, max_bytes)| Op::Write {
                obj,
                body,
                tags,
                timeout,
                lock_id,
                unlock,
                create,
                max_bytes,
            },
        );
    let remove_tagged =
        (obj(), prop::sample::select(&TAGS[..])).prop_map(|(obj, tag)| Op::RemoveTagged {
            obj,
            tag: tag.into(),
        });
    prop_oneof![
        4 => write,
        1 => remove_tagged,
        3 => create,
        3 => put,
        3 => update,
        3 => read,
        4 => lock,
        3 => obj().prop_map(|obj| Op::Unlock { obj, lock_id: 0 }),
        2 => obj().prop_map(|obj| Op::RefreshLock { obj, lock_id: 0 }),
        2 => (obj(), some(0.4)).prop_map(|(obj, lock_id)| Op::Remove { obj, lock_id }),
        1 => (obj(), option::of(timeout())).prop_map(|(obj, timeout)| Op::ResetTimeout { obj, timeout }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    // Exact lease and take-over lengths too, so the boundaries (`<=` vs `<`) get hit.
    let advance = prop_oneof![
        4 => Just(0u64),
        4 => 0..2_000u64,
        1 => prop_oneof![Just(60_000u64), Just(90_000)],
        2 => 0..200_000u64,
    ];
    let lock = prop_oneof![
        4 => Just(IdPick::Current),
        3 => (0..4usize).prop_map(IdPick::Issued),
        1 => (0..40u64).prop_map(IdPick::Raw),
    ];
    let version = prop_oneof![
        3 => Just(VersionPick::Current),
        1 => (0..40u64).prop_map(VersionPick::Raw),
    ];
    let op = prop_oneof![12 => op().prop_map(Some), 1 => Just(None)];
    (advance, op, lock, version).prop_map(|(advance, op, lock, version)| Step {
        advance,
        op,
        lock,
        version,
    })
}

/// Fills a generated operation's placeholders from the state both sides share.
fn resolve(step: &Step, model: &Model, issued: &[u64]) -> Option<Op> {
    let mut op = step.op.clone()?;
    let current = model.objects.get(op.obj());
    let newest = issued.last().copied().unwrap_or(0);
    let id = match step.lock {
        IdPick::Current => current.and_then(|o| o.lock).map_or(newest, |l| l.id),
        IdPick::Issued(back) if !issued.is_empty() => {
            issued[issued.len() - 1 - back % issued.len()]
        }
        IdPick::Issued(_) => 0,
        IdPick::Raw(id) => id,
    };
    let version = match step.version {
        VersionPick::Current => current.map_or(0, |o| o.version),
        VersionPick::Raw(v) => v,
    };
    let fill = |slot: &mut Option<u64>, with: u64| *slot = slot.map(|_| with);
    match &mut op {
        Op::Create { .. } | Op::ResetTimeout { .. } | Op::RemoveTagged { .. } => {}
        Op::Put { lock_id, .. } | Op::Remove { lock_id, .. } | Op::Write { lock_id, .. } => {
            fill(lock_id, id)
        }
        Op::Update {
            lock_id,
            expected_version,
            ..
        } => {
            fill(lock_id, id);
            fill(expected_version, version);
        }
        Op::Read { cached_version, .. } | Op::ReadAndLock { cached_version, .. } => {
            fill(cached_version, version)
        }
        Op::Unlock { lock_id, .. } | Op::RefreshLock { lock_id, .. } => *lock_id = id,
    }
    Some(op)
}

/// Events as sortable tuples: `(kind, obj, value, version)`.
fn sorted(events: &[StoreEvent]) -> Vec<(u8, ObjKey, Vec<u8>, u64)> {
    let mut flat: Vec<_> = events
        .iter()
        .map(|e| match e {
            StoreEvent::Expired {
                obj,
                value,
                version,
            } => (0, obj.clone(), value.clone(), *version),
            StoreEvent::LockFreed { obj } => (1, obj.clone(), Vec::new(), 0),
            StoreEvent::Evicted {
                obj,
                value,
                version,
            } => (2, obj.clone(), value.clone(), *version),
            StoreEvent::Revoked {
                obj,
                value,
                version,
            } => (3, obj.clone(), value.clone(), *version),
        })
        .collect();
    flat.sort();
    flat
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut store = Store::new(StoreConfig::default());
    let mut model = Model::default();
    let mut issued: Vec<u64> = Vec::new();
    let mut now: Millis = 1_000_000;
    for (i, step) in steps.iter().enumerate() {
        now += step.advance;
        let at = format!("step {i} at {now}");
        if let Some(op) = resolve(step, &model, &issued) {
            let got = store.apply(&op, now);
            let (reply, events) = model.apply(&op, now);
            prop_assert_eq!(&got.reply, &reply, "{}: {:?}", at, op);
            prop_assert_eq!(&got.events, &events, "{}: {:?}", at, op);
            if let (Op::ReadAndLock { .. }, Some(info)) = (&op, read_info(&reply)) {
                issued.extend(info.lock_id);
            }
        } else {
            let got = store.tick(now);
            let deadline = |e: &StoreEvent| match e {
                StoreEvent::Expired { obj, .. } => model.objects.get(obj)?.deadline(),
                StoreEvent::LockFreed { .. }
                | StoreEvent::Evicted { .. }
                | StoreEvent::Revoked { .. } => None,
            };
            let order: Vec<Millis> = got.iter().filter_map(deadline).collect();
            prop_assert!(
                order.is_sorted(),
                "{}: out of deadline order: {:?}",
                at,
                got
            );
            let want = model.tick(now);
            prop_assert_eq!(sorted(&got), sorted(&want), "{}: tick", at);
        }
        prop_assert_eq!(store.stats(), model.stats(), "{}", at);
        prop_assert_eq!(store.next_deadline(), model.next_deadline(), "{}", at);
        for obj in (0..KEYS.len()).map(key) {
            let (got, want) = (store.lock_of(&obj, now), model.lock_of(&obj, now));
            prop_assert_eq!(got, want, "{}: lock of {:?}", at, obj);
        }
        for (namespace, tag) in ["a", "b"].into_iter().flat_map(|n| TAGS.map(|t| (n, t))) {
            let (got, want) = (
                store.tagged(namespace, tag, now, None, usize::MAX).0,
                model.tagged(namespace, tag, now),
            );
            prop_assert_eq!(&got, &want, "{}: tagged {}/{}", at, namespace, tag);
            // Page by page, a key per page: the same keys.
            let (mut paged, mut after): (Vec<Vec<u8>>, Option<Vec<u8>>) = (Vec::new(), None);
            for _ in 0..=KEYS.len() {
                let (page, more) = store.tagged(namespace, tag, now, after.as_deref(), 1);
                prop_assert!(page.len() <= 1);
                paged.extend(page);
                after = paged.last().cloned();
                if !more {
                    break;
                }
            }
            prop_assert_eq!(paged, want, "{}: tagged {}/{} in pages", at, namespace, tag);
        }
    }
    Ok(())
}

fn read_info(reply: &Reply) -> Option<ObjectInfo> {
    match reply {
        Reply::Retrieved { info, .. } | Reply::NotModified { info } => Some(*info),
        _ => None,
    }
}

proptest! {
    // No regression files: a failure prints its shrunk steps, to paste into a unit test.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn store_agrees_with_the_reference_model(steps in vec(step(), 1..80)) {
        run(&steps)?;
    }
}
