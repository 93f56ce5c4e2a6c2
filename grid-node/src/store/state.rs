//! The replicated state of one partition and the rules that change it.
//!
//! Rules, in one place:
//! - **Versions and lock ids** come from one counter per partition, so a version is never
//!   reused (not even after remove and re-create: a near cache can trust it) and lock ids
//!   of an object strictly increase (a fencing token).
//! - **Expiry.** `Sliding` counts from the last access: any operation that finds the object,
//!   even one that is refused.
//!   `Absolute` counts from the last write or timeout reset. An object past its deadline is
//!   gone for every operation at once (lazily), and `tick` sweeps the rest in deadline order.
//! - **Locks.** A lock has an id, an acquire time and a lease. Past its lease it frees
//!   itself. Writes and removes of a locked object need the holder's lock id: without one
//!   the reply is `Locked{lock_id, lock_age}`, with a stale one `LockLost`. A read-and-lock
//!   may take over a lock at least `take_over_after_ms` old. An update checks the lock
//!   before `expected_version`: a caller without the lock learns nothing about versions.
//! - **Uninitialized mark.** Reported once by the first read-and-lock, then cleared; any
//!   write clears it too (the item now has content).
//! - Every time a lock frees (unlock, lease end, removal, expiry) a [`StoreEvent::LockFreed`]
//!   comes out, so the runtime can hand the lock to the next waiter at once.

use std::borrow::Cow;
use std::collections::HashMap;

use grid_proto::{Millis, ObjKey, ObjectInfo, Op, Reply, Timeout};

use super::expiry::DeadlineIndex;

mod backup;
mod geo;
mod locks;
mod snapshot;
mod tags;
mod write;
pub use geo::GeoRole;
use geo::Transfers;

/// Settings of the state machine; identical on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Lease of a lock when the request names none. Default 90 s (ScaleOut's default).
    /// Client requests reach the log with the lease of the node that took them filled in
    /// (`Op::as_proposed`), so this serves only operations proposed without one.
    pub default_lease_ms: Millis,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            default_lease_ms: 90_000,
        }
    }
}

/// Something the runtime must act on, produced by `apply` or `tick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The object timed out and is gone; carries its final bytes for `Session_End`.
    Expired {
        /// The object.
        obj: ObjKey,
        /// Its last bytes.
        value: Vec<u8>,
        /// Its last version.
        version: u64,
    },
    /// The object was evicted because its node ran short of memory (see [`Store::evict`]).
    Evicted {
        /// The object.
        obj: ObjKey,
        /// Its last bytes.
        value: Vec<u8>,
        /// Its last version.
        version: u64,
    },
    /// The object was removed by `RemoveTagged`; carries its final bytes for `Session_End`.
    Revoked {
        /// The object.
        obj: ObjKey,
        /// Its last bytes.
        value: Vec<u8>,
        /// Its last version.
        version: u64,
    },
    /// The object's lock was released, lapsed, or went with the object: hand it on.
    LockFreed {
        /// The object.
        obj: ObjKey,
    },
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the caller is told.
    pub reply: Reply,
    /// What the runtime must act on.
    pub events: Vec<StoreEvent>,
}

/// Counters over the whole partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects held.
    pub objects: u64,
    /// Sum of value lengths.
    pub value_bytes: u64,
    /// Objects locked now.
    pub locked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Lock {
    id: u64,
    acquired: Millis,
    /// Length of the lease; a refresh restarts it.
    lease_ms: Millis,
    /// When the lock frees itself; the key of the lease index.
    lease_end: Millis,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    version: u64,
    timeout: Timeout,
    last_access: Millis,
    /// Start of an absolute timeout: the last write or reset.
    timeout_start: Millis,
    lock: Option<Lock>,
    uninitialized: bool,
    /// Deadline as recorded in the expiry index.
    expires_at: Option<Millis>,
    /// Whether this site holds the primary.
    role: GeoRole,
}

