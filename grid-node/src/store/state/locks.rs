//! The lock operations of the store: read-and-lock (with take-over), unlock and lease
//! refresh; and eviction for low memory. Rules are in the parent module's docs.

use grid_proto::{Millis, ObjKey, Reply};

use super::{Entry, GeoRole, Lock, Store, StoreEvent};

impl Store {
    /// Evicts unlocked objects, least recently accessed first, until at least `bytes` of
    /// values are freed or none is left to evict. Locked objects stay: their holders are
    /// about to write them back.
    pub fn evict(&mut self, bytes: u64) -> Vec<StoreEvent> {
        let mut candidates: Vec<(Millis, &ObjKey, u64)> = self
            .objects
            .iter()
            .filter(|(_, e)| e.lock.is_none() && e.role == GeoRole::Primary)
            .map(|(k, e)| (e.last_access, k, e.value.len() as u64))
            .collect();
        // Ties broken by key, so every replica picks the same objects.
        candidates.sort_unstable();
        let mut freed = 0u64;
        let chosen: Vec<ObjKey> = candidates
            .into_iter()
            .take_while(|(_, _, len)| {
                let more = freed < bytes;
                freed += len;
                more
            })
            .map(|(_, k, _)| k.clone())
            .collect();
        let mut events = Vec::with_capacity(chosen.len());
        for obj in chosen {
            if let Some(entry) = self.take(&obj) {
                events.push(StoreEvent::Evicted {
                    obj,
                    value: entry.value,
                    version: entry.version,
                });
            }
        }
        events
    }

    pub(super) fn read_and_lock(
        &mut self,
        obj: &ObjKey,
        cached_version: Option<u64>,
        lease_ms: Option<Millis>,
        take_over_after_ms: Option<Millis>,
        now: Millis,
    ) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        if let Some(lock) = entry.lock {
            let age = now.saturating_sub(lock.acquired);
            if take_over_after_ms.is_none_or(|limit| age < limit) {
                return Entry::locked_reply(lock, now);
            }
        }
        let lease_ms = lease_ms.unwrap_or(self.config.default_lease_ms);
        let lock = Lock {
            id: self.next_seq(),
            acquired: now,
            lease_ms,
            lease_end: now.saturating_add(lease_ms),
        };
        self.set_lock(obj, Some(lock));
        let Some(entry) = self.objects.get_mut(obj) else {
            return Reply::NotFound;
        };
        // Report the uninitialized mark once, to the first locker, then clear it.
        let info = entry.info(now);
        entry.uninitialized = false;
        Self::retrieved(entry, info, cached_version)
    }

    pub(super) fn unlock(
        &mut self,
        obj: &ObjKey,
        lock_id: u64,
        events: &mut Vec<StoreEvent>,
    ) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        if entry.lock.map(|l| l.id) != Some(lock_id) {
            return Reply::LockLost;
        }
        self.set_lock(obj, None);
        events.push(StoreEvent::LockFreed { obj: obj.clone() });
        Reply::Unlocked
    }

    pub(super) fn refresh_lock(&mut self, obj: &ObjKey, lock_id: u64, now: Millis) -> Reply {
        let Some(entry) = self.objects.get(obj) else {
            return Reply::NotFound;
        };
        let Some(lock) = entry.lock.filter(|l| l.id == lock_id) else {
            return Reply::LockLost;
        };
        // The lease restarts now; the acquire time, and so the lock age, stays.
        let refreshed = Lock {
            lease_end: now.saturating_add(lock.lease_ms),
            ..lock
        };
        self.set_lock(obj, Some(refreshed));
        Reply::LockRefreshed
    }
}
