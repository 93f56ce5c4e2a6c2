//! The client's near cache: recently read or written objects, kept by version, bounded by
//! object count (`LRU`) or bytes (`LRU-MaxMemory`), least recently used out first (moka's
//! LRU policy).
//!
//! **Strictly coherent.** A cached copy is never returned on its own authority: every
//! read sends the cached version and the partition leader answers `NotModified` (no
//! bytes) or the current bytes. What the cache saves is the payload, not the round trip.
//! That holds across failovers and reconnects without clearing anything, because a
//! version is never reused in a partition (not even after remove and re-create): a
//! `(version, bytes)` pair, once true, stays true, and the leader alone says which
//! version is current. Writes, removes and events seen by this client update or drop
//! their copies, so the next read is a `NotModified`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grid_proto::ObjKey;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::connstr::NearCacheConfig;

/// Estimated bookkeeping per entry beyond its key and value, for the byte bound.
const ENTRY_OVERHEAD: usize = 64;

/// A cached object: its bytes at one version.
#[derive(Debug)]
pub struct Cached {
    /// The version these bytes are.
    pub version: u64,
    /// The bytes.
    pub value: Vec<u8>,
}

/// Near-cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered with cached bytes.
    pub hits: u64,
    /// Reads of objects not cached.
    pub misses: u64,
    /// Reads the node answered `NotModified` (in the strict mode, every hit).
    pub not_modified: u64,
    /// Reads whose cached copy was outdated; the node sent the new bytes.
    pub refreshed: u64,
    /// Objects cached now.
    pub entries: u64,
    /// What the bound counts now: objects (`LRU`) or bytes (`LRU-MaxMemory`).
    pub weighted_size: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    not_modified: AtomicU64,
    refreshed: AtomicU64,
}

/// How a cached read went, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Nothing was cached.
    Miss,
    /// The cached copy was current.
    NotModified,
    /// The cached copy was outdated.
    Refreshed,
}

/// The near cache; a disabled one caches nothing and counts nothing.
#[derive(Debug)]
pub struct NearCache {
    cache: Option<Cache<ObjKey, Arc<Cached>>>,
    counters: Counters,
}