impl Entry {
    fn deadline(&self) -> Option<Millis> {
        match self.timeout {
            Timeout::None => None,
            Timeout::Sliding { ms } => Some(self.last_access.saturating_add(ms)),
            Timeout::Absolute { ms } => Some(self.timeout_start.saturating_add(ms)),
        }
    }

    fn info(&self, now: Millis) -> ObjectInfo {
        ObjectInfo {
            version: self.version,
            lock_id: self.lock.map(|l| l.id),
            lock_age_ms: self.lock.map_or(0, |l| now.saturating_sub(l.acquired)),
            uninitialized: self.uninitialized,
            timeout: self.timeout,
        }
    }

    fn locked_reply(lock: Lock, now: Millis) -> Reply {
        Reply::Locked {
            lock_id: lock.id,
            lock_age_ms: now.saturating_sub(lock.acquired),
        }
    }

    /// Whether a caller presenting `lock_id` may change this object.
    fn check_lock(&self, lock_id: Option<u64>, now: Millis) -> Result<(), Reply> {
        match (self.lock, lock_id) {
            (None, None) => Ok(()),
            (Some(lock), Some(id)) if lock.id == id => Ok(()),
            (Some(lock), None) => Err(Self::locked_reply(lock, now)),
            // A lock id that is not the current lock: it lapsed or was taken over.
            (_, Some(_)) => Err(Reply::LockLost),
        }
    }
}

/// One partition's objects. See the module docs for the rules.
#[derive(Debug, Default, Clone)]
pub struct Store {
    config: StoreConfig,
    objects: HashMap<ObjKey, Entry>,
    expiry: DeadlineIndex,
    leases: DeadlineIndex,
    /// Last version or lock id handed out.
    seq: u64,
    value_bytes: u64,
    /// Outcomes of migrations into this partition.
    transfers: Transfers,
    tags: tags::TagIndex,
}

