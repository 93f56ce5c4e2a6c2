//! `Op::Write`: the whole value or some items, tags, expiry and lock in one step.

use std::borrow::Cow;

use grid_proto::{items, Millis, ObjKey, Reply, Timeout, WriteBody};

use super::{Store, StoreEvent};

/// The fields of an `Op::Write`, borrowed.
pub(super) struct Write<'a> {
    pub(super) obj: &'a ObjKey,
    pub(super) body: &'a WriteBody,
    pub(super) tags: Option<&'a Vec<String>>,
    pub(super) timeout: Option<Timeout>,
    pub(super) lock_id: Option<u64>,
    pub(super) unlock: bool,
    pub(super) create: bool,
    pub(super) max_bytes: usize,
}

/// The value `body` makes of `current` (`None`: leave it), borrowed from the operation
/// for a whole value; a merge may not grow past `limit`.
fn new_value<'a>(
    current: &[u8],
    body: &'a WriteBody,
    limit: usize,
) -> Result<Option<Cow<'a, [u8]>>, Reply> {
    match body {
        WriteBody::Keep => Ok(None),
        WriteBody::Whole(value) => Ok(Some(Cow::Borrowed(value))),
        WriteBody::Items(changes) => {
            let merged = items::apply(current, changes).map_err(|e| Reply::BadRequest {
                reason: e.to_string(),
            })?;
            if merged.len() > limit {
                return Err(Reply::TooLarge {
                    size: merged.len() as u64,
                    limit: limit as u64,
                });
            }
            Ok(Some(Cow::Owned(merged)))
        }
    }
}

impl Store {
    pub(super) fn write(
        &mut self,
        w: Write<'_>,
        now: Millis,
        events: &mut Vec<StoreEvent>,
    ) -> Reply {
        let Some(entry) = self.objects.get(w.obj) else {
            if w.lock_id.is_some() {
                return Reply::LockLost;
            }
            if !w.create {
                return Reply::NotFound;
            }
            let value = match new_value(&[], w.body, w.max_bytes) {
                Ok(value) => value.unwrap_or(Cow::Borrowed(&[])),
                Err(reply) => return reply,
            };
            let timeout = w.timeout.unwrap_or_default();
            let version = self.insert_new(w.obj, &value, timeout, false, now);
            if let Some(tags) = w.tags {
                self.tags.set(w.obj, tags.clone());
            }
            return Reply::Added { version };
        };
        if let Err(reply) = entry.check_lock(w.lock_id, now) {
            return reply;
        }
        let value = match new_value(&entry.value, w.body, w.max_bytes) {
            Ok(value) => value.unwrap_or_else(|| Cow::Owned(entry.value.clone())),
            Err(reply) => return reply,
        };
        let was_locked = entry.lock.is_some();
        let version = self.replace_value(w.obj, value, w.timeout, now);
        if let Some(tags) = w.tags {
            self.tags.set(w.obj, tags.clone());
        }
        if w.unlock && was_locked {
            self.set_lock(w.obj, None);
            events.push(StoreEvent::LockFreed { obj: w.obj.clone() });
        }
        Reply::Updated { version }
    }
}