fn weight(key: &ObjKey, value: &Cached) -> u32 {
    let bytes = key.namespace.len() + key.key.len() + value.value.len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl NearCache {
    /// A cache with the given bound.
    pub fn new(config: NearCacheConfig) -> Self {
        let builder = Cache::builder().eviction_policy(EvictionPolicy::lru());
        let cache = match config {
            NearCacheConfig::Off => None,
            NearCacheConfig::Lru { max_objects } => Some(builder.max_capacity(max_objects).build()),
            NearCacheConfig::LruMaxMemory { max_bytes } => Some(
                builder
                    .max_capacity(max_bytes)
                    .weigher(|k: &ObjKey, v: &Arc<Cached>| weight(k, v))
                    .build(),
            ),
        };
        Self {
            cache,
            counters: Counters::default(),
        }
    }

    /// True when caching.
    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The cached copy of `obj`, if any (and marks it recently used).
    pub fn get(&self, obj: &ObjKey) -> Option<Arc<Cached>> {
        self.cache.as_ref()?.get(obj)
    }

    /// Records `obj` at `version` with these bytes.
    pub fn put(&self, obj: ObjKey, version: u64, value: Vec<u8>) {
        if let Some(cache) = &self.cache {
            cache.insert(obj, Arc::new(Cached { version, value }));
        }
    }

    /// Drops the copy of `obj` (removed, expired, evicted, or of unknown state).
    pub fn invalidate(&self, obj: &ObjKey) {
        if let Some(cache) = &self.cache {
            cache.invalidate(obj);
        }
    }

    /// Counts one cached read.
    pub fn count(&self, outcome: ReadOutcome) {
        if self.cache.is_none() {
            return;
        }
        let c = &self.counters;
        let counters: &[&AtomicU64] = match outcome {
            ReadOutcome::Miss => &[&c.misses],
            ReadOutcome::NotModified => &[&c.hits, &c.not_modified],
            ReadOutcome::Refreshed => &[&c.refreshed],
        };
        for counter in counters {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters and size now. Pending evictions are applied first, so the size is exact.
    pub fn stats(&self) -> CacheStats {
        let (entries, weighted_size) = match &self.cache {
            Some(cache) => {
                cache.run_pending_tasks();
                (cache.entry_count(), cache.weighted_size())
            }
            None => (0, 0),
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.counters.hits),
            misses: get(&self.counters.misses),
            not_modified: get(&self.counters.not_modified),
            refreshed: get(&self.counters.refreshed),
            entries,
            weighted_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ObjKey {
        ObjKey::new("ns", k)
    }

    fn cached(cache: &NearCache) -> Vec<String> {
        let mut keys: Vec<String> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .filter(|k| cache.get(&key(k)).is_some())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    fn settle(cache: &NearCache) {
        if let Some(c) = &cache.cache {
            c.run_pending_tasks();
        }
    }

    #[test]
    fn count_bound_evicts_the_least_recently_used() {
        let cache = NearCache::new(NearCacheConfig::Lru { max_objects: 3 });
        for k in ["a", "b", "c"] {
            cache.put(key(k), 1, vec![0; 10]);
            settle(&cache);
        }
        // "a" is used, so "b" is now the least recently used.
        assert!(cache.get(&key("a")).is_some());
        settle(&cache);
        cache.put(key("d"), 1, vec![0; 10]);
        settle(&cache);
        assert_eq!(cache.stats().entries, 3);
        assert_eq!(
            ["a", "b", "c", "d"].map(|k| cache.cache.as_ref().unwrap().contains_key(&key(k))),
            [true, false, true, true]
        );
    }

    #[test]
    fn byte_bound_counts_value_and_key_bytes() {
        // Room for three 1000-byte objects with their overhead, not four.
        let per_entry = 1000 + 2 + 1 + ENTRY_OVERHEAD as u64;
        let cache = NearCache::new(NearCacheConfig::LruMaxMemory {
            max_bytes: per_entry * 3 + per_entry / 2,
        });
        for k in ["a", "b", "c", "d"] {
            cache.put(key(k), 1, vec![0; 1000]);
            settle(&cache);
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 3, "{stats:?}");
        assert_eq!(stats.weighted_size, per_entry * 3);
        // A large object pushes out several small ones.
        cache.put(key("e"), 1, vec![0; 2000]);
        settle(&cache);
        assert!(cache.stats().weighted_size <= per_entry * 3 + per_entry / 2);
        assert!(cached(&cache).contains(&"e".to_string()));
    }

    #[test]
    fn invalidate_and_replace() {
        let cache = NearCache::new(NearCacheConfig::default());
        cache.put(key("a"), 1, b"one".to_vec());
        cache.put(key("a"), 2, b"two".to_vec());
        let got = cache.get(&key("a")).unwrap();
        assert_eq!((got.version, got.value.as_slice()), (2, &b"two"[..]));
        cache.invalidate(&key("a"));
        assert!(cache.get(&key("a")).is_none());
    }

    #[test]
    fn counters_and_a_disabled_cache() {
        let cache = NearCache::new(NearCacheConfig::default());
        cache.count(ReadOutcome::Miss);
        cache.count(ReadOutcome::NotModified);
        cache.count(ReadOutcome::NotModified);
        cache.count(ReadOutcome::Refreshed);
        let s = cache.stats();
        assert_eq!(
            (s.misses, s.hits, s.not_modified, s.refreshed),
            (1, 2, 2, 1)
        );
        let off = NearCache::new(NearCacheConfig::Off);
        off.put(key("a"), 1, vec![1]);
        off.count(ReadOutcome::Miss);
        assert!(!off.enabled() && off.get(&key("a")).is_none());
        assert_eq!(off.stats(), CacheStats::default());
    }
}
