//! Exports under way for backups: the copy of a partition a leader took, kept while a
//! backup fetches it page by page, so each partition in a backup is one consistent point
//! although it spans many replies. Bounded in number; an export not asked for a page
//! within [`IDLE`] is dropped (at the next start or page, never by a task of its own).
//!
//! ```text
//! Export{export: 0}  ─▶ leader copies the partition ─▶ id; page from `from`
//! Export{export: id} ─▶ page from `from` of that copy (same node), or "unknown export"
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_proto::backup::BackupObject;
use grid_proto::sync::lock;
use grid_proto::{Reply, Unavailability};

/// Exports a node keeps at once.
pub const MAX_EXPORTS: usize = 16;
/// How long an export is kept without a page asked.
pub const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Export {
    partition: u32,
    objects: Arc<Vec<BackupObject>>,
    used: Instant,
}

/// The exports of one node.
#[derive(Debug, Default)]
pub struct Exports {
    held: Mutex<HashMap<u64, Export>>,
    next: AtomicU64,
}

/// Objects from `from` on, as many as fit in `budget` bytes (at least one, so any object
/// the node accepted can be exported).
pub fn page(objects: &[BackupObject], from: usize, budget: usize) -> Vec<BackupObject> {
    let mut used = 0;
    objects
        .iter()
        .skip(from)
        .take_while(|o| {
            let first = used == 0;
            used += o.size();
            first || used <= budget
        })
        .cloned()
        .collect()
}

impl Exports {
    /// Keeps `objects`, the copy of `partition`, as a new export; its id, or why not.
    pub fn start(
        &self,
        partition: u32,
        objects: Vec<BackupObject>,
        now: Instant,
    ) -> Result<u64, Reply> {
        let mut held = lock(&self.held);
        held.retain(|_, e| now.saturating_duration_since(e.used) < IDLE);
        if held.len() >= MAX_EXPORTS {
            return Err(Reply::Unavailable {
                code: Unavailability::Internal,
                reason: format!(
                    "{MAX_EXPORTS} exports are under way on this node; retry once one ends (an idle one ends after {IDLE:?})"
                ),
            });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let objects = Arc::new(objects);
        held.insert(
            id,
            Export {
                partition,
                objects,
                used: now,
            },
        );
        Ok(id)
    }

    /// The page of export `id` from object `from`; the export is dropped once its last
    /// page has been asked for.
    pub fn page(&self, id: u64, partition: u32, from: u64, budget: usize, now: Instant) -> Reply {
        let mut held = lock(&self.held);
        held.retain(|_, e| now.saturating_duration_since(e.used) < IDLE);
        let Some(export) = held.get_mut(&id).filter(|e| e.partition == partition) else {
            return Reply::BadRequest {
                reason: format!(
                    "unknown export {id} of partition {partition} on this node (it ended, idle past {IDLE:?}, or the node restarted): start the partition again"
                ),
            };
        };
        export.used = now;
        let objects = Arc::clone(&export.objects);
        let total = objects.len() as u64;
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        let page = page(&objects, from, budget);
        if from.saturating_add(page.len()) >= objects.len() {
            held.remove(&id);
        }
        Reply::Exported {
            export: id,
            total,
            objects: page,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grid_proto::{ObjKey, Timeout};

    fn objects(n: usize, bytes: usize) -> Vec<BackupObject> {
        (0..n)
            .map(|i| BackupObject {
                obj: ObjKey::new("s", format!("k{i:04}")),
                value: vec![7; bytes],
                timeout: Timeout::None,
                left_ms: None,
                tags: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn pages_fill_the_budget_and_always_carry_one_object() {
        let all = objects(10, 100);
        let size = all[0].size();
        assert_eq!(page(&all, 0, size * 3).len(), 3);
        assert_eq!(page(&all, 8, size * 3).len(), 2, "the tail");
        assert_eq!(page(&all, 10, size * 3).len(), 0, "past the end");
        assert_eq!(page(&all, 0, 1).len(), 1, "one object over the budget");
    }

    #[test]
    fn an_export_is_paged_to_its_end_then_gone() {
        let exports = Exports::default();
        let now = Instant::now();
        let id = exports.start(3, objects(5, 10), now).unwrap();
        let size = objects(1, 10)[0].size();
        let mut got = Vec::new();
        while got.len() < 5 {
            match exports.page(id, 3, got.len() as u64, size * 2, now) {
                Reply::Exported { total, objects, .. } => {
                    assert_eq!(total, 5);
                    got.extend(objects);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, objects(5, 10));
        let gone = exports.page(id, 3, 0, size, now);
        assert!(matches!(gone, Reply::BadRequest { .. }), "{gone:?}");
    }

    #[test]
    fn exports_are_bounded_named_by_partition_and_dropped_when_idle() {
        let exports = Exports::default();
        let now = Instant::now();
        let ids: Vec<u64> = (0..MAX_EXPORTS)
            .map(|p| exports.start(p as u32, objects(2, 1), now).unwrap())
            .collect();
        assert!(matches!(
            exports.start(99, objects(1, 1), now),
            Err(Reply::Unavailable { .. })
        ));
        assert!(
            matches!(
                exports.page(ids[0], 1, 0, 100, now),
                Reply::BadRequest { .. }
            ),
            "another partition's id"
        );
        let later = now + IDLE;
        assert!(
            exports.start(99, objects(1, 1), later).is_ok(),
            "idle ones dropped"
        );
        assert!(matches!(
            exports.page(ids[1], 1, 0, 100, later),
            Reply::BadRequest { .. }
        ));
    }
}
