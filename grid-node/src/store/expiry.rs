//! An ordered index of deadlines, so the due entries come out in time order without
//! scanning every object.

use std::collections::BTreeSet;

use grid_proto::{Millis, ObjKey};

/// Deadlines keyed by object. Each object has at most one deadline in an index; callers
/// remove the old one before inserting a new one (the store keeps the current deadline on
/// the object for that).
#[derive(Debug, Default, Clone)]
pub struct DeadlineIndex {
    due: BTreeSet<(Millis, ObjKey)>,
}

impl DeadlineIndex {
    /// Records that `obj` is due at `at`.
    pub fn insert(&mut self, at: Millis, obj: ObjKey) {
        self.due.insert((at, obj));
    }

    /// Forgets the deadline `at` of `obj`.
    pub fn remove(&mut self, at: Millis, obj: &ObjKey) {
        // The tuple is rebuilt to look it up; keys are small.
        self.due.remove(&(at, obj.clone()));
    }

    /// Takes out the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, ObjKey)> {
        if self.due.first().is_some_and(|(at, _)| *at <= now) {
            self.due.pop_first()
        } else {
            None
        }
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Number of deadlines held.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True when no deadline is held.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut idx = DeadlineIndex::default();
        idx.insert(30, ObjKey::new("ns", "c"));
        idx.insert(10, ObjKey::new("ns", "a"));
        idx.insert(20, ObjKey::new("ns", "b"));
        idx.remove(20, &ObjKey::new("ns", "b"));
        assert_eq!(idx.next_deadline(), Some(10));
        assert_eq!(idx.pop_due(9), None);
        assert_eq!(idx.pop_due(30).map(|(_, k)| k.key), Some(b"a".to_vec()));
        assert_eq!(idx.pop_due(30).map(|(_, k)| k.key), Some(b"c".to_vec()));
        assert!(idx.is_empty());
    }
}