impl Store {
    /// An empty partition.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Counters for status and metrics.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            objects: self.objects.len() as u64,
            value_bytes: self.value_bytes,
            locked: self.leases.len() as u64,
        }
    }

    /// The earliest time at which `tick` has work (an expiry or a lease end).
    pub fn next_deadline(&self) -> Option<Millis> {
        match (self.expiry.next_deadline(), self.leases.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Brings one object up to `now` (expiry, lease end) and reports what that freed.
    pub fn settle_object(&mut self, obj: &ObjKey, now: Millis) -> Vec<StoreEvent> {
        let mut events = Vec::new();
        self.settle(obj, now, &mut events);
        events
    }

    /// The current lock of `obj` as `(lock_id, lock_age_ms)`, if it is locked.
    pub fn lock_of(&self, obj: &ObjKey, now: Millis) -> Option<(u64, Millis)> {
        let lock = self.objects.get(obj)?.lock?;
        Some((lock.id, now.saturating_sub(lock.acquired)))
    }

    /// Applies one operation at time `now` (the deciding node's clock).
    ///
    /// The operation must already be validated (key and value bounds); this is the state
    /// machine, not the edge.
    pub fn apply(&mut self, op: &Op, now: Millis) -> Applied {
        let mut events = Vec::new();
        self.settle(op.obj(), now, &mut events);
        if let Some(reply) = self.geo_gate(op.obj()) {
            return Applied { reply, events };
        }
        // Any operation that finds the object is an access, whether or not it then
        // succeeds (a refused write or a stale unlock still shows the object is in use).
        self.touch(op.obj(), now);
        let reply = match op {
            Op::Create {
                obj,
                value,
                timeout,
                uninitialized,
            } => self.create(obj, value, *timeout, *uninitialized, now),
            Op::Put {
                obj,
                value,
                timeout,
                lock_id,
            } => self.put(obj, value, *timeout, *lock_id, now),
            Op::Update {
                obj,
                value,
                timeout,
                expected_version,
                lock_id,
                unlock,
            } => self.update(
                obj,
                value,
                *timeout,
                *expected_version,
                *lock_id,
                *unlock,
                now,
                &mut events,
            ),
            Op::Read {
                obj,
                cached_version,
            } => self.read(obj, *cached_version, now),
            Op::ReadAndLock {
                obj,
                cached_version,
                lease_ms,
                take_over_after_ms,
                wait_ms: _,
            } => self.read_and_lock(obj, *cached_version, *lease_ms, *take_over_after_ms, now),
            Op::Unlock { obj, lock_id } => self.unlock(obj, *lock_id, &mut events),
            Op::RefreshLock { obj, lock_id } => self.refresh_lock(obj, *lock_id, now),
            Op::Remove { obj, lock_id } => self.remove(obj, *lock_id, now, &mut events),
            Op::ResetTimeout { obj, timeout } => self.reset_timeout(obj, *timeout, now),
            Op::Write {
                obj,
                body,
                tags,
                timeout,
                lock_id,
                unlock,
                create,
                max_bytes,
            } => self.write(
                write::Write {
                    obj,
                    body,
                    tags: tags.as_ref(),
                    timeout: *timeout,
                    lock_id: *lock_id,
                    unlock: *unlock,
                    create: *create,
                    max_bytes: *max_bytes as usize,
                },
                now,
                &mut events,
            ),
            Op::RemoveTagged { obj, tag } => self.remove_tagged(obj, tag, &mut events),
        };
        Applied { reply, events }
    }

    /// Expires every object and lock lease due at or before `now`, in deadline order.
    pub fn tick(&mut self, now: Millis) -> Vec<StoreEvent> {
        let mut events = Vec::new();
        while let Some((_, obj)) = self.expiry.pop_due(now) {
            if let Some(entry) = self.objects.get_mut(&obj) {
                entry.expires_at = None;
            }
            self.expire(&obj, &mut events);
        }
        while let Some((_, obj)) = self.leases.pop_due(now) {
            if let Some(entry) = self.objects.get_mut(&obj) {
                if entry.lock.take().is_some() {
                    events.push(StoreEvent::LockFreed { obj });
                }
            }
        }
        events
    }

    /// Brings one object up to `now` before an operation looks at it: an object past its
    /// deadline is expired, a lock past its lease is freed.
    fn settle(&mut self, obj: &ObjKey, now: Millis, events: &mut Vec<StoreEvent>) {
        let Some(entry) = self.objects.get(obj) else {
            return;
        };
        if entry.expires_at.is_some_and(|at| at <= now) {
            self.expire(obj, events);
            return;
        }
        if entry.lock.is_some_and(|l| l.lease_end <= now) {
            self.set_lock(obj, None);
            events.push(StoreEvent::LockFreed { obj: obj.clone() });
        }
    }

    fn expire(&mut self, obj: &ObjKey, events: &mut Vec<StoreEvent>) {
        let role = self.objects.get(obj).map(|e| e.role.clone());
        match role {
            // Held until the hand-over resolves, so no event fires for an object that
            // lives on at the destination.
            Some(GeoRole::Migrating { .. }) => {
                if let Some(at) = self.objects.get_mut(obj).and_then(|e| e.expires_at.take()) {
                    self.expiry.remove(at, obj);
                }
                return;
            }
            // A proxy goes silently: the primary's site reports the end.
            Some(GeoRole::Proxy { .. }) => {
                self.take(obj);
                return;
            }
            _ => {}
        }
        self.end(obj, events, |obj, value, version| StoreEvent::Expired {
            obj,
            value,
            version,
        });
    }

    /// Removes an object for good, reporting its end (`ended`, with its final bytes) and
    /// the lock it held.
    fn end(
        &mut self,
        obj: &ObjKey,
        events: &mut Vec<StoreEvent>,
        ended: fn(ObjKey, Vec<u8>, u64) -> StoreEvent,
    ) {
        if let Some(entry) = self.take(obj) {
            let was_locked = entry.lock.is_some();
            events.push(ended(obj.clone(), entry.value, entry.version));
            if was_locked {
                events.push(StoreEvent::LockFreed { obj: obj.clone() });
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes an object and its index entries.
    fn take(&mut self, obj: &ObjKey) -> Option<Entry> {
        let entry = self.objects.remove(obj)?;
        if let Some(at) = entry.expires_at {
            self.expiry.remove(at, obj);
        }
        if let Some(lock) = entry.lock {
            self.leases.remove(lock.lease_end, obj);
        }
        self.tags.forget(obj);
        self.value_bytes -= entry.value.len() as u64;
        Some(entry)
    }

    /// Re-files an object's expiry deadline after its timeout inputs changed.
    fn refile_expiry(&mut self, obj: &ObjKey) {
        let Some(entry) = self.objects.get_mut(obj) else {
            return;
        };
        let new = entry.deadline();
        if new == entry.expires_at {
            return;
        }
        if let Some(old) = entry.expires_at {
            self.expiry.remove(old, obj);
        }
        entry.expires_at = new;
        if let Some(at) = new {
            self.expiry.insert(at, obj.clone());
        }
    }

    /// Sets or clears an object's lock, keeping the lease index in step.
    fn set_lock(&mut self, obj: &ObjKey, lock: Option<Lock>) {
        let Some(entry) = self.objects.get_mut(obj) else {
            return;
        };
        if let Some(old) = entry.lock {
            self.leases.remove(old.lease_end, obj);
        }
        entry.lock = lock;
        if let Some(lock) = lock {
            self.leases.insert(lock.lease_end, obj.clone());
        }
    }

    /// Records an access at time `at` seen outside the log (a lock-free read on the
    /// leader), if the object still exists and was not due by then.
    pub fn touch_existing(&mut self, obj: &ObjKey, at: Millis) {
        let due = self
            .objects
            .get(obj)
            .and_then(|e| e.expires_at)
            .is_some_and(|deadline| deadline <= at);
        if !due {
            self.touch(obj, at);
        }
    }

    /// Answers a read without changing anything: what `Op::Read` would reply at `now`,
    /// except that the access is recorded separately (batched `touch_existing`).
    pub fn peek(&self, obj: &ObjKey, cached_version: Option<u64>, now: Millis) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        if entry.expires_at.is_some_and(|at| at <= now) {
            return Reply::NotFound;
        }
        if let Some(reply) = self.geo_gate(obj) {
            return reply;
        }
        let mut info = entry.info(now);
        if entry.lock.is_some_and(|l| l.lease_end <= now) {
            info.lock_id = None;
            info.lock_age_ms = 0;
        }
        Self::retrieved(entry, info, cached_version)
    }

    /// Records an access (for sliding expiry).
    fn touch(&mut self, obj: &ObjKey, now: Millis) {
        if let Some(entry) = self.objects.get_mut(obj) {
            entry.last_access = entry.last_access.max(now);
            self.refile_expiry(obj);
        }
    }

    fn insert_new(
        &mut self,
        obj: &ObjKey,
        value: &[u8],
        timeout: Timeout,
        uninitialized: bool,
        now: Millis,
    ) -> u64 {
        let version = self.next_seq();
        self.value_bytes += value.len() as u64;
        self.objects.insert(
            obj.clone(),
            Entry {
                value: value.to_vec(),
                version,
                timeout,
                last_access: now,
                timeout_start: now,
                lock: None,
                uninitialized,
                expires_at: None,
                role: GeoRole::Primary,
            },
        );
        self.refile_expiry(obj);
        version
    }

    /// Replaces an existing object's bytes and bumps its version.
    fn overwrite(
        &mut self,
        obj: &ObjKey,
        value: &[u8],
        timeout: Option<Timeout>,
        now: Millis,
    ) -> u64 {
        self.replace_value(obj, Cow::Borrowed(value), timeout, now)
    }

    /// [`Store::overwrite`] with bytes that may be owned already (an item merge's
    /// result), which then take the old bytes' place without a copy.
    fn replace_value(
        &mut self,
        obj: &ObjKey,
        value: Cow<'_, [u8]>,
        timeout: Option<Timeout>,
        now: Millis,
    ) -> u64 {
        let version = self.next_seq();
        let Some(entry) = self.objects.get_mut(obj) else {
            return version;
        };
        self.value_bytes = self.value_bytes - entry.value.len() as u64 + value.len() as u64;
        match value {
            Cow::Owned(bytes) => entry.value = bytes,
            Cow::Borrowed(bytes) => {
                entry.value.clear();
                entry.value.extend_from_slice(bytes);
            }
        }
        entry.version = version;
        if let Some(t) = timeout {
            entry.timeout = t;
        }
        entry.timeout_start = now;
        entry.last_access = entry.last_access.max(now);
        entry.uninitialized = false;
        self.refile_expiry(obj);
        version
    }

    fn create(
        &mut self,
        obj: &ObjKey,
        value: &[u8],
        timeout: Timeout,
        uninitialized: bool,
        now: Millis,
    ) -> Reply {
        if self.objects.contains_key(obj) {
            return Reply::AlreadyExists;
        }
        let version = self.insert_new(obj, value, timeout, uninitialized, now);
        Reply::Added { version }
    }

    fn put(
        &mut self,
        obj: &ObjKey,
        value: &[u8],
        timeout: Timeout,
        lock_id: Option<u64>,
        now: Millis,
    ) -> Reply {
        match self.objects.get(obj) {
            None if lock_id.is_some() => Reply::LockLost,
            None => {
                let version = self.insert_new(obj, value, timeout, false, now);
                Reply::Added { version }
            }
            Some(entry) => {
                if let Err(reply) = entry.check_lock(lock_id, now) {
                    return reply;
                }
                let version = self.overwrite(obj, value, Some(timeout), now);
                Reply::Updated { version }
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // reason: mirrors the fields of Op::Update
    fn update(
        &mut self,
        obj: &ObjKey,
        value: &[u8],
        timeout: Option<Timeout>,
        expected_version: Option<u64>,
        lock_id: Option<u64>,
        unlock: bool,
        now: Millis,
        events: &mut Vec<StoreEvent>,
    ) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        if let Err(reply) = entry.check_lock(lock_id, now) {
            return reply;
        }
        if let Some(expected) = expected_version {
            if expected != entry.version {
                return Reply::VersionMismatch {
                    current: entry.version,
                };
            }
        }
        let was_locked = entry.lock.is_some();
        let version = self.overwrite(obj, value, timeout, now);
        if unlock && was_locked {
            self.set_lock(obj, None);
            events.push(StoreEvent::LockFreed { obj: obj.clone() });
        }
        Reply::Updated { version }
    }

    fn retrieved(entry: &Entry, info: ObjectInfo, cached_version: Option<u64>) -> Reply {
        if cached_version == Some(entry.version) {
            Reply::NotModified { info }
        } else {
            Reply::Retrieved {
                value: entry.value.clone(),
                info,
            }
        }
    }

    fn read(&mut self, obj: &ObjKey, cached_version: Option<u64>, now: Millis) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        Self::retrieved(entry, entry.info(now), cached_version)
    }

    fn remove(
        &mut self,
        obj: &ObjKey,
        lock_id: Option<u64>,
        now: Millis,
        events: &mut Vec<StoreEvent>,
    ) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        if let Err(reply) = entry.check_lock(lock_id, now) {
            return reply;
        }
        if let Some(entry) = self.take(obj) {
            if entry.lock.is_some() {
                events.push(StoreEvent::LockFreed { obj: obj.clone() });
            }
        }
        Reply::Removed
    }

    fn reset_timeout(&mut self, obj: &ObjKey, timeout: Option<Timeout>, now: Millis) -> Reply {
        let Some(entry) = self.objects.get_mut(obj) else {
            return Reply::NotFound;
        };
        if let Some(t) = timeout {
            entry.timeout = t;
        }
        entry.timeout_start = now;
        entry.last_access = entry.last_access.max(now);
        self.refile_expiry(obj);
        Reply::TimeoutReset
    }
}
