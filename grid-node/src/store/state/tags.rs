//! Object tags and their per-partition index: which keys of a namespace carry a tag
//! (`find_by_tag`, `remove_by_tag`). Part of the replicated state: set by `Op::Write`,
//! dropped with the object, shipped in snapshots; the index is rebuilt on restore.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use grid_proto::{Millis, ObjKey, Reply};

use super::{GeoRole, Store, StoreEvent};

/// Bytes a key takes in a page beyond its own (as `Reply::carried_bytes` counts it).
const KEY_OVERHEAD: usize = 8;

/// Tags by object, and objects by tag.
#[derive(Debug, Default, Clone)]
pub(super) struct TagIndex {
    by_obj: HashMap<ObjKey, Vec<String>>,
    /// `(namespace, tag)` → keys.
    by_tag: HashMap<(String, String), BTreeSet<Vec<u8>>>,
}

impl TagIndex {
    /// Gives `obj` exactly `tags` (sorted, without repeats; none removes them).
    pub(super) fn set(&mut self, obj: &ObjKey, mut tags: Vec<String>) {
        tags.sort();
        tags.dedup();
        if self.of(obj) == tags.as_slice() {
            return;
        }
        self.forget(obj);
        if tags.is_empty() {
            return;
        }
        for tag in &tags {
            self.by_tag
                .entry((obj.namespace.clone(), tag.clone()))
                .or_default()
                .insert(obj.key.clone());
        }
        self.by_obj.insert(obj.clone(), tags);
    }

    /// Drops `obj`'s tags.
    pub(super) fn forget(&mut self, obj: &ObjKey) {
        let Some(tags) = self.by_obj.remove(obj) else {
            return;
        };
        for tag in tags {
            let slot = (obj.namespace.clone(), tag);
            if let Some(keys) = self.by_tag.get_mut(&slot) {
                keys.remove(&obj.key);
                if keys.is_empty() {
                    self.by_tag.remove(&slot);
                }
            }
        }
    }

    /// `obj`'s tags, sorted.
    pub(super) fn of(&self, obj: &ObjKey) -> &[String] {
        self.by_obj.get(obj).map_or(&[], Vec::as_slice)
    }

    /// Every tagged object with its tags, sorted by object (for snapshots).
    pub(super) fn all(&self) -> Vec<(&ObjKey, &Vec<String>)> {
        let mut all: Vec<_> = self.by_obj.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    fn keys(&self, namespace: &str, tag: &str) -> Option<&BTreeSet<Vec<u8>>> {
        self.by_tag.get(&(namespace.to_string(), tag.to_string()))
    }
}

impl Store {
    /// The keys in `namespace` carrying `tag` that have not expired by `now`, in order,
    /// from just after `after`: as many as fit `budget` bytes (at least one), and whether
    /// more follow. Proxies of objects whose primary moved to another site are left out:
    /// that site answers for them.
    pub fn tagged(
        &self,
        namespace: &str,
        tag: &str,
        now: Millis,
        after: Option<&[u8]>,
        budget: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let Some(keys) = self.tags.keys(namespace, tag) else {
            return (Vec::new(), false);
        };
        let from = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Unbounded,
        };
        let live = keys.range((from, Bound::Unbounded)).filter(|key| {
            let obj = ObjKey::new(namespace, key.to_vec());
            self.objects.get(&obj).is_some_and(|e| {
                e.expires_at.is_none_or(|at| at > now) && !matches!(e.role, GeoRole::Proxy { .. })
            })
        });
        let (mut page, mut used) = (Vec::new(), 0);
        for key in live {
            // A key's room in the reply: its bytes and its length prefix, about.
            let room = key.len() + KEY_OVERHEAD;
            if !page.is_empty() && used + room > budget {
                return (page, true);
            }
            used += room;
            page.push(key.clone());
        }
        (page, false)
    }

    /// The tags of `obj`, sorted.
    pub fn tags_of(&self, obj: &ObjKey) -> &[String] {
        self.tags.of(obj)
    }

    pub(super) fn remove_tagged(
        &mut self,
        obj: &ObjKey,
        tag: &str,
        events: &mut Vec<StoreEvent>,
    ) -> Reply {
        if !self.tags.of(obj).iter().any(|t| t == tag) {
            return Reply::NotFound;
        }
        self.end(obj, events, |obj, value, version| StoreEvent::Revoked {
            obj,
            value,
            version,
        });
        Reply::Removed
    }
}
